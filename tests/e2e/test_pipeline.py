"""End to end: the simulator publishes a fleet's readings through a real Mosquitto to the
real ingest service and TimescaleDB; the database ends with exactly those readings, once
each, across a SIGKILL of the service, a restart of PostgreSQL and a restart of the broker."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from ingest.migrate import session_sql
from ingest.registry import parse_site
from tests.fix_broker import Broker
from tests.fix_ingest import IngestProcess, register, unique_site, wait_for

pytestmark = pytest.mark.slow


class Fleet:
    """The shipped default fleet under site ids of the test's own, and its registry."""

    def __init__(self, tmp: Path, database_url: str, schema: str) -> None:
        prefix = unique_site()
        text = resources.files("simulator").joinpath("fleets/default.toml").read_text("utf-8")
        text = text.replace('id = "morowali-a"', f'id = "{prefix}-a"').replace(
            'id = "morowali-b"', f'id = "{prefix}-b"'
        )
        self.sites = [f"{prefix}-a", f"{prefix}-b"]
        self.path = tmp / "fleet.toml"
        self.path.write_text(text)
        out = tmp / "registry"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ingest.cli",
                "fleet",
                "export",
                "--fleet",
                str(self.path),
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        for site_file in sorted(out.glob("*.toml")):
            register(database_url, schema, parse_site(site_file.read_text(), str(site_file)))


