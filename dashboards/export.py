"""The printable incident timeline: CSV, HTML and PDF renderings of a timeline document.

Owns how a timeline document, built by the API for one site and window, is laid out for an
inspector to take away: a long-format CSV (`render_csv`), a self-contained A4 HTML report with
its plots (`render_html`) and the PDF printed from that HTML (`render_pdf`).

Pure rendering: no I/O, no database, no clock. The document carries everything, including
when and by whom it was generated, so the same document always renders to the same text. This
module must not fetch, filter by permission or judge compliance: the document arrives
complete and already authorised, and the report shows what it says.

The document (a JSON-able dict; lists may be empty; times are ISO 8601 strings, except series
times, which are epoch milliseconds)::

    site, asset (None = all), from, to, bucket_s, source, generated_at, generated_by,
    facility {site_id, name, company, iui_number, oss_nib, kbli, estate, address, smk3_level,
              smk3_certificate, smk3_audit_on, smk3_expires_on} or None,
    licences [{id, kind, number, issuer, issued_on, expires_on}],
    findings [{id, asset, description, corrective_action, opened_at, due_at, closed_at}],
    status {status: compliant | attention | non_compliant,
            reasons [{code, severity, asset, message, since}]},
    series [{sensor, key, kind, unit, asset, t [ms], min, max, mean, n}],
    limits [{rule_id, title, rule_kind, direction, sensors,
             levels [{severity, level, priority, source}]}],
    alerts [{id, rule_id, subject, asset, title, priority, state_at_start,
             transitions [{seq, at, action, from_state, to_state, actor, reason, value, limit,
                           severity, priority}]}],
    actions [{seq, at, alert_id, rule_id, subject, actor, action, reason}],
    permits [{id, kind, asset, areas, opened_at, closed_at, issued_by, description}],
    annotations [{id, asset, at, until, author, text}],
    incidents [{id, asset, occurred_at, kind, fatalities, injuries, investigation_status}],
    journal {entries [{seq, at, actor, action, rule_id, subject, from_state, to_state, hash}],
             verification {alert_journal {ok, entries, problems},
                           record_history {ok, entries, problems}}}

Decisions
    - Operator actions are journal entries; an alert's transitions may include them. Each
      journal `seq` is rendered once: an action whose seq is already among its alert's
      transitions is not repeated (CSV rows, HTML alert tables).
    - An alert is drawn as active from an `activate` that finds its condition clear to the next
      `clear` (or the window's end); it starts active when `state_at_start` is unack or ack.
    - Plots use matplotlib's object-oriented API (no pyplot, no GUI backend). Matplotlib is not
      thread-safe and its SVG settings (text kept as text, a fixed id salt so output is
      deterministic) are global rcParams, so plots are drawn one at a time under a lock with
      those settings applied only for the duration.
    - `render_html` inlines each plot as <svg> (searchable, one file); `render_pdf` prints the
      same page with each plot as an SVG data-URI image instead (see `render_pdf` for why).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import matplotlib as mpl
import matplotlib.dates as mdates
import numpy as np
import orjson
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.typing import RcKeyType

#: The CSV's columns, in order.
CSV_COLUMNS: Final = (
    "record",
    "time",
    "asset",
    "subject",
    "min",
    "max",
    "mean",
    "samples",
    "action",
    "from_state",
    "to_state",
    "priority",
    "actor",
    "text",
)

#: At most this many plots, one per (asset, sensor kind); the page says which were left out.
MAX_PLOTS: Final = 40

#: Hex digits of each journal entry's hash shown in the extract.
HASH_PREFIX_CHARS: Final = 12

# A spreadsheet evaluates a cell that starts with one of these as a formula (OWASP CSV
# injection); tab and carriage return are on OWASP's list too.
_FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Annunciated states whose condition is active (lifecycle: unack, ack).
_ACTIVE_STATES: Final = frozenset({"unack", "ack"})

_STATUS_WORDS: Final = {
    "compliant": "Compliant",
    "attention": "Attention needed",
    "non_compliant": "Non-compliant",
}

_CHAIN_NAMES: Final = {"alert_journal": "Alert journal", "record_history": "Record history"}

# Matplotlib settings the plots depend on; everything else is set on the figure itself.
_MPL_RC: Final[dict[RcKeyType, Any]] = {
    "svg.fonttype": "none",  # text stays text: searchable and copyable in HTML and PDF
    "svg.hashsalt": "tungku",  # clip-path and marker ids are hashes: fixed salt, same ids
    "font.family": ["DejaVu Sans"],
    "font.size": 7.0,
    "axes.titlesize": 8.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "date.converter": "concise",  # time axis labels: concise dates, in UTC
    "timezone": "UTC",
}
_MPL_LOCK: Final = threading.Lock()

# Marker shapes tell sensors apart where the print has no colour.
_MARKERS: Final = ("o", "s", "^", "v", "D", "x", "+", "*", "<", ">", "P", "h")
_MARKS_PER_LINE: Final = 12
_WARNING_COLOUR: Final = "#b35900"
_CRITICAL_COLOUR: Final = "#b30000"
# Labels stay readable where they cross a line or a hatched span.
_LABEL_BOX: Final[dict[str, Any]] = {
    "facecolor": "white",
    "alpha": 0.75,
    "pad": 1.0,
    "linewidth": 0,
}

_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_ID_USE = re.compile(r'(\bid="|#)([A-Za-z_][\w.:-]*)')


class ExportError(ValueError):
    """Raised when a timeline document cannot be rendered: not JSON-able, or ragged series."""


# --- CSV -----------------------------------------------------------------------------------


def render_csv(doc: Mapping[str, Any]) -> str:
    """The timeline as long-format CSV (RFC 4180, CRLF line ends), header row first.

    One `reading` row per series bucket (in series order, then time; `text` holds the unit),
    then the events in time order: `transition` (an alert's journal transition), `action` (an
    operator action not already among the transitions), `annotation`, and `permit` (one row
    when it opens, one when it closes). A transition's text is its rule, severity, value, limit
    and reason; an action's and an annotation's, what its author wrote (and the annotation's
    end); a permit's, its number, areas and description. Times are ISO 8601 in UTC. Text
    cells that a spreadsheet would read as a formula get a leading apostrophe.
    """
    doc = _plain(doc)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in _reading_rows(doc):
        writer.writerow([_csv_cell(row.get(c)) for c in CSV_COLUMNS])
    for _, row in sorted(_event_rows(doc), key=lambda item: item[0]):
        writer.writerow([_csv_cell(row.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()


def _reading_rows(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for s in doc.get("series") or []:
        columns = _series_columns(s)
        for t_ms, lo, hi, mean, n in zip(*columns, strict=True):
            yield {
                "record": "reading",
                "time": _ms_to_dt(t_ms).isoformat(),
                "asset": s.get("asset"),
                "subject": s.get("sensor"),
                "min": lo,
                "max": hi,
                "mean": mean,
                "samples": n,
                "text": s.get("unit"),
            }


def _event_rows(
    doc: Mapping[str, Any],
) -> Iterator[tuple[tuple[datetime, int, int], dict[str, Any]]]:
    """Event rows with their sort key: time, then the kind's rank, then document order."""
    order = 0
    alerts = doc.get("alerts") or []
    for alert in alerts:
        for tr in alert.get("transitions") or []:
            order += 1
            yield (
                (_sort_time(tr.get("at")), 0, order),
                {
                    "record": "transition",
                    "time": _iso(tr.get("at")),
                    "asset": alert.get("asset"),
                    "subject": alert.get("subject"),
                    "action": tr.get("action"),
                    "from_state": tr.get("from_state"),
                    "to_state": tr.get("to_state"),
                    "priority": tr.get("priority"),
                    "actor": tr.get("actor"),
                    "text": _joined(
                        alert.get("rule_id"),
                        tr.get("severity"),
                        _labelled("value", tr.get("value")),
                        _labelled("limit", tr.get("limit")),
                        tr.get("reason"),
                    ),
                },
            )
    assets = {a.get("id"): a.get("asset") for a in alerts}
    for act in _standalone_actions(doc):
        order += 1
        yield (
            (_sort_time(act.get("at")), 1, order),
            {
                "record": "action",
                "time": _iso(act.get("at")),
                "asset": assets.get(act.get("alert_id")),
                "subject": act.get("subject"),
                "action": act.get("action"),
                "actor": act.get("actor"),
                "text": act.get("reason"),
            },
        )
    for note in doc.get("annotations") or []:
        order += 1
        until = note.get("until")
        yield (
            (_sort_time(note.get("at")), 2, order),
            {
                "record": "annotation",
                "time": _iso(note.get("at")),
                "asset": note.get("asset"),
                "action": "annotate",
                "actor": note.get("author"),
                "text": _joined(note.get("text"), f"until {_iso(until)}" if until else None),
            },
        )
    for permit in doc.get("permits") or []:
        areas = ", ".join(str(a) for a in permit.get("areas") or [])
        base = {
            "record": "permit",
            "asset": permit.get("asset"),
            "subject": permit.get("kind"),
            "text": _joined(
                f"permit {permit.get('id')}",
                f"areas: {areas}" if areas else None,
                permit.get("description"),
            ),
        }
        order += 1
        yield (
            (_sort_time(permit.get("opened_at")), 3, order),
            base
            | {
                "time": _iso(permit.get("opened_at")),
                "action": "open",
                "actor": permit.get("issued_by"),
            },
        )
        if permit.get("closed_at"):
            order += 1
            yield (
                (_sort_time(permit.get("closed_at")), 3, order),
                base | {"time": _iso(permit.get("closed_at")), "action": "close"},
            )


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _num(value)
    text = str(value)
    if text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


