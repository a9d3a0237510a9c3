"""The alert store against the real database: lifecycle through rows, the hash-chained
append-only journal, operator actions, NOTIFY, the webhook outbox and the CLI on top."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from alerting import lifecycle
from alerting.engine import ConditionEvent, EventKind
from alerting.pack import Priority, Severity, default_pack_path, load_pack
from alerting.store import NOTIFY_CHANNEL, ActionError, AlertStore, Subject, to_us
from alerting.webhook import WebhookEndpoint
from tests.fix_ingest import co_detector_site, register

PACK = load_pack(default_pack_path())
T0 = 1_800_000_000_000_000  # event time, us


def activate(t: int, sev: Severity = Severity.CRITICAL, *, latch: bool = True) -> ConditionEvent:
    return ConditionEvent(
        t, "site-a", "tapping-floor", "gas.co.level", "tapping-floor.co", "CO", EventKind.ACTIVATE,
        severity=sev, priority=Priority.HIGH, latch=latch, value=250.0, limit=200.0,
        reason="value 250 above the critical limit 200",
    )  # fmt: skip


def clear(t: int) -> ConditionEvent:
    return ConditionEvent(
        t, "site-a", "tapping-floor", "gas.co.level", "tapping-floor.co", "CO", EventKind.CLEAR,
        value=3.0, reason="returned to normal",
    )  # fmt: skip


SUBJECT = Subject("site-a", "gas.co.level", "tapping-floor.co")


@pytest_asyncio.fixture
async def store(database_url: str, db_schema: str) -> AsyncIterator[AlertStore]:
    """An alert store on the test's schema."""
    s = AlertStore(database_url=database_url, schema=db_schema)
    yield s
    await s.close()


