"""The incident-timeline export: what an inspector reads in the CSV, the HTML and the PDF."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import logging
import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboards.export import (
    CSV_COLUMNS,
    MAX_PLOTS,
    ExportError,
    render_csv,
    render_html,
    render_pdf,
)

T0 = datetime(2026, 12, 7, tzinfo=UTC)
BUCKET_S = 300
BUCKETS = 24  # two hours of five-minute buckets
SIDEWALL = ("F1-sw-01", "F1-sw-02")


def _iso(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def _series(sensor: str, key: int, kind: str, unit: str, means: list[float]) -> dict[str, Any]:
    start_ms = int(T0.timestamp() * 1000)
    return {
        "sensor": sensor,
        "key": key,
        "kind": kind,
        "unit": unit,
        "asset": "F1",
        "t": [start_ms + i * BUCKET_S * 1000 for i in range(len(means))],
        "min": [m - 1.5 for m in means],
        "max": [m + 1.5 for m in means],
        "mean": means,
        "n": [30] * len(means),
    }


def _hash(seq: int) -> str:
    return hashlib.sha256(f"entry {seq}".encode()).hexdigest()


def timeline() -> dict[str, Any]:
    """A furnace under hot work: a sidewall thermocouple crosses 300 degC with a permit open."""
    rising = [280.0 + 2.5 * i for i in range(BUCKETS)]  # 280 .. 337.5: crosses 300 at bucket 8
    steady = [250.0 + (i % 3) for i in range(BUCKETS)]
    shell = [120.0 + i for i in range(BUCKETS)]
    transitions = [
        {
            "seq": 41,
            "at": _iso(40),
            "action": "activate",
            "from_state": "normal",
            "to_state": "unack",
            "actor": "engine",
            "reason": "",
            "value": 301.2,
            "limit": 300.0,
            "severity": "warning",
            "priority": "high",
        },
        {
            "seq": 42,
            "at": _iso(45),
            "action": "acknowledge",
            "from_state": "unack",
            "to_state": "ack",
            "actor": "budi",
            "reason": "crew told to stop cutting",
            "value": None,
            "limit": None,
            "severity": "warning",
            "priority": "high",
        },
        {
            "seq": 45,
            "at": _iso(100),
            "action": "clear",
            "from_state": "ack",
            "to_state": "normal",
            "actor": "engine",
            "reason": "",
            "value": 298.0,
            "limit": 300.0,
            "severity": None,
            "priority": "high",
        },
    ]
    journal = [
        {
            "seq": tr["seq"],
            "at": tr["at"],
            "actor": tr["actor"],
            "action": tr["action"],
            "rule_id": "hotwork.tc",
            "subject": "F1-sw-01",
            "from_state": tr["from_state"],
            "to_state": tr["to_state"],
            "hash": _hash(int(tr["seq"])),
        }
        for tr in transitions
    ]
    return {
        "site": "s1",
        "asset": None,
        "from": T0.isoformat(),
        "to": (T0 + timedelta(hours=2)).isoformat(),
        "bucket_s": BUCKET_S,
        "source": "readings_1m",
        "generated_at": "2026-12-08T03:00:00+00:00",
        "generated_by": "inspector.sari",
        "facility": {
            "site_id": "s1",
            "name": "Smelter Morowali Line 1",
            "company": "PT Contoh Nikel & Baja",
            "iui_number": "IUI-0042/2024",
            "oss_nib": "9120000000001",
            "kbli": "24102",
            "estate": "IMIP",
            "address": "Bahodopi, Morowali",
            "smk3_level": "advanced",
            "smk3_certificate": "SMK3-2025-117",
            "smk3_audit_on": "2025-03-01",
            "smk3_expires_on": "2028-03-01",
        },
        "licences": [
            {
                "id": 1,
                "kind": "IUI",
                "number": "IUI-0042/2024",
                "issuer": "Kemenperin",
                "issued_on": "2024-01-10",
                "expires_on": None,
            }
        ],
        "findings": [
            {
                "id": 7,
                "asset": "F1",
                "description": "Sidewall thermocouple F1-sw-03 out of calibration",
                "corrective_action": "Replace and recalibrate",
                "opened_at": "2026-11-01T00:00:00+00:00",
                "due_at": "2026-12-01T00:00:00+00:00",
                "closed_at": None,
            }
        ],
        "status": {
            "status": "attention",
            "reasons": [
                {
                    "code": "finding_overdue",
                    "severity": "warning",
                    "asset": "F1",
                    "message": "Inspection finding 7 is past its due date",
                    "since": "2026-12-01T00:00:00+00:00",
                }
            ],
        },
        "series": [
            _series(SIDEWALL[0], 3, "sidewall_tc", "degC", rising),
            _series(SIDEWALL[1], 4, "sidewall_tc", "degC", steady),
            _series("F1-shell-01", 9, "shell_temp", "degC", shell),
        ],
        "limits": [
            {
                "rule_id": "hotwork.tc",
                "title": "Hot work near a hot furnace",
                "rule_kind": "threshold",
                "direction": "high",
                "sensors": list(SIDEWALL),
                "levels": [
                    {
                        "severity": "warning",
                        "level": 300.0,
                        "priority": "high",
                        "source": "[A] DOMAIN 3: hot-work interlock, permit open and TC > 300",
                    },
                    {
                        "severity": "critical",
                        "level": 800.0,
                        "priority": "critical",
                        "source": "[A] DOMAIN 3: hot-work interlock, TC > 800",
                    },
                ],
            }
        ],
        "alerts": [
            {
                "id": 1,
                "rule_id": "hotwork.tc",
                "subject": "F1-sw-01",
                "asset": "F1",
                "title": "Sidewall hot during hot work",
                "priority": "high",
                "state_at_start": "normal",
                "transitions": transitions,
            }
        ],
        "actions": [
            {
                "seq": 42,
                "at": _iso(45),
                "alert_id": 1,
                "rule_id": "hotwork.tc",
                "subject": "F1-sw-01",
                "actor": "budi",
                "action": "acknowledge",
                "reason": "crew told to stop cutting",
            },
            {
                "seq": 43,
                "at": _iso(50),
                "alert_id": 1,
                "rule_id": "hotwork.tc",
                "subject": "F1-sw-01",
                "actor": "mallory",
                "action": "comment",
                "reason": '=HYPERLINK("http://evil.example","click")',
            },
        ],
        "permits": [
            {
                "id": 12,
                "kind": "hot_work",
                "asset": "F1",
                "areas": ["F1-tap-floor"],
                "opened_at": _iso(30),
                "closed_at": _iso(110),
                "issued_by": "supervisor.andi",
                "description": "Cut and replace shell plate 4",
            }
        ],
        "annotations": [
            {
                "id": 5,
                "asset": "F1",
                # WITA (UTC+8): 00:45 UTC
                "at": "2026-12-07T08:45:00+08:00",
                "until": None,
                "author": "budi",
                "text": "<script>alert('x')</script> cutting paused",
            }
        ],
        "incidents": [],
        "journal": {
            "entries": journal,
            "verification": {
                "alert_journal": {"ok": True, "entries": 120, "problems": []},
                "record_history": {"ok": True, "entries": 8, "problems": []},
            },
        },
    }


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _pdf_pages(pdf: bytes) -> int:
    """Page objects in a PDF, looking inside its compressed object streams too."""
    chunks = [pdf]
    for m in re.finditer(rb"stream\r?\n", pdf):
        end = pdf.find(b"endstream", m.end())
        try:
            chunks.append(zlib.decompressobj().decompress(pdf[m.end() : end]))
        except zlib.error:
            continue  # not a Flate stream (an image or a font)
    return sum(len(re.findall(rb"/Type\s*/Page(?![s\w])", c)) for c in chunks)


# --- CSV -----------------------------------------------------------------------------------


def test_csv_has_the_columns_and_one_row_per_reading_bucket() -> None:
    """The CSV parses back with the named columns and a reading row per series bucket."""
    rows = _rows(render_csv(timeline()))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    readings = [r for r in rows if r["record"] == "reading"]
    assert len(readings) == 3 * BUCKETS
    first = readings[0]
    assert (first["subject"], first["asset"], first["time"]) == (
        "F1-sw-01",
        "F1",
        "2026-12-07T00:00:00+00:00",
    )
    assert (first["min"], first["max"], first["mean"], first["samples"]) == (
        "278.5",
        "281.5",
        "280",
        "30",
    )


def test_csv_has_one_row_per_event_in_time_order() -> None:
    """Transitions, the one action not among them, the annotation and permit open/close follow."""
    rows = [r for r in _rows(render_csv(timeline())) if r["record"] != "reading"]
    assert [(r["record"], r["action"]) for r in rows] == [
        ("permit", "open"),
        ("transition", "activate"),
        ("transition", "acknowledge"),
        ("annotation", "annotate"),
        ("action", "comment"),
        ("transition", "clear"),
        ("permit", "close"),
    ]
    times = [datetime.fromisoformat(r["time"]) for r in rows]
    assert times == sorted(times)
    assert all(t.utcoffset() == timedelta(0) for t in times)
    activate = rows[1]
    assert (activate["from_state"], activate["to_state"], activate["priority"]) == (
        "normal",
        "unack",
        "high",
    )
    assert "value=301.2" in activate["text"]
    assert "limit=300" in activate["text"]


def test_csv_restates_times_in_utc() -> None:
    """An annotation stamped in local time (UTC+8) appears at its UTC time."""
    (note,) = [r for r in _rows(render_csv(timeline())) if r["record"] == "annotation"]
    assert note["time"] == "2026-12-07T00:45:00+00:00"


def test_csv_neutralises_a_formula_looking_comment() -> None:
    """The operator comment that starts with = gets a leading apostrophe."""
    (comment,) = [r for r in _rows(render_csv(timeline())) if r["action"] == "comment"]
    assert comment["text"] == "'" + '=HYPERLINK("http://evil.example","click")'


@pytest.mark.parametrize("text", ["=1+2", "+1", "-1", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_csv_prefixes_an_apostrophe_to_formula_text(text: str) -> None:
    """Annotation text a spreadsheet would evaluate starts with an apostrophe instead."""
    doc = timeline()
    doc["annotations"][0]["text"] = text
    (note,) = [r for r in _rows(render_csv(doc)) if r["record"] == "annotation"]
    assert note["text"] == "'" + text


def test_csv_keeps_negative_readings_numeric() -> None:
    """A negative reading is a number, not text, and is written without an apostrophe."""
    doc = timeline()
    doc["series"][0]["min"][0] = -12.5
    first = next(r for r in _rows(render_csv(doc)) if r["record"] == "reading")
    assert first["min"] == "-12.5"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_csv_text_cells_never_start_a_formula(text: str) -> None:
    """Whatever an author types, no parsed-back cell starts with a formula character."""
    doc = timeline()
    doc["series"] = []
    doc["annotations"][0]["text"] = text
    doc["annotations"][0]["author"] = text
    for row in _rows(render_csv(doc)):
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_csv_reads_series_given_as_preserialised_json() -> None:
    """Series handed over as orjson fragments (as the API builds them) render like dicts."""
    doc = timeline()
    plain = render_csv(doc)
    doc["series"] = [orjson.Fragment(orjson.dumps(s)) for s in doc["series"]]
    assert render_csv(doc) == plain


def test_csv_refuses_a_document_that_is_not_json() -> None:
    """A value JSON cannot carry is an ExportError, not a crash deep in the rendering."""
    doc = timeline()
    doc["bucket_s"] = {1, 2}
    with pytest.raises(ExportError, match="not JSON-able"):
        render_csv(doc)


def test_csv_refuses_a_series_with_ragged_columns() -> None:
    """A series whose columns differ in length is an error naming the sensor."""
    doc = timeline()
    doc["series"][0]["mean"].pop()
    with pytest.raises(ExportError, match="F1-sw-01"):
        render_csv(doc)


# --- HTML ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page() -> str:
    """The HTML report of the standard timeline (rendered once: plotting takes a while)."""
    return render_html(timeline())


def test_html_names_the_facility_and_its_record(page: str) -> None:
    """The header carries the facility's name and identity numbers, escaped."""
    assert "Smelter Morowali Line 1" in page
    assert "PT Contoh Nikel &amp; Baja" in page
    assert "IUI-0042/2024" in page
    assert "9120000000001" in page
    assert "SMK3-2025-117" in page