# --- HTML ----------------------------------------------------------------------------------


def render_html(doc: Mapping[str, Any]) -> str:
    """The timeline as one self-contained, printable A4 HTML page (inline CSS and SVG plots).

    In order: the title and window, both chains' verification in words, the facility record
    (identity, SMK3, licences, findings, incidents), the compliance status and its reasons,
    the plots (one per asset and sensor kind, at most `MAX_PLOTS`), the alerts with their
    transitions and operator actions, the permits, the annotations, the limits in force with
    their sources, and the journal extract with its verification. Every text taken from the
    document is HTML-escaped.
    """
    return _page(_plain(doc), svg_as_image=False)


def _page(doc: Mapping[str, Any], *, svg_as_image: bool) -> str:
    """The report; plots inline as <svg> elements, or as data-URI <img> (`svg_as_image`)."""
    window_end = _utc(doc.get("to"))
    parts = [
        _head(doc),
        _title(doc),
        _verification_summary(doc),
        _facility_section(doc, window_end),
        _status_section(doc),
        _plots_section(doc, svg_as_image=svg_as_image),
        _alerts_section(doc),
        _permits_section(doc),
        _annotations_section(doc),
        _limits_section(doc),
        _journal_section(doc),
        "</body>\n</html>\n",
    ]
    return "\n".join(parts)