def simulate(fleet: Fleet, broker: Broker, tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start `tungku simulate` against the broker, recording what it generates."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingest.cli",
            "simulate",
            "--fleet",
            str(fleet.path),
            "--port",
            str(broker.port),
            "--spool-dir",
            str(tmp / "spool"),
            "--record",
            str(tmp / "record.csv"),
            "--quiet",
            "--ack-timeout-s",
            "120",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(sim: subprocess.Popen[bytes]) -> None:
    """Wait for the simulator; it must report every reading acknowledged by the broker."""
    out, err = sim.communicate(timeout=240)
    assert sim.returncode == 0, (out + err).decode()


def recorded(tmp: Path) -> tuple[int, str]:
    """Number and checksum of the readings the simulator generated."""
    with (tmp / "record.csv").open(newline="") as f:
        rows = [
            f"{site},{sensor},{int(ts)},{float(value)!r}"
            for site, sensor, ts, value in csv.reader(f)
            if site != "site"
        ]
    return len(rows), hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def stored(database_url: str, schema: str) -> tuple[int, str]:
    """Number and checksum of the readings in the database, in the same form."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(session_sql(schema))
        rows = [
            f"{site},{sensor},{ts_ms},{value!r}"
            for site, sensor, ts_ms, value in conn.execute(
                "SELECT s.site_id, s.id, (extract(epoch FROM r.ts) * 1000)::bigint, r.value"
                " FROM readings r JOIN sensors s ON s.key = r.sensor_key"
            )
        ]
    return len(rows), hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


def row_count(database_url: str, schema: str) -> int:
    """Readings in the table now; 0 while the database is unreachable."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=2) as conn:
            conn.execute(session_sql(schema))
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
            return int(row[0]) if row else 0
    except psycopg.OperationalError:
        return 0


def assert_exactly_once(
    tmp: Path, database_url: str, schema: str, *services: IngestProcess
) -> None:
    """Once ingest is idle, the database holds exactly the generated readings, same values."""
    n, digest = recorded(tmp)
    wait_for(lambda: row_count(database_url, schema) >= n, 120, f"{n} readings in the database")
    for svc in services:
        wait_for(
            lambda svc=svc: (svc.metrics() or {}).get("tungku_unacked_messages") == 0,
            30,
            "every message acknowledged",
        )
    time.sleep(1.0)  # anything still in flight would now show up as an extra row
    assert stored(database_url, schema) == (n, digest)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(session_sql(schema))
        rejects = conn.execute("SELECT reason, detail FROM rejects LIMIT 5").fetchall()
    assert rejects == []


def start_mid_stream(
    fleet: Fleet,
    broker: Broker,
    tmp: Path,
    database_url: str,
    schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> tuple[IngestProcess, subprocess.Popen[bytes]]:
    """Start the service and a 300 s plant at 40x (about 83k readings in 7 s); return once
    the first 5,000 readings are committed, so whatever the test breaks next breaks mid-stream."""
    svc = ingest_factory(mqtt_port=broker.port, sites=fleet.sites)
    svc.start()
    sim = simulate(fleet, broker, tmp, "--speed", "40", "--duration-s", "300")
    wait_for(lambda: row_count(database_url, schema) > 5000, 60, "ingest under way")
    return svc, sim


@pytest.fixture
def fleet(tmp_path: Path, database_url: str, db_schema: str) -> Fleet:
    """The default fleet, registered under this test's site ids."""
    return Fleet(tmp_path, database_url, db_schema)


def test_simulated_fleet_lands_exactly_once_with_identical_values(
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """N readings from 9 gateways on 2 sites end up in the database exactly, value for value."""
    svc = ingest_factory(mqtt_port=broker.port, sites=fleet.sites)
    svc.start()
    finish(simulate(fleet, broker, tmp_path, "--count", "50000"))
    assert recorded(tmp_path)[0] == 50_000
    assert_exactly_once(tmp_path, database_url, db_schema, svc)
    online = (svc.metrics() or {}).get("tungku_gateways_online")
    assert online == 0  # the simulator said goodbye: every gateway reported offline at the end


def test_sigkill_of_ingest_mid_stream_loses_and_duplicates_nothing(
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Killing the service with SIGKILL while it commits, then restarting it, still leaves
    exactly the published readings."""
    svc, sim = start_mid_stream(fleet, broker, tmp_path, database_url, db_schema, ingest_factory)
    svc.kill()
    time.sleep(1.0)
    svc.start()
    finish(sim)
    assert_exactly_once(tmp_path, database_url, db_schema, svc)


def pg_ctl(action: str) -> None:
    """Act on the machine's PostgreSQL cluster (the tests run as root, as CI does)."""
    version = sorted(Path("/etc/postgresql").iterdir(), key=lambda p: int(p.name))[-1].name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, "-m", "fast"]
        if action != "start"
        else ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
    )


def test_database_restart_mid_stream_loses_and_duplicates_nothing(
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Stopping PostgreSQL for a few seconds mid-stream stalls ingest (nothing acknowledged)
    and, once it is back, the database holds exactly the published readings."""
    svc, sim = start_mid_stream(fleet, broker, tmp_path, database_url, db_schema, ingest_factory)
    pg_ctl("stop")
    try:
        acked_before = (svc.metrics() or {}).get("tungku_messages_acked_total", 0)
        time.sleep(3.0)
        m = svc.metrics() or {}
        assert m.get("tungku_messages_acked_total", 0) == acked_before
        assert m.get("tungku_unacked_messages", 0) > 0
        # memory stays bounded: what waits undecoded never exceeds the receive window
        assert m.get("tungku_inbox_messages", 0) <= 1000
    finally:
        pg_ctl("start")
    finish(sim)
    assert_exactly_once(tmp_path, database_url, db_schema, svc)
    assert (svc.metrics() or {}).get("tungku_db_errors_total", 0) > 0


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Restarting Mosquitto mid-stream (persistence on) loses nothing: queued messages
    survive in its persistence file, gateways spool and backfill, ingest resumes its session."""
    svc, sim = start_mid_stream(fleet, broker, tmp_path, database_url, db_schema, ingest_factory)
    broker.stop()
    time.sleep(2.0)
    broker.start()
    finish(sim)
    assert_exactly_once(tmp_path, database_url, db_schema, svc)


def test_queued_messages_survive_broker_restart_while_ingest_is_down(
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """With ingest away, more than Mosquitto's default 1000 queued messages are kept for its
    session, through a broker restart, and delivered when it returns."""
    svc = ingest_factory(mqtt_port=broker.port, sites=fleet.sites)
    svc.start()
    svc.stop()
    # 30,000 readings at 10 per message: 3,000 queued messages, three times the default cap.
    finish(simulate(fleet, broker, tmp_path, "--count", "30000", "--readings-per-message", "10"))
    broker.restart()
    svc.start()
    assert_exactly_once(tmp_path, database_url, db_schema, svc)
    assert "dropped" not in broker.log_file.read_text()


def test_sigterm_while_the_database_is_down_exits_and_loses_nothing(
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Stopping the service while PostgreSQL is away ends it within its grace period, with
    nothing acknowledged that was not committed: a restarted service stores it all, once."""
    svc = ingest_factory(mqtt_port=broker.port, sites=fleet.sites)
    svc.start()
    pg_ctl("stop")
    try:
        finish(
            simulate(fleet, broker, tmp_path, "--count", "20000", "--readings-per-message", "20")
        )
        assert svc.proc is not None
        t0 = time.monotonic()
        assert svc.stop() == 0
        assert time.monotonic() - t0 < 20
    finally:
        pg_ctl("start")
    svc.start()
    assert_exactly_once(tmp_path, database_url, db_schema, svc)


def test_one_process_per_site_scales_out_and_still_stores_each_reading_once(
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """Two ingest processes, each subscribed to one site under its own client id, together
    store exactly the fleet's readings, even when one is killed mid-stream and restarted."""
    procs = [
        ingest_factory(
            mqtt_port=broker.port, sites=[site], mqtt_client_id=f"tungku-ingest-{db_schema}-{site}"
        )
        for site in fleet.sites
    ]
    for proc in procs:
        proc.start()
    sim = simulate(fleet, broker, tmp_path, "--speed", "40", "--duration-s", "300")
    wait_for(lambda: row_count(database_url, db_schema) > 5000, 60, "ingest under way")
    procs[0].kill()
    time.sleep(1.0)
    procs[0].start()
    finish(sim)
    assert_exactly_once(tmp_path, database_url, db_schema, *procs)