def test_html_says_the_compliance_status_and_its_reasons(page: str) -> None:
    """The status is given in words with the reason and the overdue finding."""
    assert "Attention needed" in page
    assert "Inspection finding 7 is past its due date" in page
    assert "open, overdue" in page


def test_html_shows_the_limit_with_its_source(page: str) -> None:
    """The limits in force carry their level, unit and source tag."""
    assert "[A] DOMAIN 3: hot-work interlock, permit open and TC &gt; 300" in page
    assert "300 degC" in page


def test_html_has_one_svg_plot_per_asset_and_kind(page: str) -> None:
    """Two groups (sidewall thermocouples, shell temperature) give two inline SVG plots."""
    assert page.count("<svg ") == 2
    assert "F1: sidewall_tc (degC)" in page
    assert "F1: shell_temp (degC)" in page


def test_html_plot_labels_limits_alert_spans_and_annotations(page: str) -> None:
    """Limit lines, the alert span and the annotation marker are labelled in words."""
    assert "warning 300 degC (hotwork.tc)" in page
    assert "critical 800 degC (hotwork.tc)" in page
    assert "alert 1 active (high)" in page
    assert "note 5" in page


def test_html_plot_ids_are_unique_in_the_page(page: str) -> None:
    """Inlined plots do not repeat each other's element ids."""
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_html_escapes_text_from_the_document(page: str) -> None:
    """A script in an annotation is shown as text, never run."""
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; cutting paused" in page