_CSS: Final = """
@page {
  size: A4;
  margin: 16mm 12mm 18mm 12mm;
  @bottom-left { content: string(doctitle); font-size: 7pt; color: #444; }
  @bottom-right { content: "Page " counter(page) " of " counter(pages); font-size: 7pt; }
}
html { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 8.5pt; color: #000; }
body { margin: 0 auto; max-width: 186mm; }
h1 { font-size: 15pt; margin: 0 0 2mm 0; string-set: doctitle content(text); }
h2 { font-size: 11pt; margin: 6mm 0 2mm 0; border-bottom: 0.4mm solid #000;
     break-after: avoid; }
h3 { font-size: 9.5pt; margin: 4mm 0 1mm 0; break-after: avoid; }
p { margin: 1mm 0; }
table { width: 100%; table-layout: fixed; border-collapse: collapse; margin: 1mm 0 2mm 0;
        font-size: 7.5pt; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
th, td { border: 0.2mm solid #888; padding: 0.6mm 1.2mm; text-align: left;
         vertical-align: top; overflow-wrap: break-word; }
th { background: #eee; }
td.num { text-align: right; white-space: nowrap; }
td.mono, span.mono { font-family: "DejaVu Sans Mono", monospace; font-size: 7.5pt; }
table.record th { width: 32%; }
.meta { color: #333; }
.banner { border: 0.6mm solid #000; padding: 2mm 3mm; margin: 3mm 0; }
.banner.ok { border-color: #1b5e20; }
.banner.fail { border: 1.2mm double #b00020; background: #fff3f3; }
.badge { display: inline-block; border: 0.5mm solid #000; padding: 0.5mm 2mm;
         font-weight: bold; text-transform: uppercase; }
.badge.compliant { border-color: #1b5e20; }
.badge.attention { border-color: #b35900; background: #fff8e1; }
.badge.non_compliant { border-color: #b00020; background: #fff3f3; }
.fail-word { color: #b00020; font-weight: bold; }
.ok-word { color: #1b5e20; font-weight: bold; }
figure { margin: 2mm 0 4mm 0; break-inside: avoid; }
figure svg, figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 7.5pt; color: #333; }
.note { font-style: italic; }
article.alert { break-inside: auto; }
@media screen { body { padding: 8mm; } }
"""


def _head(doc: Mapping[str, Any]) -> str:
    title = f"Incident timeline: {_facility_name(doc)}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>"
    )


def _facility_name(doc: Mapping[str, Any]) -> str:
    facility = doc.get("facility") or {}
    return str(facility.get("name") or f"site {doc.get('site')}")


def _title(doc: Mapping[str, Any]) -> str:
    asset = doc.get("asset")
    scope = f"asset {_e(asset)}" if asset else "all assets"
    return (
        "<header>\n"
        f"<h1>Incident timeline: {_e(_facility_name(doc))}</h1>\n"
        f'<p class="meta">Site {_e(doc.get("site"))}, {scope}. '
        f"Window <strong>{_when(doc.get('from'))}</strong> to "
        f"<strong>{_when(doc.get('to'))}</strong> UTC; readings in buckets of "
        f'{_duration(doc.get("bucket_s"))} from <span class="mono">{_e(doc.get("source"))}'
        "</span>.</p>\n"
        f'<p class="meta">Generated {_when(doc.get("generated_at"))} UTC by '
        f"{_e(doc.get('generated_by'))}. All times in this report are UTC.</p>\n"
        "</header>"
    )


def _verification_summary(doc: Mapping[str, Any]) -> str:
    chains = _chains(doc)
    lines = "".join(f"<li>{_e(c.name)}: {_chain_words(c)}</li>" for c in chains)
    failed = [c.name for c in chains if c.verdict == "failed"]
    missing = [c.name for c in chains if c.verdict == "missing"]
    if failed:
        head = (
            '<span class="fail-word">Integrity check FAILED</span> for'
            f" {_e(', '.join(failed))}: entries may have been altered, removed or reordered."
            " The problems are listed under the journal extract."
        )
    elif missing:
        head = (
            '<span class="fail-word">Integrity NOT VERIFIED</span> for'
            f" {_e(', '.join(missing))}: the document carries no verification result."
        )
    else:
        head = (
            '<span class="ok-word">Integrity check OK</span>: the hash chains of the alert'
            " journal and the record history verify."
        )
    css = "fail" if failed or missing else "ok"
    return f'<section class="banner {css}">\n<p>{head}</p>\n<ul>{lines}</ul>\n</section>'


@dataclass(frozen=True, slots=True)
class _Chain:
    """One hash chain's verification as the document gives it."""

    name: str
    verdict: str  # ok, failed or missing
    entries: Any = None
    problems: tuple[str, ...] = ()


def _chains(doc: Mapping[str, Any]) -> list[_Chain]:
    """Each chain's verification, the two known chains first (missing if absent)."""
    verification = (doc.get("journal") or {}).get("verification") or {}
    keys = list(_CHAIN_NAMES) + sorted(k for k in verification if k not in _CHAIN_NAMES)
    chains = []
    for key in keys:
        name = _CHAIN_NAMES.get(key, str(key))
        v = verification.get(key)
        if not v:
            chains.append(_Chain(name, "missing"))
            continue
        problems = tuple(str(p) for p in v.get("problems") or [])
        # A result that says ok but lists problems is not taken as ok.
        verdict = "ok" if v.get("ok") is True and not problems else "failed"
        chains.append(_Chain(name, verdict, v.get("entries"), problems))
    return chains


