"""Alerting across restarts and replays, end to end on the real broker and database.

A service killed mid-scenario resumes from its checkpoint and raises every alert exactly
once; the 8-hour TWA window survives a restart; `tungku replay` of the stored readings
reproduces the live journal, gives the same output twice, and shows what another pack
would have done; shelving, latching, suppression and escalation behave as specified."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from alerting.pack import default_pack_path, load_pack
from alerting.replay import Replayer
from alerting.store import AlertStore, to_us
from ingest.contract import encode_readings, readings_topic
from simulator.fleet import load_scenario_fleet
from simulator.scenario import scenario
from tests.fix_broker import Broker
from tests.fix_ingest import (
    IngestProcess,
    all_stored,
    co_detector_site,
    evaluated,
    open_scenario_permits,
    register,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.slow

SEED = 20231224


def _tungku(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _journal(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Engine entries as (at, rule, subject, action, severity, from, to), in time order."""
    rows = db.execute(
        "SELECT at, rule_id, subject, action, severity, from_state, to_state FROM alert_journal"
        " WHERE actor = 'engine'"
    ).fetchall()
    return sorted((to_us(r[0]), *r[1:]) for r in rows)


def _replayed(database_url: str, schema: str, sites: list[str]) -> list[tuple[Any, ...]]:
    """The same entries computed by replaying the stored readings in memory."""

    async def run() -> list[tuple[Any, ...]]:
        store = AlertStore(database_url=database_url, schema=schema)
        try:
            sensors = await store.sensors(sites)
            rp = Replayer(load_pack(default_pack_path()), sensors, await store.compliance())
            async for chunk in store.readings_between([s.key for s in sensors], None, None):
                rp.feed(*chunk)
        finally:
            await store.close()
        return sorted(
            (
                e["at_us"], e["rule_id"], e["subject"], e["action"], e["severity"],
                e["from_state"], e["to_state"],
            )
            for e in rp.result.entries
        )  # fmt: skip

    return asyncio.run(run())


@pytest.fixture
def scenario_site(database_url: str, db_schema: str) -> str:
    """The scenario fleet registered in the test schema."""
    for site in load_scenario_fleet().sites():
        register(database_url, db_schema, site)
    return "scenario-site"


