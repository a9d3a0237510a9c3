"""Incident timelines through the API against the real database: readings written by the real
ingest store (so the rollups are ingest's own), downsampled from the right source, with the
alerts, actions, permits, annotations and limits of the window; and the report exports."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from alerting.engine import ConditionEvent, EventKind
from alerting.pack import Priority, Severity, default_pack_path, load_pack
from alerting.store import AlertStore, to_us
from ingest.batch import Batch
from ingest.store import ReadingStore
from tests.fix_api import Api
from tests.fix_ingest import co_detector_site, register

PACK = load_pack(default_pack_path())
#: The incident window ends an hour from now (when the module is imported), so operator actions
#: taken when the tests run fall inside it, however long the suite ran before them.
T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
HOURS = 2


def readings(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2 h of 1-s CO readings: noise around 4 ppm, a 20-min rise to 60 ppm from T0+30 min, and
    every 97th reading of bad quality with an absurd value that no bucket may show."""
    rng = np.random.default_rng(seed)
    t = to_us(T0) + np.arange(HOURS * 3600, dtype=np.int64) * 1_000_000
    v = 4.0 + rng.normal(0, 0.5, t.size)
    rise = (np.arange(t.size) >= 1800) & (np.arange(t.size) < 3000)
    v[rise] += np.linspace(0, 56, rise.sum())
    q = np.zeros(t.size, dtype=np.int64)
    q[::97] = 2
    v[::97] = 1999.0
    return t, v, q


async def write(api: Api, key: int, t: np.ndarray, v: np.ndarray, q: np.ndarray) -> None:
    store = ReadingStore(database_url=api.database_url, schema=api.schema)
    try:
        for i in range(0, t.size, 1000):
            sl = slice(i, i + 1000)
            await store.commit_batch(
                Batch(
                    started_mono_s=0.0,
                    sensor_keys=[key] * len(t[sl]),
                    ts_us=t[sl].tolist(),
                    values=v[sl].tolist(),
                    qualities=q[sl].tolist(),
                )
            )
        # A redelivered batch (a gateway resending after a crash) must change no bucket.
        await store.commit_batch(
            Batch(
                started_mono_s=0.0,
                sensor_keys=[key] * 1000,
                ts_us=t[:1000].tolist(),
                values=v[:1000].tolist(),
                qualities=q[:1000].tolist(),
            )
        )
    finally:
        await store.close()