def _chain_words(chain: _Chain) -> str:
    """A chain's verification in words, as HTML."""
    # Only administrators are told how long the whole chain is (it spans every facility).
    entries = "" if chain.entries is None else f"{_e(chain.entries)} entries, "
    if chain.verdict == "ok":
        return f'<span class="ok-word">OK</span>: {entries}hash chain intact.'
    if chain.verdict == "missing":
        return '<span class="fail-word">not verified</span>: no result given.'
    found = f"{len(chain.problems)} problem(s)" if chain.problems else "no problem listed"
    return f'<span class="fail-word">FAILED</span>: {entries}{found}.'


def _facility_section(doc: Mapping[str, Any], window_end: datetime | None) -> str:
    out = ["<section>\n<h2>Facility record</h2>"]
    facility = doc.get("facility")
    if not facility:
        out.append(
            f'<p class="note">No facility record on file for site {_e(doc.get("site"))}.</p>'
        )
    else:
        out.append("<h3>Identity</h3>")
        out.append(
            _record_table(
                [
                    ("Name", facility.get("name")),
                    ("Company", facility.get("company")),
                    ("IUI number (industrial business licence)", facility.get("iui_number")),
                    ("OSS NIB", facility.get("oss_nib")),
                    ("KBLI", facility.get("kbli")),
                    ("Industrial estate", facility.get("estate")),
                    ("Address", facility.get("address")),
                    ("Site id", facility.get("site_id")),
                ]
            )
        )
        out.append("<h3>SMK3 certificate</h3>")
        expiry = facility.get("smk3_expires_on")
        out.append(
            _record_table(
                [
                    ("Level", facility.get("smk3_level")),
                    ("Certificate", facility.get("smk3_certificate")),
                    ("Audited on", facility.get("smk3_audit_on")),
                    ("Expires on", expiry),
                ],
                extra=[("At window end", _validity(expiry, window_end))],
            )
        )
    out.append("<h3>Licences</h3>")
    out.append(
        _table(
            [
                ("Kind", 14),
                ("Number", 22),
                ("Issuer", 22),
                ("Issued on", 14),
                ("Expires on", 14),
                ("At window end", 14),
            ],
            [
                [
                    _e(lic.get("kind")),
                    _e(lic.get("number")),
                    _e(lic.get("issuer")),
                    _e(lic.get("issued_on")),
                    _e(lic.get("expires_on")),
                    _validity(lic.get("expires_on"), window_end),
                ]
                for lic in doc.get("licences") or []
            ],
            empty="No licences on file.",
        )
    )
    out.append("<h3>Inspection findings</h3>")
    out.append(
        _table(
            [
                ("Id", 5),
                ("Asset", 8),
                ("Finding", 27),
                ("Corrective action", 22),
                ("Opened", 13),
                ("Due", 13),
                ("Status", 12),
            ],
            [
                [
                    _e(f.get("id")),
                    _e(f.get("asset")),
                    _e(f.get("description")),
                    _e(f.get("corrective_action")),
                    _when(f.get("opened_at")),
                    _when(f.get("due_at")),
                    _finding_status(f, window_end),
                ]
                for f in doc.get("findings") or []
            ],
            empty="No inspection findings on file.",
        )
    )
    out.append("<h3>Incidents</h3>")
    out.append(
        _table(
            [
                ("Id", 6),
                ("Asset", 10),
                ("Occurred", 15),
                ("Kind", 20),
                ("Fatalities", 11),
                ("Injuries", 10),
                ("Investigation", 28),
            ],
            [
                [
                    _e(i.get("id")),
                    _e(i.get("asset")),
                    _when(i.get("occurred_at")),
                    _e(i.get("kind")),
                    _e(i.get("fatalities")),
                    _e(i.get("injuries")),
                    _e(i.get("investigation_status")),
                ]
                for i in doc.get("incidents") or []
            ],
            empty="No incidents recorded.",
        )
    )
    out.append("</section>")
    return "\n".join(out)


def _validity(expires_on: Any, window_end: datetime | None) -> str:
    expiry = _date(expires_on)
    if expiry is None or window_end is None:
        return "&mdash;"
    if expiry < window_end.date():
        return '<span class="fail-word">expired</span>'
    return "valid"


def _finding_status(finding: Mapping[str, Any], window_end: datetime | None) -> str:
    closed = finding.get("closed_at")
    if closed:
        return f"closed {_when(closed)}"
    due = _utc(finding.get("due_at"))
    if due is not None and window_end is not None and due < window_end:
        return '<span class="fail-word">open, overdue</span>'
    return "open"


def _status_section(doc: Mapping[str, Any]) -> str:
    status = doc.get("status") or {}
    code = str(status.get("status") or "")
    word = _STATUS_WORDS.get(code, code or "unknown")
    css = code if code in _STATUS_WORDS else ""
    reasons = _table(
        [("Severity", 10), ("Code", 18), ("Asset", 9), ("Reason", 49), ("Since", 14)],
        [
            [
                _e(r.get("severity")),
                f'<span class="mono">{_e(r.get("code"))}</span>',
                _e(r.get("asset")),
                _e(r.get("message")),
                _when(r.get("since")),
            ]
            for r in status.get("reasons") or []
        ],
        empty="No reasons given.",
    )
    return (
        "<section>\n<h2>Compliance status</h2>\n"
        f'<p>Status: <span class="badge {css}">{_e(word)}</span></p>\n{reasons}\n</section>'
    )