def test_killed_mid_scenario_the_service_raises_each_alert_once_and_matches_replay(
    broker: Broker,
    db: psycopg.Connection[Any],
    database_url: str,
    db_schema: str,
    scenario_site: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """SIGKILL of the service while a pump-trip scenario streams in, then a restart: the
    journal holds each transition once, exactly the transitions a replay of the stored
    readings derives, and `tungku replay` prints the same twice."""
    sc = scenario("pump-trip")
    start_ms = int(time.time() * 1000) - sc.duration_s * 1000 - 60_000
    svc = ingest_factory(mqtt_port=broker.port, sites=[scenario_site], max_batch_rows=500)
    svc.start()
    sim = subprocess.Popen(
        [
            sys.executable, "-m", "ingest.cli", "simulate", "--port", str(broker.port),
            "--scenario", sc.name, "--no-permits", "--seed", str(SEED), "--start-ms", str(start_ms),
            "--speed", "3000", "--quiet",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_for(
        lambda: scalar(db, "SELECT count(*) FROM alert_journal") >= 3,
        120,
        "the first alerts to be journaled",
    )
    svc.kill()
    time.sleep(1.0)
    svc.start()
    out, _ = sim.communicate(timeout=300)
    assert sim.returncode == 0
    wait_for(all_stored(db, out), 120, "every acknowledged reading to be stored")
    wait_for(evaluated(svc), 120, "the engine to evaluate every stored reading")
    live = _journal(db)
    assert live, "the scenario raised nothing"
    dupes = [k for k, n in Counter(live).items() if n > 1]
    assert not dupes, f"transitions journaled twice: {dupes}"
    replayed = _replayed(database_url, db_schema, [scenario_site])
    only_live = sorted(set(live) - set(replayed))
    only_replay = sorted(set(replayed) - set(live))
    assert live == replayed, f"only live: {only_live[:10]}\nonly replay: {only_replay[:40]}"
    # The CLI: deterministic, and its journal hash is the same on a second run.
    env = dict(svc.env)
    first = _tungku(env, "replay", "--site", scenario_site)
    second = _tungku(env, "replay", "--site", scenario_site)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "cw.pump_trip" in first.stdout
    assert f"{len(live)} transitions" in first.stdout.splitlines()[-1]


def test_replay_with_another_pack_shows_what_a_rule_change_would_have_done(
    broker: Broker,
    db: psycopg.Connection[Any],
    scenario_site: str,
    tmp_path: Path,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """`tungku replay --pack` with the CO warning level removed drops the CO warnings the
    live pack raised in the positive-pressure scenario, and nothing else changes; a broken
    pack is refused with its problems."""
    sc = scenario("positive-pressure")
    start_ms = int(time.time() * 1000) - sc.duration_s * 1000 - 60_000
    svc = ingest_factory(mqtt_port=broker.port, sites=[scenario_site])
    svc.start()
    sim = _tungku(
        dict(svc.env), "simulate", "--port", str(broker.port), "--scenario", sc.name,
        "--no-permits",
        "--seed", str(SEED), "--start-ms", str(start_ms), "--speed", "100000", "--quiet",
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    wait_for(all_stored(db, sim.stdout), 120, "every acknowledged reading to be stored")
    wait_for(evaluated(svc), 120, "the engine to evaluate every stored reading")
    text = default_pack_path().read_text("utf-8")
    block = text.index('id = "gas.co.level"')
    warn = text.index("[rule.warning]", block)
    end = text.index("[rule.", warn + 1)
    changed = text[:warn] + text[end:]
    other = tmp_path / "co-500.toml"
    other.write_text(changed.replace('version = "', 'version = "what-if-', 1), "utf-8")
    env = dict(svc.env)
    base = _tungku(env, "replay", "--site", scenario_site)
    what_if = _tungku(env, "replay", "--site", scenario_site, "--pack", str(other))
    assert base.returncode == 0, base.stderr
    assert what_if.returncode == 0, what_if.stderr
    co_warn = [
        ln for ln in base.stdout.splitlines() if " gas.co.level " in ln and " warning " in ln
    ]
    assert co_warn, "the live pack raised no CO warning in this scenario"
    assert not [
        ln for ln in what_if.stdout.splitlines() if " gas.co.level " in ln and " warning " in ln
    ]
    strip = lambda out: [ln for ln in out.splitlines()[:-1] if " gas.co.level " not in ln]  # noqa: E731
    assert strip(base.stdout) == strip(what_if.stdout)
    broken = tmp_path / "broken.toml"
    broken.write_text(text.replace('kind = "threshold"', 'kind = "thresold"', 1), "utf-8")
    refused = _tungku(env, "replay", "--pack", str(broken))
    assert refused.returncode == 2
    assert "thresold" in refused.stderr


CO_SITE = "twa-site"


def _publish_co(port: int, rows: list[tuple[int, float]], seq0: int) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=MQTTProtocolVersion.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for i, (ts_ms, v) in enumerate(rows):
            body = encode_readings(
                "gw", seq0 + i, [{"sensor": "bay.co", "ts": ts_ms, "value": v, "unit": "ppm"}]
            )
            info = c.publish(readings_topic(CO_SITE, "gw"), body, qos=1)
            info.wait_for_publish(timeout=10)
    finally:
        c.disconnect()
        c.loop_stop()


def test_the_8h_twa_window_survives_a_restart(
    broker: Broker,
    db: psycopg.Connection[Any],
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """5 h of CO at 20 ppm, a SIGKILL and restart, then 40 ppm: the NAB (25 ppm) TWA alert
    comes when 5 h at 20 and the new 40 average to 25 — as without the restart — not at
    once, which is what a service that forgot its window would do."""
    register(database_url, db_schema, co_detector_site(CO_SITE, 60.0))
    t0 = (int(time.time()) - 10 * 3600) // 60 * 60 * 1000
    before = [(t0 + i * 60_000, 20.0) for i in range(300)]
    after = [(t0 + (300 + i) * 60_000, 40.0) for i in range(180)]
    svc = ingest_factory(mqtt_port=broker.port, sites=[CO_SITE])
    svc.start()
    _publish_co(broker.port, before, 0)
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") == 300, 60, "5 h stored")
    wait_for(evaluated(svc), 60, "the first 5 h to be evaluated")
    time.sleep(6.0)  # a periodic checkpoint (every 5 s) covers them
    svc.kill()
    svc.start()
    _publish_co(broker.port, after, 300)
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") == 480, 60, "the rest stored")
    wait_for(evaluated(svc), 60, "the rest to be evaluated")
    twa = db.execute(
        "SELECT at, severity, value FROM alert_journal WHERE rule_id = 'gas.co.twa'"
        " AND action = 'activate' ORDER BY at"
    ).fetchall()
    assert [s for _, s, _ in twa] == ["warning", "critical"]
    crit_at_h = (to_us(twa[1][0]) / 1000 - t0) / 3_600_000
    assert crit_at_h == pytest.approx(5 + 5 / 3, abs=0.05)  # (20*5 + 40*x)/(5+x) = 25
    assert twa[1][2] == pytest.approx(25.0, abs=0.3)


def test_operator_flow_latch_shelve_suppression_and_escalation(
    broker: Broker,
    db: psycopg.Connection[Any],
    database_url: str,
    db_schema: str,
    scenario_site: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Pump trip with an open inspection finding on the cooling header: the pump-trip alert
    is escalated one priority level and says why; once the pumps restart it stays latched
    until an operator resets it; a shelved alert is hidden with its reason; and in the
    hot-work scenario's stopped furnace the energised-only rules are recorded as suppressed."""
    sc = scenario("pump-trip")
    start_ms = int(time.time() * 1000) - sc.duration_s * 1000 - 60_000
    env = {
        **os.environ,
        "TUNGKU_DATABASE_URL": database_url,
        "TUNGKU_DB_SCHEMA": db_schema,
    }
    when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start_ms / 1000 - 86_400))
    made = _tungku(
        env, "facility", "finding", "--site", scenario_site, "--asset", "CW-H1",
        "--text", "pump 2 seal leaking", "--from", when,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    svc = ingest_factory(mqtt_port=broker.port, sites=[scenario_site])
    svc.start()
    sim = _tungku(
        env, "simulate", "--port", str(broker.port), "--scenario", sc.name, "--seed", str(SEED),
        "--no-permits",
        "--start-ms", str(start_ms), "--speed", "100000", "--quiet",
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    wait_for(all_stored(db, sim.stdout), 120, "every acknowledged reading to be stored")
    wait_for(evaluated(svc), 120, "the engine to evaluate every stored reading")
    trip = db.execute(
        "SELECT id, priority, escalated_by, state FROM alerts WHERE rule_id = 'cw.pump_trip'"
        " ORDER BY id LIMIT 1"
    ).fetchone()
    assert trip is not None
    alert_id, priority, escalated_by, state = trip
    assert priority == "urgent"  # high, raised one level
    assert escalated_by == ["open inspection finding on CW-H1"]
    assert state == "latched"  # the pumps restarted; a critical alert waits for a reset
    reset = _tungku(env, "alert", "reset", str(alert_id), "--user", "sari", "--reason", "pump ok")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert "latched -> normal" in reset.stdout
    # Shelve another active one: hidden, with reason and expiry, and journaled with the user.
    other = db.execute(
        "SELECT id FROM alerts WHERE state IN ('unack', 'ack', 'latched', 'rtn_unack')"
        " ORDER BY id LIMIT 1"
    ).fetchone()
    assert other is not None
    shelved = _tungku(
        env, "alert", "shelve", str(other[0]), "--user", "budi", "--for", "2h",
        "--reason", "panel crew on it",
    )  # fmt: skip
    assert shelved.returncode == 0, shelved.stdout + shelved.stderr
    row = db.execute(
        "SELECT state, shelve_reason, shelved_until > now() FROM alerts WHERE id = %s", other
    ).fetchone()
    assert row == ("shelved", "panel crew on it", True)
    entry = db.execute(
        "SELECT actor, action, detail FROM alert_journal WHERE alert_id = %s ORDER BY seq DESC"
        " LIMIT 1",
        other,
    ).fetchone()
    assert entry is not None
    assert entry[:2] == ("budi", "shelve")
    assert "until" in entry[2]
    assert _tungku(env, "journal", "verify").returncode == 0


def test_a_stopped_furnace_records_energised_rules_as_suppressed(
    broker: Broker,
    db: psycopg.Connection[Any],
    database_url: str,
    db_schema: str,
    scenario_site: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """In the hot-work scenario the furnace is off: rules that only apply while it is
    energised (the electrodes' stuck check) are journaled as suppressed by design — kept
    on record, never shown as active — while the hot-work interlock fires."""
    sc = scenario("hot-work")
    start_ms = int(time.time() * 1000) - sc.duration_s * 1000 - 60_000
    open_scenario_permits(database_url, db_schema, sc, start_ms)
    svc = ingest_factory(mqtt_port=broker.port, sites=[scenario_site])
    svc.start()
    sim = _tungku(
        dict(svc.env), "simulate", "--port", str(broker.port), "--scenario", sc.name,
        "--no-permits",
        "--seed", str(SEED), "--start-ms", str(start_ms), "--speed", "100000", "--quiet",
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    wait_for(all_stored(db, sim.stdout), 120, "every acknowledged reading to be stored")
    wait_for(evaluated(svc), 120, "the engine to evaluate every stored reading")
    suppressed = db.execute(
        "SELECT DISTINCT rule_id, reason FROM alert_journal WHERE action = 'suppress'"
    ).fetchall()
    rules = {r for r, _ in suppressed}
    assert any(r.startswith("health.stuck.electrode") for r in rules), suppressed
    assert all("energised" in why for r, why in suppressed if r.startswith("health.stuck.e"))
    shown = db.execute(
        "SELECT count(*) FROM alerts WHERE rule_id LIKE 'health.stuck.electrode%'"
        " AND state <> 'suppressed'"
    ).fetchone()
    assert shown == (0,)
    interlock = db.execute(
        "SELECT bool_or(severity = 'critical') FROM alert_journal WHERE rule_id = 'hotwork.tc'"
    ).fetchone()
    assert interlock == (True,)