def cli(database_url: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `tungku` against the test schema."""
    env = {**os.environ, "TUNGKU_DATABASE_URL": database_url, "TUNGKU_DB_SCHEMA": schema}
    return subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.asyncio
async def test_latched_critical_needs_ack_and_reset_and_every_step_is_journaled(
    store: AlertStore,
) -> None:
    """A latching critical alert goes unack -> latched on clear, an operator acknowledges
    and resets it, and the journal holds each step with actor, value and limit."""
    await store.apply([activate(T0)], pack=PACK, scope="*", state=b"s1")
    row = await store.find_alert(SUBJECT)
    assert row is not None
    assert row.state.state is lifecycle.State.UNACK
    await store.apply([clear(T0 + 60_000_000)], pack=PACK, scope="*", state=b"s2")
    row = await store.find_alert(SUBJECT)
    assert row is not None
    assert row.state.state is lifecycle.State.LATCHED
    await store.act(row.id, lifecycle.Acknowledge(at_us=T0 + 70_000_000, actor="sari"))
    entry = await store.act(row.id, lifecycle.Reset(at_us=T0 + 80_000_000, actor="sari"))
    assert (entry["actor"], entry["action"], entry["to_state"]) == ("sari", "reset", "normal")
    rows = await store.journal_rows(alert_id=row.id)
    assert [(r["actor"], r["action"], r["to_state"]) for r in rows] == [
        ("engine", "activate", "unack"),
        ("engine", "clear", "latched"),
        ("sari", "acknowledge", "latched"),
        ("sari", "reset", "normal"),
    ]
    assert (rows[0]["value"], rows[0]["limit"]) == (250.0, 200.0)
    assert rows[0]["pack_version"] == PACK.version
    assert rows[0]["at_us"] == T0
    assert (await store.verify_journal()).ok


@pytest.mark.asyncio
async def test_refused_actions_name_the_reason_and_write_nothing(store: AlertStore) -> None:
    """Resetting an alert whose condition is still active is refused with a message, and
    the journal does not grow."""
    await store.apply([activate(T0)], pack=PACK, scope="*", state=None)
    row = await store.find_alert(SUBJECT)
    assert row is not None
    before = len(await store.journal_rows())
    with pytest.raises(ActionError, match=f"alert {row.id}:"):
        await store.act(row.id, lifecycle.Reset(at_us=T0 + 1, actor="sari"))
    with pytest.raises(ActionError, match="no alert 999999"):
        await store.act(999_999, lifecycle.Acknowledge(at_us=T0 + 1, actor="sari"))
    assert len(await store.journal_rows()) == before


@pytest.mark.asyncio
async def test_shelve_expires_by_itself(store: AlertStore) -> None:
    """A shelved alert unshelves itself once its expiry passes, back to the state its
    condition implies, and the expiry is journaled."""
    await store.apply([activate(T0, latch=False)], pack=PACK, scope="*", state=None)
    row = await store.find_alert(SUBJECT)
    assert row is not None
    await store.act(
        row.id,
        lifecycle.Shelve(
            at_us=T0, actor="budi", reason="detector being serviced", until_us=T0 + 10
        ),
    )
    assert await store.expire_shelves(T0 + 5) == 0
    assert await store.expire_shelves(T0 + 10) == 1
    row = await store.find_alert(SUBJECT)
    assert row is not None
    assert row.state.state is lifecycle.State.UNACK
    actions = [r["action"] for r in await store.journal_rows(alert_id=row.id)]
    assert actions == ["activate", "shelve", "shelve_expired"]


@pytest.mark.asyncio
async def test_journal_refuses_update_delete_and_truncate(
    store: AlertStore, db: psycopg.Connection[Any]
) -> None:
    """The database itself refuses to change or remove journal entries."""
    await store.apply([activate(T0)], pack=PACK, scope="*", state=None)
    for stmt in (
        "UPDATE alert_journal SET reason = 'nothing happened'",
        "DELETE FROM alert_journal",
        "TRUNCATE alert_journal",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            db.execute(stmt)
    assert db.execute("SELECT count(*) FROM alert_journal").fetchone() == (1,)


@pytest.mark.asyncio
async def test_verify_finds_a_tampered_entry_and_a_cut_tail(
    store: AlertStore, db: psycopg.Connection[Any], database_url: str, db_schema: str
) -> None:
    """Someone with the power to disable the trigger edits one entry, or deletes the last:
    `tungku journal verify` names the entry and exits 1."""
    await store.apply(
        [activate(T0), clear(T0 + 1_000_000), activate(T0 + 2_000_000)],
        pack=PACK,
        scope="*",
        state=None,
    )
    ok = cli(database_url, db_schema, "journal", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "journal intact: 3 entries" in ok.stdout
    db.execute("ALTER TABLE alert_journal DISABLE TRIGGER alert_journal_no_update")
    db.execute("UPDATE alert_journal SET value = 20.0 WHERE seq = 2")
    bad = cli(database_url, db_schema, "journal", "verify")
    assert bad.returncode == 1
    assert "entry 2: content does not match its hash (altered)" in bad.stdout
    db.execute("UPDATE alert_journal SET value = 3.0 WHERE seq = 2")
    assert cli(database_url, db_schema, "journal", "verify").returncode == 0
    db.execute("DELETE FROM alert_journal WHERE seq = 3")
    cut = cli(database_url, db_schema, "journal", "verify")
    assert cut.returncode == 1
    assert "entries removed from the end" in cut.stdout


@pytest.mark.asyncio
async def test_transitions_are_notified_on_commit(
    store: AlertStore, database_url: str, db_schema: str
) -> None:
    """A LISTEN tungku_alerts session hears each committed transition with its state."""
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        await store.apply([activate(T0)], pack=PACK, scope="*", state=None)
        gen = conn.notifies(timeout=5.0)
        note = await anext(gen)
        await gen.aclose()
    finally:
        await conn.close()
    import orjson  # noqa: PLC0415

    payload = orjson.loads(note.payload)
    assert payload["rule_id"] == "gas.co.level"
    assert payload["to_state"] == "unack"
    assert payload["seq"] == 1


@pytest.mark.asyncio
async def test_webhook_outbox_gets_one_row_per_transition_and_endpoint(
    database_url: str, db_schema: str, db: psycopg.Connection[Any]
) -> None:
    """With two endpoints configured, each journal entry queues exactly two deliveries, in
    the same transaction as the entry."""
    hooks = [
        WebhookEndpoint(name="scada", url="http://127.0.0.1:9/a", secret=b"x" * 16),
        WebhookEndpoint(name="pager", url="http://127.0.0.1:9/b", secret=b"y" * 16),
    ]
    s = AlertStore(database_url=database_url, schema=db_schema, webhooks=hooks)
    try:
        await s.apply([activate(T0), clear(T0 + 1_000_000)], pack=PACK, scope="*", state=None)
    finally:
        await s.close()
    rows = db.execute("SELECT journal_seq, endpoint FROM webhook_outbox ORDER BY 1, 2").fetchall()
    assert rows == [(1, "pager"), (1, "scada"), (2, "pager"), (2, "scada")]


@pytest.mark.asyncio
async def test_concurrent_appenders_keep_one_chain(database_url: str, db_schema: str) -> None:
    """Two processes' worth of stores appending at once still make one contiguous,
    verifiable chain (the head row serialises them)."""
    stores = [AlertStore(database_url=database_url, schema=db_schema) for _ in range(2)]

    async def burst(s: AlertStore, site: str) -> None:
        for i in range(15):
            ev = activate(T0 + i * 2_000_000)
            ev2 = clear(T0 + i * 2_000_000 + 1_000_000)
            await s.apply(
                [
                    ConditionEvent(**{**_fields(ev), "site": site}),
                    ConditionEvent(**{**_fields(ev2), "site": site}),
                ],
                pack=PACK,
                scope=site,
                state=None,
            )

    try:
        await asyncio.gather(burst(stores[0], "site-a"), burst(stores[1], "site-b"))
        v = await stores[0].verify_journal()
    finally:
        for s in stores:
            await s.close()
    assert v.ok, v.problems
    assert v.entries == 60


@pytest.mark.asyncio
async def test_operator_cli_acknowledges_and_lists(
    store: AlertStore, database_url: str, db_schema: str
) -> None:
    """`tungku alert list` shows the alert; `tungku alert ack --user` acknowledges it and a
    second ack is refused with the reason."""
    await store.apply([activate(T0)], pack=PACK, scope="*", state=None)
    row = await store.find_alert(SUBJECT)
    assert row is not None
    listed = cli(database_url, db_schema, "alert", "list")
    assert listed.returncode == 0, listed.stderr
    assert "gas.co.level" in listed.stdout
    assert "unack" in listed.stdout
    ack = cli(database_url, db_schema, "alert", "ack", str(row.id), "--user", "sari")
    assert ack.returncode == 0, ack.stdout + ack.stderr
    assert "unack -> ack" in ack.stdout
    again = cli(database_url, db_schema, "alert", "ack", str(row.id), "--user", "sari")
    assert again.returncode == 1
    assert "refused" in again.stdout
    shown = cli(database_url, db_schema, "alert", "show", str(row.id))
    assert "sari" in shown.stdout


def _fields(ev: ConditionEvent) -> dict[str, Any]:
    return {f: getattr(ev, f) for f in ConditionEvent.__slots__}  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_facility_record_from_the_cli_escalates_by_late_report_and_expired_smk3(
    store: AlertStore, database_url: str, db_schema: str
) -> None:
    """A report past due and not submitted, and an SMK3 certificate past its expiry, entered
    with `tungku facility`, are what the engine sees as reasons to escalate at that time."""
    steps = [
        ("facility", "identity", "--site", "site-a", "--company", "PT Contoh Nikel",
         "--iui", "IUI-123", "--estate", "IMIP"),
        ("facility", "report", "--site", "site-a", "--period", "2026-S2",
         "--due", "2026-07-31T00:00:00+00:00"),
        ("facility", "smk3", "--site", "site-a", "--expires", "2026-09-30"),
    ]  # fmt: skip
    for args in steps:
        done = cli(database_url, db_schema, *args)
        assert done.returncode == 0, done.stderr
    comp = await store.compliance()
    july = to_us(datetime(2026, 7, 15, tzinfo=UTC))
    august = to_us(datetime(2026, 8, 15, tzinfo=UTC))
    october = to_us(datetime(2026, 10, 1, 0, 0, 1, tzinfo=UTC))
    assert comp.escalation("site-a", "F1", july) == []
    assert comp.escalation("site-a", "F1", august) == ["periodic report late: 2026-S2"]
    assert comp.escalation("site-a", "F1", october) == [
        "SMK3 certificate expired",
        "periodic report late: 2026-S2",
    ]
    done = cli(
        database_url, db_schema, "facility", "report", "--site", "site-a", "--period", "2026-S2",
        "--due", "2026-07-31T00:00:00+00:00", "--submitted", "2026-08-20T00:00:00+00:00",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    comp = await store.compliance()
    assert comp.escalation("site-a", "F1", august) == ["periodic report late: 2026-S2"]
    assert comp.escalation("site-a", "F1", to_us(datetime(2026, 8, 21, tzinfo=UTC))) == []


@pytest.mark.asyncio
async def test_events_rederived_after_a_crash_are_applied_once(store: AlertStore) -> None:
    """An engine restarted from an older checkpoint derives again the events since then;
    the ones already applied are skipped, the new ones applied, so each is journaled once."""
    first = [activate(T0), clear(T0 + 1_000_000)]
    await store.apply(first, pack=PACK, scope="*", state=None)
    again = [*first, activate(T0 + 2_000_000)]  # replayed from the older checkpoint
    entries = await store.apply(again, pack=PACK, scope="*", state=None)
    assert [e["at_us"] for e in entries] == [T0 + 2_000_000]
    rows = await store.journal_rows()
    assert [(r["action"], r["at_us"]) for r in rows] == [
        ("activate", T0),
        ("clear", T0 + 1_000_000),
        ("activate", T0 + 2_000_000),
    ]


def test_replay_of_a_recorded_file_prints_the_transitions_it_would_journal(
    database_url: str, db_schema: str, tmp_path: Path
) -> None:
    """`tungku replay --recorded` runs a `simulate --record` CSV through the pack: CO above
    25 ppm for more than the 5-s on-delay raises gas.co.level, nothing is written, and an
    unknown sensor in the file is named."""
    site = co_detector_site("rec-site", 2.0)
    register(database_url, db_schema, site)
    t0 = 1_795_000_000_000
    rows = [f"rec-site,bay.co,{t0 + i * 2000},{4.0 if i < 10 else 40.0}" for i in range(20)]
    good = tmp_path / "rec.csv"
    good.write_text("site,sensor,ts_ms,value\n" + "\n".join(rows) + "\n", "utf-8")
    out = cli(database_url, db_schema, "replay", "--site", "rec-site", "--recorded", str(good))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(" gas.co.level bay.co activate normal->unack warning " in ln for ln in lines)
    assert "replayed 20 readings" in lines[-1]
    bad = tmp_path / "bad.csv"
    bad.write_text("site,sensor,ts_ms,value\nrec-site,ghost,1,2\n", "utf-8")
    refused = cli(database_url, db_schema, "replay", "--recorded", str(bad))
    assert refused.returncode == 2
    assert "rec-site/ghost unknown" in refused.stderr


@pytest.mark.asyncio
async def test_catch_up_reads_only_up_to_the_dropped_batches(
    database_url: str, db_schema: str
) -> None:
    """After a full hand-over queue the evaluator reads what it missed from the database, but
    only up to the dropped batches: a later batch another ingest writer committed first is
    left for its turn, so an earlier batch handed over next is not mistaken for a redelivery
    (its readings skipped, and the sensor reported silent)."""
    from alerting.evaluator import Committed, Evaluator  # noqa: PLC0415 - this test only

    register(database_url, db_schema, co_detector_site("catch-site", 2.0))
    with psycopg.connect(database_url, autocommit=True) as conn:
        key = conn.execute(
            f'SELECT key FROM "{db_schema}".sensors WHERE site_id = %s', ("catch-site",)
        ).fetchone()[0]

    def rows(first: int, n: int) -> list[tuple[int, datetime, float, int]]:
        return [
            (key, datetime.fromtimestamp((T0 + (first + i) * 2_000_000) / 1e6, UTC), 3.0, 0)
            for i in range(n)
        ]

    def insert(batch: list[tuple[int, datetime, float, int]]) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.cursor().executemany(
                f'INSERT INTO "{db_schema}".readings (sensor_key, ts, value, quality)'
                " VALUES (%s, %s, %s, %s)",
                batch,
            )

    def committed(batch: list[tuple[int, datetime, float, int]]) -> Committed:
        return Committed(
            [r[0] for r in batch], [to_us(r[1]) for r in batch], [r[2] for r in batch],
            [r[3] for r in batch],
        )  # fmt: skip

    store = AlertStore(database_url=database_url, schema=db_schema)
    ev = Evaluator(store=store, pack=PACK, pack_body="", sites=("catch-site",))
    try:
        await ev.start()
        insert(rows(0, 10))  # evaluated before the queue filled
        await ev.evaluate(committed(rows(0, 10)))
        assert ev.engine.watermarks()[key] == T0 + 9 * 2_000_000
        dropped, earlier, later = rows(10, 10), rows(20, 10), rows(30, 10)
        insert(dropped)  # writer 1: not handed over (queue full)
        insert(later)  # writer 2 commits its later batch before writer 1's next one
        marker = Committed([], [], [], [], catch_up=True, upto={})
        marker.add_upto([r[0] for r in dropped], [to_us(r[1]) for r in dropped])
        await ev.evaluate(marker)
        insert(earlier)
        await ev.evaluate(committed(earlier))
        await ev.evaluate(committed(later))
        assert ev.engine.skipped == 0
        assert ev.engine.watermarks()[key] == T0 + 39 * 2_000_000
    finally:
        await ev.close()