# --- plots ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Group:
    """The series drawn on one plot: one asset, one sensor kind."""

    asset: str
    kind: str
    series: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def sensors(self) -> set[str]:
        return {str(s.get("sensor")) for s in self.series}

    @property
    def unit(self) -> str:
        return ", ".join(sorted({str(s.get("unit") or "") for s in self.series} - {""}))

    @property
    def title(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.asset}: {self.kind}{unit}"


def _groups(doc: Mapping[str, Any]) -> list[_Group]:
    groups: dict[tuple[str, str], _Group] = {}
    for s in doc.get("series") or []:
        key = (str(s.get("asset") or "-"), str(s.get("kind") or "-"))
        groups.setdefault(key, _Group(*key)).series.append(s)
    return [groups[k] for k in sorted(groups)]


def _plots_section(doc: Mapping[str, Any], *, svg_as_image: bool) -> str:
    groups = _groups(doc)
    out = ["<section>\n<h2>Readings</h2>"]
    if not groups:
        out.append('<p class="note">No readings in the window.</p>\n</section>')
        return "\n".join(out)
    out.append(
        '<p class="meta">Each plot: one line per sensor (the bucket mean, told apart by marker'
        " shape and named in the legend), the shaded band around it the bucket minimum to"
        " maximum; limits in force as horizontal lines, <strong>dashed = warning</strong>,"
        " <strong>solid = critical</strong>, each labelled; <strong>hatched spans = alert"
        " active</strong> (activation to clear), labelled with the alert; <strong>dotted"
        " vertical lines = annotations</strong>, labelled with their number.</p>"
    )
    shown = groups[:MAX_PLOTS]
    left_out = groups[MAX_PLOTS:]
    if left_out:
        names = ", ".join(g.title for g in left_out)
        out.append(
            f'<p class="banner"><strong>{len(shown)} of {len(groups)} plots shown.</strong>'
            f" Left out ({len(left_out)}): {_e(names)}. Their readings are in the CSV"
            " export.</p>"
        )
    with _MPL_LOCK, mpl.rc_context(_MPL_RC):
        for index, group in enumerate(shown, start=1):
            svg = _plot_svg(doc, group)
            if svg_as_image:
                data = base64.b64encode(svg.encode()).decode("ascii")
                plot = f'<img src="data:image/svg+xml;base64,{data}" alt="{_e(group.title)}">'
            else:
                plot = _inline_svg(svg, f"plot{index}-", group.title)
            sensors = ", ".join(str(s.get("sensor")) for s in group.series)
            out.append(
                f"<figure>\n{plot}\n<figcaption>Plot {index}: {_e(group.title)}; sensors"
                f" {_e(sensors)}.</figcaption>\n</figure>"
            )
    out.append("</section>")
    return "\n".join(out)