def test_html_lists_transitions_and_operator_comments(page: str) -> None:
    """The alert's table holds its transitions and the operator's comment, each once."""
    assert "crew told to stop cutting" in page
    assert page.count("crew told to stop cutting") == 1
    assert "=HYPERLINK(" in page
    assert "normal \u2192 unack" in page


def test_html_shows_the_journal_extract_with_hash_prefixes(page: str) -> None:
    """Each journal entry appears with the first 12 hex digits of its hash."""
    for seq in (41, 42, 45):
        assert _hash(seq)[:12] in page
        assert _hash(seq) not in page


def test_html_says_in_words_that_both_chains_verify(page: str) -> None:
    """An intact journal and record history are reported OK, in words."""
    assert "Integrity check OK" in page
    assert "OK</span>: 120 entries, hash chain intact." in page
    assert "OK</span>: 8 entries, hash chain intact." in page
    assert "FAILED" not in page


def test_html_lists_the_problems_of_a_broken_chain() -> None:
    """A journal whose verification found problems says FAILED and lists each problem."""
    doc = timeline()
    doc["series"] = []
    doc["journal"]["verification"]["alert_journal"] = {
        "ok": False,
        "entries": 120,
        "problems": ["seq 44: hash mismatch", "seq 46 missing"],
    }
    page = render_html(doc)
    assert "Integrity check FAILED</span> for Alert journal" in page
    assert "FAILED</span>: 120 entries, 2 problem(s)." in page
    assert "<li>seq 44: hash mismatch</li>" in page
    assert "<li>seq 46 missing</li>" in page
    assert "OK</span>: 8 entries, hash chain intact." in page


