"""Alarm KPIs and the compliance summary against the real database: journals written by the
real alert store (engine events through the lifecycle, operator actions through `act`),
readings written by the real ingest store (with its rollups), the shipped rule pack."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from alerting import lifecycle
from alerting.engine import ConditionEvent, EventKind
from alerting.pack import Priority, Severity, default_pack_path, load_pack, parse_pack
from alerting.store import AlertStore, Subject, to_us
from dashboards.kpi import KpiError, alarm_kpis, compliance_summary
from ingest.batch import Batch
from ingest.migrate import session_sql
from ingest.registry import Gateway, Sensor, Site
from ingest.store import ReadingStore
from tests.fix_ingest import register

PACK = load_pack(default_pack_path())
PACK_BODY = default_pack_path().read_text("utf-8")
SITE = "kpi-site"
START = datetime(2026, 12, 8, tzinfo=UTC)  # a 10-min boundary, after the pack's effective date
T0 = to_us(START)
S = 1_000_000


def at(t_s: float) -> str:
    """ISO string of T0 + t_s seconds, as the reports print times."""
    return (START + timedelta(seconds=t_s)).isoformat()


def on(
    t_s: float,
    rule: str,
    subject: str,
    *,
    asset: str = "F1",
    sev: Severity = Severity.WARNING,
    pri: Priority = Priority.LOW,
    latch: bool = False,
) -> ConditionEvent:
    """The engine's activation of `rule` on `subject`, t_s seconds after T0."""
    return ConditionEvent(
        T0 + round(t_s * S), SITE, asset, rule, subject, f"{rule} on {subject}",
        EventKind.ACTIVATE, severity=sev, priority=pri, latch=latch, value=1.0, limit=0.5,
    )  # fmt: skip


def critical(t_s: float, rule: str, subject: str, *, asset: str = "F1") -> ConditionEvent:
    """A latching critical activation of high priority, as the shipped pack's criticals are."""
    return on(t_s, rule, subject, asset=asset, sev=Severity.CRITICAL, pri=Priority.HIGH, latch=True)


def off(t_s: float, rule: str, subject: str, *, asset: str = "F1") -> ConditionEvent:
    """The engine's clear of `rule` on `subject`, t_s seconds after T0."""
    return ConditionEvent(
        T0 + round(t_s * S), SITE, asset, rule, subject, f"{rule} on {subject}",
        EventKind.CLEAR, value=0.0,
    )  # fmt: skip


@pytest_asyncio.fixture
async def store(database_url: str, db_schema: str) -> AsyncIterator[AlertStore]:
    """An alert store on the test's schema."""
    s = AlertStore(database_url=database_url, schema=db_schema)
    yield s
    await s.close()


