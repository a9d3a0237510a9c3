"""Incident scenarios end to end: the simulator publishes each DOMAIN.md §6 scenario to a real
Mosquitto, the real ingest service stores and evaluates it with the shipped rule pack, and
the journal in the real database must show the scenario's expected alerts within their lead
times and none of its forbidden ones. A normal accelerated day raises no process alert."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from alerting.store import to_us
from simulator.fleet import load_scenario_fleet
from simulator.scenario import HOT_BASELINE_S, TAP_BASELINE_S, ObservedAlert, check, scenario
from tests.fix_broker import Broker
from tests.fix_ingest import (
    IngestProcess,
    all_stored,
    evaluated,
    open_scenario_permits,
    register,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.slow

SEED = 20231224
SPEED = "100000"


def _simulate(broker: Broker, *args: str) -> str:
    """Run `tungku simulate` to completion; return its stdout."""
    out = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "simulate", "--port", str(broker.port), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _observed(db: psycopg.Connection[Any], start_us: int) -> list[ObservedAlert]:
    # What operators were shown as safety alarms: activations recorded as suppressed by
    # design, and the anomaly detector's advisories, are left out.
    rows = db.execute(
        "SELECT rule_id, asset, severity, min(at) FROM alert_journal"
        " WHERE action = 'activate' AND to_state <> 'suppressed' AND priority <> 'advisory'"
        " GROUP BY 1, 2, 3"
    ).fetchall()
    return [ObservedAlert(r, a, s, (to_us(t) - start_us) / 1e6) for r, a, s, t in rows]


def _setup(database_url: str, db_schema: str) -> None:
    for site in load_scenario_fleet().sites():
        register(database_url, db_schema, site)


@pytest.mark.parametrize(
    "name",
    [
        "hot-work",
        "pump-trip",
        "tap-runout",
        "positive-pressure",
        "oxygen-enrichment",
        "slag-quench",
        "sensor-faults",
    ],
)
def test_scenario_raises_its_expected_alerts_in_time(
    name: str,
    broker: Broker,
    db: psycopg.Connection[Any],
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Each incident scenario raises the alerts its expectation lists, on the right asset,
    at the right severity, within its lead time, and none it forbids; the journal verifies."""
    sc = scenario(name)
    _setup(database_url, db_schema)
    start_ms = int(time.time() * 1000) - sc.duration_s * 1000 - 60_000
    # The facility record first (the hot-work permit), so the engine starts with it.
    open_scenario_permits(database_url, db_schema, sc, start_ms)
    svc = ingest_factory(mqtt_port=broker.port, sites=[sc.site])
    svc.start()
    out = _simulate(
        broker, "--scenario", name, "--seed", str(SEED), "--start-ms", str(start_ms),
        "--no-permits",
        "--speed", SPEED, "--quiet",
    )  # fmt: skip
    wait_for(all_stored(db, out), 120, "every acknowledged reading to be stored")
    wait_for(evaluated(svc), 120, "the engine to evaluate every stored reading")
    observed = _observed(db, start_ms * 1000)
    problems = check(sc, observed)
    assert not problems, "\n".join(problems) + "\n\nobserved:\n" + "\n".join(map(str, observed))
    if name == "hot-work":  # every sidewall thermocouple wears
        _assert_flagged_first(db, start_ms * 1000, HOT_BASELINE_S, "f1.sidewall.t0_", 4)
    if name == "tap-runout":  # the tap block climbs
        _assert_flagged_first(db, start_ms * 1000, TAP_BASELINE_S, "f1.sidewall.t01", 1)
    verify = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "journal", "verify"],
        env={**svc.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout


def _assert_flagged_first(
    db: psycopg.Connection[Any], start_us: int, ramp_s: int, subjects: str, need: int
) -> None:
    """A slow fault ramping in from plant second `ramp_s` is flagged by advisories on at least
    `need` of the sensors matching `subjects` (SQL LIKE) within its first 10 minutes, each
    before any safety alert on that sensor; each advisory explains itself."""
    wear_us = start_us + ramp_s * 1_000_000
    rows = db.execute(
        "SELECT subject, priority, at, reason, detail FROM alert_journal"
        " WHERE action = 'activate' AND subject LIKE %s AND at >= %s ORDER BY at",
        (subjects, datetime.fromtimestamp(wear_us / 1e6, UTC)),
    ).fetchall()
    first_adv: dict[str, int] = {}
    first_safety: dict[str, int] = {}
    for subject, priority, at, reason, detail in rows:
        t = to_us(at) - wear_us
        if priority == "advisory":
            first_adv.setdefault(subject, t)
            ex = detail["explanation"]
            assert ex["signal"] == subject
            assert ex["usual_low"] < ex["expected"] < ex["usual_high"]
            assert "expected about" in reason
        else:
            first_safety.setdefault(subject, t)
    early = {
        s: t for s, t in first_adv.items() if t <= 600_000_000 and t < first_safety.get(s, 1 << 62)
    }
    assert len(early) >= need, f"advisories {first_adv}, safety {first_safety}"


def test_a_normal_day_raises_no_process_alert_and_nothing_chatters(
    broker: Broker,
    db: psycopg.Connection[Any],
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """24 h of the normal plant (the scenario fleet, accelerated) raise no safety alert and
    nothing chatters; the only safety alerts are the gateways going offline as the simulator
    stops. Advisories stay within ISA-18.2's acceptable load for the site's one operator
    position: at most 1 per 10 minutes on average, and never a flood (10 in 10 minutes)."""
    _setup(database_url, db_schema)
    svc = ingest_factory(mqtt_port=broker.port, sites=["scenario-site"])
    svc.start()
    out = _simulate(
        broker, "--fleet", "simulator/fleets/scenario.toml", "--seed", "7", "--speed", SPEED,
        "--duration-s", "86400", "--quiet",
    )  # fmt: skip
    wait_for(all_stored(db, out), 300, "every acknowledged reading to be stored")
    wait_for(evaluated(svc), 300, "the engine to evaluate every stored reading")
    stored = scalar(db, "SELECT count(*) FROM readings")
    assert stored >= 86_400 * 30  # the whole day arrived (about 32 readings/s)
    activations = db.execute(
        "SELECT rule_id, subject, at FROM alert_journal WHERE action = 'activate'"
        " AND priority <> 'advisory' ORDER BY at"
    ).fetchall()
    advisories = [
        to_us(t)
        for (t,) in db.execute(
            "SELECT at FROM alert_journal WHERE action = 'activate' AND priority = 'advisory'"
        ).fetchall()
    ]
    assert len(advisories) <= 86_400 // 600, f"{len(advisories)} advisories in 24 h"
    per_10min = Counter(t // 600_000_000 for t in advisories)
    assert max(per_10min.values(), default=0) < 10, per_10min.most_common(3)
    per_minute = Counter((r, s, to_us(t) // 60_000_000) for r, s, t in activations)
    chatter = [k for k, n in per_minute.items() if n >= 3]
    assert not chatter, f"chattering alerts: {chatter}"
    during = [a for a in activations if a[0] != "health.gateway"]
    assert not during, f"a normal day raised alerts: {during[:20]}"
    # Gateways going offline as the simulator stops (10 s on-delay): at the very end, if at all.
    gateway = [to_us(t) for r, _s, t in activations if r == "health.gateway"]
    assert all(max(gateway) - t < 30_000_000 for t in gateway)