def _plot_svg(doc: Mapping[str, Any], group: _Group) -> str:
    """One group's plot as an SVG document."""
    fig = Figure(figsize=(7.0, 2.8), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(group.title, loc="left", parse_math=False)
    ax.set_ylabel(group.unit, parse_math=False)
    ax.set_xlabel("time (UTC)")
    ax.xaxis_date(tz=UTC)
    start, end = _utc(doc.get("from")), _utc(doc.get("to"))
    # The first bucket may begin before the window (buckets are aligned to their width).
    first = _utc(doc.get("buckets_from"))
    left = min(start, first) if start is not None and first is not None else start

    for i, s in enumerate(group.series):
        t_ms, lo, hi, mean, _ = _series_columns(s)
        x = _x(np.asarray(t_ms, dtype="int64").astype("datetime64[ms]"))
        colour = f"C{i % 10}"
        ax.fill_between(x, _floats(lo), _floats(hi), color=colour, alpha=0.15, linewidth=0)
        ax.plot(
            x,
            _floats(mean),
            color=colour,
            linewidth=1.0,
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=3,
            markevery=max(1, len(x) // _MARKS_PER_LINE),
            label=_mpl_text(str(s.get("sensor"))),
        )

    _draw_limits(ax, doc, group)
    _draw_alerts(ax, doc, group, start, end)
    _draw_annotations(ax, doc, group)
    if left is not None and end is not None and left < end:
        ax.set_xlim(float(_x(left)), float(_x(end)))
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=6,
        ncols=1 if len(group.series) <= 14 else 2,
        title="sensor (mean)",
        title_fontsize=6,
    )
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def _draw_limits(ax: Axes, doc: Mapping[str, Any], group: _Group) -> None:
    sensors = group.sensors
    drawn: set[tuple[str, float]] = set()
    for limit in doc.get("limits") or []:
        if not sensors.intersection(str(x) for x in limit.get("sensors") or []):
            continue
        for lvl in limit.get("levels") or []:
            level = lvl.get("level")
            if not isinstance(level, int | float) or isinstance(level, bool):
                continue
            severity = str(lvl.get("severity") or "")
            if (severity, float(level)) in drawn:
                continue
            drawn.add((severity, float(level)))
            critical = severity == "critical"
            colour = _CRITICAL_COLOUR if critical else _WARNING_COLOUR
            ax.axhline(level, color=colour, linewidth=1.0, linestyle="-" if critical else "--")
            label = f"{severity} {_num(level)} {group.unit} ({limit.get('rule_id')})"
            ax.text(
                0.005,
                level,
                label,
                transform=ax.get_yaxis_transform(),
                color=colour,
                fontsize=6,
                va="bottom",
                ha="left",
                parse_math=False,
                bbox=_LABEL_BOX,
            )


def _draw_alerts(
    ax: Axes, doc: Mapping[str, Any], group: _Group, start: datetime | None, end: datetime | None
) -> None:
    sensors = group.sensors
    limit_sensors = {
        str(limit.get("rule_id")): {str(x) for x in limit.get("sensors") or []}
        for limit in doc.get("limits") or []
    }
    for alert in doc.get("alerts") or []:
        subject = str(alert.get("subject"))
        applies = subject in sensors or (
            alert.get("asset") == group.asset
            and bool(sensors & limit_sensors.get(str(alert.get("rule_id")), set()))
        )
        if not applies:
            continue
        for lo, hi in _active_spans(alert, start, end):
            x0, x1 = float(_x(lo)), float(_x(hi))
            ax.axvspan(
                x0, x1, facecolor=_CRITICAL_COLOUR, alpha=0.10, hatch="//", edgecolor="#b30000"
            )
            ax.text(
                x0,
                0.98,
                f" alert {alert.get('id')} active ({alert.get('priority')})",
                transform=ax.get_xaxis_transform(),
                fontsize=6,
                va="top",
                ha="left",
                color=_CRITICAL_COLOUR,
                parse_math=False,
                bbox=_LABEL_BOX,
            )


def _active_spans(
    alert: Mapping[str, Any], start: datetime | None, end: datetime | None
) -> list[tuple[datetime, datetime]]:
    """When the alert's condition was active in [start, end]: each activation to its clear."""
    spans: list[tuple[datetime, datetime]] = []
    active = alert.get("state_at_start") in _ACTIVE_STATES
    since = start if active else None
    for tr in sorted(alert.get("transitions") or [], key=lambda tr: tr.get("seq") or 0):
        at = _utc(tr.get("at"))
        if at is None:
            continue
        if tr.get("action") == "activate" and not active:
            active, since = True, at
        elif tr.get("action") == "clear" and active:
            if since is not None:
                spans.append((since, at))
            active, since = False, None
    if active and since is not None and end is not None and since < end:
        spans.append((since, end))
    return spans


def _draw_annotations(ax: Axes, doc: Mapping[str, Any], group: _Group) -> None:
    for note in doc.get("annotations") or []:
        asset = note.get("asset")
        at = _utc(note.get("at"))
        if at is None or (asset and asset != group.asset):
            continue
        x = float(_x(at))
        ax.axvline(x, color="#000000", linestyle=":", linewidth=1.0)
        ax.text(
            x,
            0.02,
            f" note {note.get('id')}",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            fontsize=6,
            va="bottom",
            ha="right",
            parse_math=False,
        )


def _inline_svg(svg: str, prefix: str, label: str) -> str:
    """Matplotlib's SVG document as an element to inline: no prolog, ids unique in the page.

    Several plots in one page would otherwise repeat ids (figure_1, the clip paths), and a
    reference could resolve to another plot's definition.
    """
    svg = svg[svg.index("<svg") :]
    ids = set(_SVG_ID.findall(svg))

    def rename(m: re.Match[str]) -> str:
        lead, name = m.group(1), m.group(2)
        return f"{lead}{prefix}{name}" if name in ids else m.group(0)

    svg = _SVG_ID_USE.sub(rename, svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" ', 1)


# --- alerts, permits, annotations, limits --------------------------------------------------


def _alerts_section(doc: Mapping[str, Any]) -> str:
    alerts = doc.get("alerts") or []
    out = ["<section>\n<h2>Alerts</h2>"]
    if not alerts:
        out.append('<p class="note">No alerts in the window.</p>')
    actions_by_alert: dict[Any, list[Mapping[str, Any]]] = {}
    for act in doc.get("actions") or []:
        actions_by_alert.setdefault(act.get("alert_id"), []).append(act)
    for alert in alerts:
        transitions = list(alert.get("transitions") or [])
        seqs = {tr.get("seq") for tr in transitions}
        events = transitions + [
            a for a in actions_by_alert.get(alert.get("id"), []) if a.get("seq") not in seqs
        ]
        events.sort(key=lambda ev: ev.get("seq") or 0)
        out.append(
            f'<article class="alert">\n<h3>Alert {_e(alert.get("id"))}: {_e(alert.get("title"))}'
            f" (priority {_e(alert.get('priority'))})</h3>\n"
            f'<p class="meta">Rule <span class="mono">{_e(alert.get("rule_id"))}</span>, subject'
            f" {_e(alert.get('subject'))}, asset {_e(alert.get('asset'))}; state at window start:"
            f" {_e(alert.get('state_at_start'))}.</p>"
        )
        out.append(_events_table(events, empty="No transitions in the window."))
        out.append("</article>")
    known = {a.get("id") for a in alerts}
    others = [a for a in doc.get("actions") or [] if a.get("alert_id") not in known]
    if others:
        out.append("<h3>Other operator actions and comments</h3>")
        out.append(_events_table(others, empty=""))
    out.append("</section>")
    return "\n".join(out)


def _events_table(events: Sequence[Mapping[str, Any]], *, empty: str) -> str:
    return _table(
        [
            ("Seq", 6),
            ("Time", 13),
            ("Action", 11),
            ("From \u2192 to", 14),
            ("Sev.", 8),
            ("Prio.", 8),
            ("Value / limit", 11),
            ("Actor", 10),
            ("Reason or comment", 19),
        ],
        [
            [
                _e(ev.get("seq")),
                _when(ev.get("at")),
                _e(ev.get("action")),
                _from_to(ev),
                _e(ev.get("severity")),
                _e(ev.get("priority")),
                _value_limit(ev),
                _e(ev.get("actor")),
                _e(ev.get("reason")),
            ]
            for ev in events
        ],
        empty=empty,
        num_columns={0},
    )


def _permits_section(doc: Mapping[str, Any]) -> str:
    table = _table(
        [
            ("Id", 5),
            ("Kind", 10),
            ("Asset", 7),
            ("Areas", 13),
            ("Opened", 13),
            ("Closed", 13),
            ("Issued by", 12),
            ("Description", 27),
        ],
        [
            [
                _e(p.get("id")),
                _e(p.get("kind")),
                _e(p.get("asset")),
                _e(", ".join(str(a) for a in p.get("areas") or [])),
                _when(p.get("opened_at")),
                _when(p.get("closed_at")) if p.get("closed_at") else "still open",
                _e(p.get("issued_by")),
                _e(p.get("description")),
            ]
            for p in doc.get("permits") or []
        ],
        empty="No permits open in the window.",
    )
    return f"<section>\n<h2>Permits open in the window</h2>\n{table}\n</section>"


def _annotations_section(doc: Mapping[str, Any]) -> str:
    table = _table(
        [("Note", 6), ("At", 14), ("Until", 14), ("Asset", 8), ("Author", 12), ("Text", 46)],
        [
            [
                _e(a.get("id")),
                _when(a.get("at")),
                _when(a.get("until")) if a.get("until") else "&mdash;",
                _e(a.get("asset") or "all"),
                _e(a.get("author")),
                _e(a.get("text")),
            ]
            for a in doc.get("annotations") or []
        ],
        empty="No annotations in the window.",
    )
    return f"<section>\n<h2>Annotations</h2>\n{table}\n</section>"


def _limits_section(doc: Mapping[str, Any]) -> str:
    units: dict[str, str] = {
        str(s.get("sensor")): str(s.get("unit") or "") for s in doc.get("series") or []
    }
    rows = []
    for limit in doc.get("limits") or []:
        sensors = [str(x) for x in limit.get("sensors") or []]
        unit_set = {units[x] for x in sensors if units.get(x)}
        unit = unit_set.pop() if len(unit_set) == 1 else ""
        for lvl in limit.get("levels") or [{}]:
            level = lvl.get("level")
            shown = f"{_num(level)} {unit}" if isinstance(level, int | float) else level
            rows.append(
                [
                    f'<span class="mono">{_e(limit.get("rule_id"))}</span>',
                    _e(limit.get("title")),
                    _e(_joined(limit.get("rule_kind"), limit.get("direction"))),
                    _e(lvl.get("severity")),
                    _e(shown),
                    _e(lvl.get("priority")),
                    _e(lvl.get("source")),
                    _e(", ".join(sensors)),
                ]
            )
    table = _table(
        [
            ("Rule", 11),
            ("Title", 14),
            ("Kind", 11),
            ("Severity", 9),
            ("Limit", 9),
            ("Priority", 9),
            ("Source", 20),
            ("Sensors", 17),
        ],
        rows,
        empty="No limits in force for these sensors.",
    )
    return (
        '<section>\n<h2>Limits in force</h2>\n<p class="meta">[S] = a published source,'
        " [A] = an engineering assumption the plant may change.</p>\n"
        f"{table}\n</section>"
    )


# --- journal -------------------------------------------------------------------------------


def _journal_section(doc: Mapping[str, Any]) -> str:
    journal = doc.get("journal") or {}
    out = ["<section>\n<h2>Journal extract and verification</h2>"]
    for chain in _chains(doc):
        out.append(f'<div class="banner {"ok" if chain.verdict == "ok" else "fail"}">')
        out.append(f"<p><strong>{_e(chain.name)}</strong>: {_chain_words(chain)}</p>")
        if chain.problems:
            items = "".join(f"<li>{_e(p)}</li>" for p in chain.problems)
            out.append(f"<ol>{items}</ol>")
        out.append("</div>")
    out.append(
        _table(
            [
                ("Seq", 7),
                ("Time", 14),
                ("Actor", 12),
                ("Action", 12),
                ("Rule / subject", 22),
                ("From \u2192 to", 18),
                ("Hash", 15),
            ],
            [
                [
                    _e(e.get("seq")),
                    _when(e.get("at")),
                    _e(e.get("actor")),
                    _e(e.get("action")),
                    _e(_joined(e.get("rule_id"), e.get("subject"), sep=" / ")),
                    _from_to(e),
                    f'<span class="mono">{_e(_hash_prefix(e.get("hash")))}</span>',
                ]
                for e in journal.get("entries") or []
            ],
            empty="No journal entries in the window.",
            num_columns={0},
        )
    )
    out.append("</section>")
    return "\n".join(out)


def _hash_prefix(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        value = value.hex()
    text = str(value or "")
    if text.startswith("\\x"):  # PostgreSQL's bytea text form
        text = text[2:]
    return text[:HASH_PREFIX_CHARS]


# --- PDF -----------------------------------------------------------------------------------


def render_pdf(doc: Mapping[str, Any]) -> bytes:
    """The HTML report printed to PDF by WeasyPrint.

    The page is `render_html`'s, except that each plot is an SVG image (a data URI) rather
    than inline markup: WeasyPrint applies the HTML stylesheet rules to inline SVG as well and
    logs a warning for every SVG style property it does not know there (about 230 per plot),
    while drawing the same picture. Fonts embedded in the PDF carry fontTools' timestamp
    unless SOURCE_DATE_EPOCH is set, so PDF bytes differ between runs; the HTML does not.
    """
    # Imported here: WeasyPrint loads Pango through cffi at import, which the CSV and HTML
    # renderings do not need; and its stubs are missing, hence the ignore.
    import weasyprint  # type: ignore[import-untyped]  # noqa: PLC0415

    pdf: bytes = weasyprint.HTML(string=_page(_plain(doc), svg_as_image=True)).write_pdf()
    return pdf


# --- formatting ----------------------------------------------------------------------------


def _plain(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document as plain JSON values.

    Pre-serialised parts (orjson.Fragment, which the API uses for series) become dicts and
    lists, datetimes become ISO 8601 strings, numpy arrays and numbers become lists and numbers.
    """
    try:
        plain = orjson.loads(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
    except orjson.JSONEncodeError as exc:
        raise ExportError(f"the timeline document is not JSON-able: {exc}") from exc
    if not isinstance(plain, dict):
        raise ExportError("the timeline document is not a JSON object")
    return plain


def _e(value: Any) -> str:
    """Escaped text for HTML; None becomes a dash."""
    if value is None or value == "":
        return "&mdash;"
    return html.escape(str(value))


def _table(
    headers: Sequence[tuple[str, int]],
    rows: Sequence[Sequence[str]],
    *,
    empty: str,
    num_columns: Iterable[int] = (),
) -> str:
    """A table of cells that are already HTML; a note instead when there are no rows.

    `headers` are (title, width in percent). The widths are fixed: WeasyPrint's automatic
    table layout measures every cell's shortest line, which took half a minute on a limit
    listing 200 sensors.
    """
    if not rows:
        return f'<p class="note">{_e(empty)}</p>' if empty else ""
    nums = set(num_columns)
    cols = "".join(f'<col style="width: {w}%">' for _, w in headers)
    head = "".join(f"<th>{_e(h)}</th>" for h, _ in headers)
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in nums else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f"<table>\n<colgroup>{cols}</colgroup>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        f"{body}\n</tbody>\n</table>"
    )


def _record_table(
    fields: Sequence[tuple[str, Any]], *, extra: Sequence[tuple[str, str]] = ()
) -> str:
    """A two-column record: labels, and values escaped here (`extra`: values already HTML)."""
    rows = [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in fields]
    rows += [f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in extra]
    return '<table class="record">\n' + "\n".join(rows) + "\n</table>"


def _from_to(entry: Mapping[str, Any]) -> str:
    a, b = entry.get("from_state"), entry.get("to_state")
    if not a and not b:
        return "&mdash;"
    return f"{_e(a)} \u2192 {_e(b)}"


def _value_limit(entry: Mapping[str, Any]) -> str:
    value, limit = entry.get("value"), entry.get("limit")
    if value is None and limit is None:
        return "&mdash;"
    shown = [_num(x) if isinstance(x, int | float) else str(x) for x in (value, limit)]
    return _e(" / ".join(shown))


def _when(value: Any) -> str:
    """An ISO 8601 time shown in UTC to the second, escaped; a dash when absent."""
    if not value:
        return "&mdash;"
    dt = _utc(value)
    if dt is None:
        return _e(value)
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds <= 0:
        return _e(seconds)
    if seconds % 3600 == 0:
        return f"{_num(seconds / 3600)} h"
    if seconds % 60 == 0:
        return f"{_num(seconds / 60)} min"
    return f"{_num(seconds)} s"


def _utc(value: Any) -> datetime | None:
    """An ISO 8601 string as an aware UTC datetime (a naive one is taken as UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _date(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _iso(value: Any) -> str:
    """An ISO 8601 time restated in UTC; text that is not one is kept as it is."""
    dt = _utc(value)
    if dt is None:
        return "" if value is None else str(value)
    return dt.isoformat()


def _sort_time(value: Any) -> datetime:
    return _utc(value) or datetime.max.replace(tzinfo=UTC)


def _ms_to_dt(ms: Any) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _num(value: float) -> str:
    """A number as short as it can be written and still read back the same; NaN is blank."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return ""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _joined(*parts: Any, sep: str = "; ") -> str:
    return sep.join(str(p) for p in parts if p is not None and p != "")


def _labelled(name: str, value: Any) -> str | None:
    if value is None:
        return None
    return f"{name}={_num(value) if isinstance(value, int | float) else value}"


def _standalone_actions(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Operator actions that are not already among their alert's transitions (by seq)."""
    seen = {
        (alert.get("id"), tr.get("seq"))
        for alert in doc.get("alerts") or []
        for tr in alert.get("transitions") or []
    }
    return [a for a in doc.get("actions") or [] if (a.get("alert_id"), a.get("seq")) not in seen]


def _series_columns(s: Mapping[str, Any]) -> tuple[list[Any], ...]:
    columns = tuple(list(s.get(k) or []) for k in ("t", "min", "max", "mean", "n"))
    if len({len(c) for c in columns}) > 1:
        raise ExportError(
            f"series {s.get('sensor')}: t, min, max, mean and n differ in length"
            f" ({', '.join(str(len(c)) for c in columns)})"
        )
    return columns


def _floats(values: Sequence[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Numbers for plotting; None (a bucket with no reading) becomes a gap."""
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _x(when: datetime | np.ndarray[Any, Any]) -> Any:
    """Times as matplotlib date numbers, by matplotlib's own conversion (its epoch setting)."""
    return mdates.date2num(when)  # type: ignore[no-untyped-call]  # matplotlib.dates is untyped


def _mpl_text(text: str) -> str:
    """Text for a matplotlib label that is not mathtext: dollar signs kept literal."""
    return text.replace("$", r"\$")