def test_html_reports_a_missing_verification_as_not_verified() -> None:
    """No verification result is not taken as a pass."""
    doc = timeline()
    doc["series"] = []
    doc["journal"]["verification"] = {}
    page = render_html(doc)
    assert "Integrity NOT VERIFIED</span> for Alert journal, Record history" in page
    assert "Integrity check OK" not in page
    assert page.count("not verified</span>: no result given.") == 4


def test_html_says_when_there_is_no_facility_record() -> None:
    """A site without a facility record says so instead of leaving the header blank."""
    doc = timeline()
    doc["series"] = []
    doc["facility"] = None
    assert "No facility record on file for site s1." in render_html(doc)


def test_html_caps_the_plots_and_says_which_were_left_out() -> None:
    """More groups than the cap: the cap is drawn and the page names what was left out."""
    doc = timeline()
    extra = MAX_PLOTS + 3
    doc["series"] = [
        _series(f"G{i:02d}-s", i, "co_ppm", "ppm", [float(i)] * 4) | {"asset": f"G{i:02d}"}
        for i in range(extra)
    ]
    page = render_html(doc)
    assert page.count("<svg ") == MAX_PLOTS
    assert f"{MAX_PLOTS} of {extra} plots shown." in page
    assert "G42: co_ppm (ppm)" in page.split("plots shown.")[1].split("</p>")[0]


@pytest.mark.parametrize(
    ("state_at_start", "keep_transitions", "shaded"),
    [
        ("normal", True, True),  # activate .. clear inside the window
        ("ack", False, True),  # active all through the window
        ("normal", False, False),  # nothing happened
        ("latched", False, False),  # the condition had cleared; only the latch holds
    ],
)
def test_html_shades_the_alert_while_its_condition_is_active(
    state_at_start: str, keep_transitions: bool, shaded: bool
) -> None:
    """An alert span is drawn from activation to clear, or from the window start if active."""
    doc = timeline()
    doc["series"] = doc["series"][:1]
    alert = doc["alerts"][0]
    alert["state_at_start"] = state_at_start
    if not keep_transitions:
        alert["transitions"] = []
    assert ("alert 1 active (high)" in render_html(doc)) is shaded


def test_html_plots_sensor_names_with_dollar_signs_literally() -> None:
    """A sensor id with dollar signs is drawn as text, not parsed as mathtext."""
    doc = timeline()
    doc["series"] = doc["series"][:1]
    doc["series"][0]["sensor"] = "F1-$sw$-01"
    svg = re.search(r"<svg .*?</svg>", render_html(doc), re.DOTALL)
    assert svg is not None
    assert ">F1-$sw$-01</text>" in svg.group(0)


def test_html_is_the_same_for_the_same_document(page: str) -> None:
    """Rendering the same document again gives the same page, byte for byte."""
    assert render_html(copy.deepcopy(timeline())) == page


# --- PDF -----------------------------------------------------------------------------------


# WeasyPrint warns at import when the system lacks HarfBuzz-Subset (an OS package, not ours).
@pytest.mark.filterwarnings("ignore:HarfBuzz-Subset:DeprecationWarning")
def test_pdf_is_a_pdf_with_pages(caplog: pytest.LogCaptureFixture) -> None:
    """The PDF starts with its magic number, holds pages and logs no SVG style warnings."""
    with caplog.at_level(logging.WARNING, logger="weasyprint"):
        pdf = render_pdf(timeline())
    assert pdf.startswith(b"%PDF-")
    assert _pdf_pages(pdf) >= 1
    assert not [r for r in caplog.records if "unknown property" in r.getMessage()]