@pytest_asyncio.fixture
async def aconn(database_url: str, db_schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An async connection pointed at the test's schema, as the API hands to the reports."""
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    await conn.execute(session_sql(db_schema))
    yield conn
    await conn.close()


async def journal(store: AlertStore, events: Sequence[ConditionEvent]) -> None:
    """Apply engine events in event-time order, as the engine would have produced them."""
    await store.apply(sorted(events, key=lambda e: e.at_us), pack=PACK, scope="*", state=None)


async def ack(
    store: AlertStore, rule: str, subject: str, t_s: float, *, reset: bool = False
) -> None:
    """An operator acknowledges (or resets) the alert at T0 + t_s."""
    row = await store.find_alert(Subject(SITE, rule, subject))
    assert row is not None
    when = T0 + round(t_s * S)
    event: lifecycle.Event = (
        lifecycle.Reset(at_us=when, actor="sari")
        if reset
        else lifecycle.Acknowledge(at_us=when, actor="sari")
    )
    await store.act(row.id, event)


def strict_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report survives strict JSON (no NaN, no datetimes) unchanged."""
    return json.loads(json.dumps(report, allow_nan=False))  # type: ignore[no-any-return]


@pytest.mark.asyncio
async def test_twelve_alarms_in_five_minutes_make_one_flood(
    store: AlertStore, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """12 alarms 25 s apart make one flood from the 11th alarm until fewer than 5 remain in
    the trailing 10 min; 10 alarms on another asset later do not; a period starting inside
    the flood still sees it and counts only its own part of the time."""
    events = [on(i * 25, "cw.flow.low", f"F1.panel-{i:02d}") for i in range(12)]
    events += [on(3600 + i * 20, "cw.flow.low", f"F2.panel-{i:02d}", asset="F2") for i in range(10)]
    await journal(store, events)
    end = START + timedelta(hours=2)

    k = strict_json(await alarm_kpis(aconn, SITE, START, end))
    assert k["alarms"]["total"] == 22
    assert k["alarms"]["per_10min"]["max"] == 12
    assert k["alarms"]["per_10min"]["max_window_start"] == at(0)
    assert k["alarms"]["per_hour"]["mean"] == 11.0
    assert k["alarms"]["per_hour"]["verdict"] == "manageable"
    fl = k["floods"]
    assert fl["count"] == 1
    # The 11th alarm (t = 250 s) starts it; it ends when the 8th (t = 175 s) leaves the
    # window at 775 s and 4 remain.
    assert fl["episodes"][0] == {
        "start": at(250), "end": at(775), "duration_s": 525.0, "alarms": 12,
        "peak_10min": 12, "ongoing_at_end": False,
    }  # fmt: skip
    assert fl["time_in_flood_pct"] == round(100 * 525 / 7200, 3)
    assert fl["verdict"] == "above target"

    f2 = await alarm_kpis(aconn, SITE, START, end, asset="F2")
    assert f2["alarms"]["total"] == 10
    assert f2["floods"]["count"] == 0
    assert f2["floods"]["verdict"] == "ok"

    later = await alarm_kpis(aconn, SITE, START + timedelta(seconds=300), end)
    assert later["floods"]["episodes"][0]["start"] == at(250)
    assert later["floods"]["time_in_flood_s"] == 475.0
    assert later["alarms"]["total"] == 10  # the F2 alarms only: the F1 ones came before


@pytest.mark.asyncio
async def test_chattering_fleeting_and_what_is_not_a_new_alarm(
    store: AlertStore, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """An alert activated 3 times within 40 s is chattering and one activated twice is
    not; an alarm cleared after 2 s is fleeting; escalating an acknowledged warning to
    critical while active is not a new alarm; the chattering one tops the contributors."""
    await journal(
        store,
        [
            on(0, "freeboard.positive", "F1.fb"), off(10, "freeboard.positive", "F1.fb"),
            on(20, "freeboard.positive", "F1.fb"), off(30, "freeboard.positive", "F1.fb"),
            on(40, "freeboard.positive", "F1.fb"), off(50, "freeboard.positive", "F1.fb"),
            on(0, "cw.imbalance", "F1.loop1"), off(30, "cw.imbalance", "F1.loop1"),
            on(70, "cw.imbalance", "F1.loop1"), off(100, "cw.imbalance", "F1.loop1"),
            on(200, "o2line.high", "F1.o2"), off(202, "o2line.high", "F1.o2"),
            on(300, "tc.hearth.high", "F1.tc1", pri=Priority.LOW),
        ],
    )  # fmt: skip
    await ack(store, "tc.hearth.high", "F1.tc1", 305)
    await journal(
        store,
        [
            on(310, "tc.hearth.high", "F1.tc1", sev=Severity.CRITICAL, pri=Priority.HIGH),
            off(400, "tc.hearth.high", "F1.tc1"),
        ],
    )
    k = strict_json(await alarm_kpis(aconn, SITE, START, START + timedelta(hours=1)))

    assert k["alarms"]["total"] == 7
    ch = k["chattering"]
    assert ch["count"] == 1
    assert ch["alerts"][0]["subject"] == "F1.fb"
    assert (ch["alerts"][0]["alarms"], ch["alerts"][0]["max_in_window"]) == (3, 3)
    assert ch["verdict"] == "above target"
    fleet = k["fleeting"]
    assert fleet["count"] == 1
    assert fleet["alerts"][0]["subject"] == "F1.o2"
    assert fleet["assumption"].startswith("[A]")
    top = k["top_contributors"]["contributors"]
    assert (top[0]["rule_id"], top[0]["subject"], top[0]["alarms"]) == (
        "freeboard.positive",
        "F1.fb",
        3,
    )
    assert top[0]["pct"] == round(100 * 3 / 7, 3)
    assert sum(c["alarms"] for c in top) == 7


@pytest.mark.asyncio
async def test_time_to_acknowledge_from_known_ack_times(
    store: AlertStore, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """Acks after 30, 60, 120 s and a reset of a latched critical after 100 s give median
    80 s, p90 114 s, max 120 s; an alarm re-raised after its acknowledged predecessor is not
    credited with that earlier ack; per priority the same figures split."""
    await journal(
        store,
        [
            on(0, "gas.co.level", "bay.co", pri=Priority.HIGH, asset="bay"),
            on(10, "gas.h2s.level", "bay.h2s", pri=Priority.MEDIUM, asset="bay"),
            on(20, "gas.so2.level", "bay.so2", pri=Priority.HIGH, asset="bay"),
            on(30, "o2line.low", "F1.o2", pri=Priority.LOW),
            on(400, "tc.hearth.high", "F1.tc1", sev=Severity.CRITICAL, pri=Priority.HIGH,
               latch=True),
            off(450, "tc.hearth.high", "F1.tc1"),
        ],
    )  # fmt: skip
    await ack(store, "gas.co.level", "bay.co", 30)
    await ack(store, "gas.h2s.level", "bay.h2s", 70)
    await ack(store, "gas.so2.level", "bay.so2", 140)
    await ack(store, "tc.hearth.high", "F1.tc1", 500, reset=True)
    await journal(
        store,
        [
            off(200, "gas.co.level", "bay.co", asset="bay"),
            on(300, "gas.co.level", "bay.co", pri=Priority.HIGH, asset="bay"),
        ],
    )
    k = strict_json(await alarm_kpis(aconn, SITE, START, START + timedelta(hours=1)))

    tta = k["time_to_ack"]
    assert (tta["alarms"], tta["acknowledged"], tta["unacknowledged"]) == (6, 4, 2)
    assert (tta["median_s"], tta["p90_s"], tta["max_s"]) == (80.0, 114.0, 120.0)
    high = tta["by_priority"]["high"]
    assert (high["alarms"], high["acknowledged"], high["unacknowledged"]) == (4, 3, 1)
    assert (high["median_s"], high["max_s"]) == (100.0, 120.0)
    assert tta["by_priority"]["medium"]["median_s"] == 60.0
    assert tta["by_priority"]["low"]["unacknowledged"] == 1
    assert tta["by_priority"]["urgent"] == {
        "alarms": 0, "acknowledged": 0, "unacknowledged": 0,
        "median_s": None, "p90_s": None, "max_s": None,
    }  # fmt: skip


@pytest.mark.asyncio
async def test_stale_alarms_per_day_priority_split_and_advisories(
    store: AlertStore, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """An alarm standing since 30 h before the period is stale on both days; one raised
    12 h in becomes stale on the second day; one cleared after 10 h never is; the anomaly
    advisory is counted apart and the priority split counts urgent with high."""
    h = 3600
    await journal(
        store,
        [
            on(-30 * h, "tc.hearth.high", "F1.tc1", pri=Priority.MEDIUM),
            on(10 * h, "tc.sidewall.high", "F1.tc2"),
            off(20 * h, "tc.sidewall.high", "F1.tc2"),
            on(12 * h, "shell.high", "F1.shell3", sev=Severity.CRITICAL, pri=Priority.HIGH),
            on(13 * h, "o2line.low", "F1.o2", pri=Priority.URGENT),
            off(13 * h + 60, "o2line.low", "F1.o2"),
            *(on(14 * h + i, "o2line.high", f"F1.o2-{i}") for i in range(3)),
            *(off(14 * h + 60, "o2line.high", f"F1.o2-{i}") for i in range(3)),
            on(1 * h, "anomaly.process", "F1.tc1", pri=Priority.ADVISORY),
        ],
    )
    k = strict_json(await alarm_kpis(aconn, SITE, START, START + timedelta(hours=48)))

    st = k["stale"]
    assert st["count"] == 2
    assert [d["stale"] for d in st["per_day"]] == [1, 2]
    assert [d["day_start"] for d in st["per_day"]] == [at(0), at(86_400)]
    assert {a["subject"] for a in st["alerts"]} == {"F1.tc1", "F1.shell3"}
    standing = next(a for a in st["alerts"] if a["subject"] == "F1.tc1")
    assert standing["active_since"] == at(-30 * h)
    assert standing["cleared_at"] is None
    assert standing["active_h"] == 78.0
    assert st["verdict"] == "ok"

    assert k["alarms"]["advisories"] == 1
    assert k["alarms"]["total"] == 6
    pr = k["priority"]
    assert pr["counts"] == {"low": 4, "medium": 0, "high": 1, "urgent": 1}
    assert pr["pct"] == {"low": round(400 / 6, 3), "medium": 0.0, "high": round(200 / 6, 3)}
    assert pr["target_pct"] == {"low": 80.0, "medium": 15.0, "high": 5.0}


@pytest.mark.asyncio
async def test_compliance_classifies_exceedances_by_the_pack_in_force(
    store: AlertStore, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """With the shipped pack in force (a later one not yet effective), a CO critical counts
    as KTD for its work area, an H2S TWA critical as NAB and an STEL critical as PSD, with
    durations clipped to the period; a warning, a process critical and an O2 critical do not
    count; acknowledging critical alarms is timed from the escalation and checked against
    the SLA."""
    await store.register_pack(PACK, PACK_BODY)
    future_body = PACK_BODY.replace('version = "2026.12.1"', 'version = "2027.6.1"', 1).replace(
        "effective = 2026-12-07", "effective = 2027-06-01", 1
    )
    future = dataclasses.replace(
        parse_pack(future_body),
        sha256=hashlib.sha256(future_body.encode()).hexdigest(),
    )
    await store.register_pack(future, future_body)
    await journal(
        store,
        [
            on(0, "gas.co.level", "bay.co", asset="bay", pri=Priority.MEDIUM),
            critical(60, "gas.co.level", "bay.co", asset="bay"),
            off(360, "gas.co.level", "bay.co", asset="bay"),
            critical(100, "gas.h2s.twa", "tap.h2s", asset="tapping-floor"),
            critical(-600, "gas.h2s.stel", "tap.h2s", asset="tapping-floor"),
            off(300, "gas.h2s.stel", "tap.h2s", asset="tapping-floor"),
            on(0, "gas.co.level", "yard.co", asset="yard", pri=Priority.MEDIUM),
            critical(200, "freeboard.positive", "F1.fb"),
            critical(500, "gas.o2.low", "bay.o2", asset="bay"),
        ],
    )
    await ack(store, "gas.co.level", "bay.co", 1260)
    await ack(store, "gas.h2s.twa", "tap.h2s", 400)
    await ack(store, "gas.o2.low", "bay.o2", 560)
    c = strict_json(await compliance_summary(aconn, SITE, START, START + timedelta(hours=1)))

    assert c["pack"]["version"] == PACK.version
    ex = c["exceedances"]
    assert ex["classified"] is True
    assert ex["rules"]["gas.co.level"] == "KTD"
    assert ex["rules"]["gas.h2s.twa"] == "NAB"
    assert ex["rules"]["gas.h2s.stel"] == "PSD"
    assert "gas.o2.low" not in ex["rules"]
    assert "hotwork.o2" not in ex["rules"]
    by = {a["asset"]: a for a in ex["by_asset"]}
    assert set(by) == {"bay", "tapping-floor"}
    assert by["bay"]["KTD"] == {"count": 1, "duration_s": 300.0}
    assert by["bay"]["NAB"] == {"count": 0, "duration_s": 0.0}
    assert by["tapping-floor"]["NAB"] == {"count": 1, "duration_s": 3500.0}
    assert by["tapping-floor"]["PSD"] == {"count": 1, "duration_s": 300.0}
    stel = next(e for e in ex["events"] if e["class"] == "PSD")
    assert (stel["start"], stel["end"]) == (at(-600), at(300))

    ak = c["ack_critical"]
    # CO escalated at 60 s, acked at 1260 s (1200 s); H2S 300 s; O2 60 s; freeboard waiting.
    assert (ak["alarms"], ak["acknowledged"], ak["unacknowledged"]) == (4, 3, 1)
    assert (ak["median_s"], ak["max_s"]) == (300.0, 1200.0)
    assert ak["p90_s"] == 1020.0
    assert ak["beyond_sla"] == 2
    assert ak["sla_s"] == 900.0
    strict = await compliance_summary(
        aconn, SITE, START, START + timedelta(hours=1), ack_sla_s=100.0
    )
    assert strict["ack_critical"]["beyond_sla"] == 3


def two_area_site() -> Site:
    """One gateway, two detectors in the bay (2 s) and one in the yard (5 s)."""

    def det(sid: str, kind: str, asset: str, period_s: float) -> Sensor:
        return Sensor(
            id=sid, kind=kind, unit="ppm", min_value=0.0, max_value=2000.0,
            period_s=period_s, asset=asset,
        )  # fmt: skip

    return Site(
        id=SITE,
        name="availability site",
        gateways=(
            Gateway(
                id="gw",
                sensors=(
                    det("bay.co", "area_co", "bay", 2.0),
                    det("bay.h2s", "area_h2s", "bay", 2.0),
                    det("yard.co", "area_co", "yard", 5.0),
                ),
            ),
        ),
    )


@pytest.mark.asyncio
async def test_availability_drops_when_readings_stop_and_open_findings_are_aged(
    database_url: str,
    db_schema: str,
    db: psycopg.Connection[Any],
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    """A detector silent for the second half of the hour reads 50 % available and is listed
    below 95 %, its work area 75 %; readings after the period do not count; open findings are
    listed with their age and the one past its due date flagged; with no pack recorded the
    exceedances say they could not be classified."""
    register(database_url, db_schema, two_area_site())
    keys = dict(db.execute("SELECT id, key FROM sensors WHERE site_id = %s", (SITE,)).fetchall())
    batch = Batch(started_mono_s=0.0)
    plan = [
        ("bay.co", 2, range(1800)),
        ("bay.h2s", 2, range(900)),  # stops half way
        ("bay.h2s", 2, range(1800, 1830)),  # after the period
        ("yard.co", 5, range(720)),
    ]
    for sid, period, steps in plan:
        for i in steps:
            batch.sensor_keys.append(keys[sid])
            batch.ts_us.append(T0 + i * period * S)
            batch.values.append(3.0)
            batch.qualities.append(0)
    rs = ReadingStore(database_url=database_url, schema=db_schema)
    try:
        assert await rs.commit_batch(batch) == 1800 + 900 + 30 + 720
    finally:
        await rs.close()

    day = timedelta(days=1)
    for asset, opened, closed, due in (
        ("F1", START - 10 * day, None, START - day),  # open, overdue
        ("bay", START - 2 * day, None, START + 30 * day),  # open, not due yet
        ("yard", START - 5 * day, START - day, None),  # closed before the period ended
        ("F2", START + 2 * day, None, None),  # opened after the period
    ):
        db.execute(
            "INSERT INTO findings (site_id, asset, opened_at, closed_at, due_at, agency,"
            " description, corrective_action) VALUES (%s, %s, %s, %s, %s, 'Disnaker',"
            " 'guarding missing', 'install guard')",
            (SITE, asset, opened, closed, due),
        )
    c = strict_json(await compliance_summary(aconn, SITE, START, START + timedelta(hours=1)))

    av = c["availability"]
    pct = {s["sensor"]: s["availability_pct"] for s in av["sensors"]}
    assert pct == {"bay.co": 100.0, "bay.h2s": 50.0, "yard.co": 100.0}
    assert av["below_threshold"] == ["bay.h2s"]
    assert {a["asset"]: a["availability_pct"] for a in av["assets"]} == {"bay": 75.0, "yard": 100.0}
    h2s = next(s for s in av["sensors"] if s["sensor"] == "bay.h2s")
    assert (h2s["expected"], h2s["received"]) == (1800.0, 900)

    fi = c["findings"]
    assert (fi["open"], fi["overdue"]) == (2, 1)
    assert [(f["asset"], f["overdue"]) for f in fi["list"]] == [("F1", True), ("bay", False)]
    assert fi["list"][0]["age_days"] == round(10 + 1 / 24, 3)

    assert c["pack"] is None
    assert c["exceedances"]["classified"] is False
    assert "no rule pack" in c["exceedances"]["note"]


@pytest.mark.asyncio
async def test_a_period_without_offset_or_length_is_refused(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    """Naive datetimes and an empty period are refused before any query runs."""
    with pytest.raises(KpiError, match="UTC offset"):
        await alarm_kpis(aconn, SITE, datetime(2026, 12, 8), START)  # noqa: DTZ001
    with pytest.raises(KpiError, match="empty"):
        await compliance_summary(aconn, SITE, START, START)