def expected(t: np.ndarray, v: np.ndarray, q: np.ndarray, bucket_s: int) -> dict[str, list[Any]]:
    good = q < 2
    b = (t[good] // (bucket_s * 1_000_000)) * bucket_s * 1000
    vals = v[good]
    out: dict[str, list[Any]] = {"t": [], "min": [], "max": [], "mean": [], "n": []}
    for k in np.unique(b):
        sel = vals[b == k]
        out["t"].append(int(k))
        out["min"].append(float(sel.min()))
        out["max"].append(float(sel.max()))
        out["mean"].append(float(sel.mean()))
        out["n"].append(int(sel.size))
    return out


@pytest.fixture
def loaded(api: Api) -> dict[str, Any]:
    """Facility s1 with one CO detector and 2 h of its readings, a CO alert acknowledged by an
    operator, a hot-work permit, and an inspector's annotation."""
    register(api.database_url, api.schema, co_detector_site("s1", period_s=1.0))
    key = int(api.db(sensor_key))
    t, v, q = readings()
    asyncio.run(write(api, key, t, v, q))
    admin = api.user("admin", "admin")
    r = admin.post(
        "/api/v1/facilities", json={"site_id": "s1", "name": "Line 1", "company": "PT A"}
    )
    assert r.status_code == 201
    admin.post(
        "/api/v1/facilities/s1/permits",
        json={
            "asset": "bay",
            "opened_at": (T0 + timedelta(minutes=10)).isoformat(),
            "closed_at": (T0 + timedelta(minutes=50)).isoformat(),
        },
    )

    async def alert() -> int:
        store = AlertStore(database_url=api.database_url, schema=api.schema)
        try:
            at = to_us(T0 + timedelta(minutes=42))
            await store.apply(
                [
                    ConditionEvent(
                        at,
                        "s1",
                        "bay",
                        "gas.co.level",
                        "bay.co",
                        "CO",
                        EventKind.ACTIVATE,
                        severity=Severity.WARNING,
                        priority=Priority.MEDIUM,
                        value=26.0,
                        limit=25.0,
                        reason="value 26 above the warning limit 25",
                    )
                ],
                pack=PACK,
                scope="*",
                state=b"x",
            )
            await store.register_pack(PACK, default_pack_path().read_text("utf-8"))
            return (await store.alerts(site="s1"))[0].id
        finally:
            await store.close()

    alert_id = asyncio.run(alert())
    op = api.user("op1", "operator", ("s1",))
    assert (
        op.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": "evacuating bay"}).status_code
        == 200
    )
    insp = api.user("insp1", "inspector", ("s1",))
    r = insp.post(
        "/api/v1/facilities/s1/annotations",
        json={
            "at": (T0 + timedelta(minutes=45)).isoformat(),
            "asset": "bay",
            "text": "fan restarted <script>alert(1)</script>",
        },
    )
    assert r.status_code == 201
    return {"t": t, "v": v, "q": q, "insp": insp, "op": op, "alert_id": alert_id}


async def sensor_key(conn: Any) -> int:
    cur = await conn.execute("SELECT key FROM sensors WHERE id = 'bay.co'")
    row = await cur.fetchone()
    return int(row[0])


def window(hours: float = HOURS, **params: Any) -> dict[str, Any]:
    return {"from": T0.isoformat(), "to": (T0 + timedelta(hours=hours)).isoformat(), **params}


@pytest.mark.parametrize(
    ("hours", "points", "bucket_s", "source"),
    [
        (HOURS, 600, 15, "readings"),
        (HOURS, 60, 120, "readings_1m"),
        (240, 240, 3600, "readings_1h"),
    ],
)
def test_timeline_downsamples_from_the_right_source(
    loaded: dict[str, Any], hours: float, points: int, bucket_s: int, source: str
) -> None:
    """Each bucket's min, max, mean and count equal those of the good readings in it, whichever
    source the budget picks; bad readings and the redelivered batch change nothing."""
    insp: httpx.Client = loaded["insp"]
    doc = insp.get("/api/v1/facilities/s1/timeline", params=window(hours, points=points)).json()
    assert (doc["bucket_s"], doc["source"]) == (bucket_s, source)
    [s] = doc["series"]
    assert (s["sensor"], s["unit"], s["asset"]) == ("bay.co", "ppm", "bay")
    want = expected(loaded["t"], loaded["v"], loaded["q"], bucket_s)
    assert s["t"] == want["t"]
    assert s["n"] == want["n"]
    np.testing.assert_allclose(s["min"], want["min"], rtol=1e-12)
    np.testing.assert_allclose(s["max"], want["max"], rtol=1e-12)
    np.testing.assert_allclose(s["mean"], want["mean"], rtol=1e-9)
    assert max(s["max"]) < 100  # the 1999 ppm bad readings are not values
    assert len(s["t"]) <= points + 1


def test_timeline_has_the_alerts_actions_permits_notes_and_limits(loaded: dict[str, Any]) -> None:
    """An inspector sees the alert with its transitions, the operator's acknowledgement, the
    permit open in the window, the annotation, and the CO limits with their source."""
    doc = loaded["insp"].get("/api/v1/facilities/s1/timeline", params=window()).json()
    [a] = doc["alerts"]
    assert [(x["action"], x["to_state"], x["actor"]) for x in a["transitions"]] == [
        ("activate", "unack", "engine"),
        ("acknowledge", "ack", "op1"),
    ]
    assert [(x["actor"], x["reason"]) for x in doc["actions"]] == [("op1", "evacuating bay")]
    assert [p["asset"] for p in doc["permits"]] == ["bay"]
    assert doc["annotations"][0]["author"] == "insp1"
    co = next(lim for lim in doc["limits"] if lim["rule_id"] == "gas.co.level")
    assert co["sensors"] == ["bay.co"]
    levels = {lv["severity"]: lv for lv in co["levels"]}
    assert levels["warning"]["level"] == 25.0
    assert "Permenaker 5/2018" in levels["warning"]["source"]
    # A later window holds no transition, permit or note, but lists the alert still active
    # at its start; an asset filter narrows it.
    late = (
        loaded["insp"]
        .get(
            "/api/v1/facilities/s1/timeline",
            params={
                "from": (T0 + timedelta(hours=3)).isoformat(),
                "to": (T0 + timedelta(hours=4)).isoformat(),
            },
        )
        .json()
    )
    assert (late["permits"], late["annotations"]) == ([], [])
    assert [(x["id"], x["state_at_start"], x["transitions"]) for x in late["alerts"]] == [
        (loaded["alert_id"], "ack", [])
    ]
    assert late["series"][0]["n"] == []
    other = loaded["insp"].get("/api/v1/facilities/s1/timeline", params=window(asset="F9")).json()
    assert (other["series"], other["alerts"]) == ([], [])


def test_timeline_refuses_bad_windows(loaded: dict[str, Any]) -> None:
    """Malformed windows and budgets get a 422 that names the problem."""
    insp = loaded["insp"]
    for params, words in (
        (
            {"from": (T0 + timedelta(hours=1)).isoformat(), "to": T0.isoformat()},
            "'to' must be after",
        ),
        (window(hours=24 * 500), "at most 400 days"),
        (window(points=3), "points"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-30T06:00:00"}, "UTC offset"),
    ):
        r = insp.get("/api/v1/facilities/s1/timeline", params=params)
        assert r.status_code == 422, params
        assert words in r.text, r.text


def test_exports_are_complete_and_verified(loaded: dict[str, Any], api: Api) -> None:
    """JSON, CSV, HTML and PDF of the same window: the record header, the readings, the
    journal extract and a verification that says the chains are intact; a tampered history
    is reported as such."""
    insp = loaded["insp"]
    params = window(points=60)
    js = insp.get(
        "/api/v1/facilities/s1/timeline/export", params={**params, "format": "json"}
    ).json()
    assert js["facility"]["name"] == "Line 1"
    assert js["journal"]["verification"]["alert_journal"]["ok"]
    assert [e["action"] for e in js["journal"]["entries"]] == ["activate", "acknowledge"]
    r = insp.get("/api/v1/facilities/s1/timeline/export", params={**params, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="tungku-s1-' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sum(1 for x in rows if x["record"] == "reading") == len(js["series"][0]["t"])
    r = insp.get("/api/v1/facilities/s1/timeline/export", params={**params, "format": "html"})
    html = r.text
    assert "Line 1" in html
    assert "<svg" in html
    assert "<script>alert(1)</script>" not in html
    assert "Permenaker 5/2018" in html
    r = insp.get("/api/v1/facilities/s1/timeline/export", params={**params, "format": "pdf"})
    assert r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    # Someone appends a forged change straight into the database: the export says so.

    async def forge(conn: Any) -> None:
        await conn.execute(
            "INSERT INTO record_history (seq, at, actor, site_id, entity, entity_id, action,"
            " before, after, prev_hash, hash) VALUES (999, now(), 'mallory', 's1', 'facility',"
            " 's1', 'update', NULL, '{}', '\\x00', '\\x01')"
        )

    api.db(forge)
    js = insp.get(
        "/api/v1/facilities/s1/timeline/export", params={**params, "format": "json"}
    ).json()
    ver = js["journal"]["verification"]["record_history"]
    assert not ver["ok"]
    assert any("change 999" in p for p in ver["problems"])
    html = insp.get(
        "/api/v1/facilities/s1/timeline/export", params={**params, "format": "html"}
    ).text
    assert "change 999" in html


def test_series_cover_whole_buckets_whatever_the_source(loaded: dict[str, Any]) -> None:
    """A window ending inside a bucket: the series span [buckets_from, buckets_to), and each
    source counts exactly the good readings in that span."""
    t, q = loaded["t"], loaded["q"]
    end = T0 + timedelta(hours=1, seconds=30)
    for points in (600, 12):  # 6-s buckets from raw readings; 300-s buckets from the minutes
        doc = (
            loaded["insp"]
            .get(
                "/api/v1/facilities/s1/timeline",
                params={"from": T0.isoformat(), "to": end.isoformat(), "points": points},
            )
            .json()
        )
        lo = to_us(datetime.fromisoformat(doc["buckets_from"]))
        hi = to_us(datetime.fromisoformat(doc["buckets_to"]))
        assert hi >= to_us(end)
        assert (hi - lo) % (doc["bucket_s"] * 1_000_000) == 0
        [s] = doc["series"]
        assert sum(s["n"]) == int(((t >= lo) & (t < hi) & (q < 2)).sum()), doc["source"]
