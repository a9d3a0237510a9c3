"""Fixtures that run the real ingest service as a process (`python -m ingest.cli ingest run`),
so tests can kill it with SIGKILL, and a few helpers shared by integration and e2e tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerting.store import AlertStore
from ingest.metrics import parse_metrics
from ingest.registry import Gateway, Sensor, Site
from ingest.store import load_site
from simulator.scenario import Scenario
from tests.fix_broker import free_port


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until it holds; fail the test naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def unique_site() -> str:
    """A site id no other test uses, so topics never collide."""
    return f"t{uuid.uuid4().hex[:10]}"


def make_site(site_id: str, gateways: int = 2, sensors: int = 3) -> Site:
    """A small site: furnace power sensors in MW, range [-1, 120]."""
    return Site(
        id=site_id,
        name=f"test site {site_id}",
        gateways=tuple(
            Gateway(
                id=f"gw{g}",
                sensors=tuple(
                    Sensor(
                        id=f"gw{g}.s{s}",
                        kind="furnace_power",
                        unit="MW",
                        min_value=-1.0,
                        max_value=120.0,
                        period_s=1.0,
                        asset="F1",
                    )
                    for s in range(sensors)
                ),
            )
            for g in range(gateways)
        ),
    )


def co_detector_site(site_id: str, period_s: float) -> Site:
    """A site with one gateway `gw` and one work-area CO detector `bay.co` (asset `bay`)."""
    return Site(
        id=site_id,
        name="one CO detector",
        gateways=(
            Gateway(
                id="gw",
                sensors=(
                    Sensor(
                        id="bay.co", kind="area_co", unit="ppm", min_value=0.0,
                        max_value=2000.0, period_s=period_s, asset="bay",
                    ),
                ),
            ),
        ),
    )  # fmt: skip


def register(db_url: str, schema: str, site: Site) -> None:
    """Load a site into the test schema's registry."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_site(conn, schema, site)


def scalar(db: psycopg.Connection[Any], query: str, *params: object) -> Any:
    """First column of the first row."""
    row = db.execute(query, params).fetchone()
    return row[0] if row else None


def all_stored(db: psycopg.Connection[Any], sim_stdout: str) -> Callable[[], bool]:
    """True once every reading the broker acknowledged to `tungku simulate` (its summary
    line) is in the database, stored or kept in rejects: the broker's ack to a publisher is
    not ingest's commit."""
    m = re.search(r"(\d+) acknowledged", sim_stdout)
    assert m, sim_stdout
    want = int(m.group(1))

    def done() -> bool:
        got = scalar(db, "SELECT count(*) FROM readings") + scalar(
            db, "SELECT coalesce(sum(rejected_readings), 0) FROM rejects"
        )
        return int(got) >= want

    return done


def evaluated(svc: IngestProcess) -> Callable[[], bool]:
    """True once the process has evaluated every batch it committed (a restarted one first
    evaluates what its predecessor committed and did not evaluate)."""

    def done() -> bool:
        m = svc.metrics() or {}
        return (
            m.get("tungku_alert_readings_total", 0) >= m.get("tungku_readings_accepted_total", 1)
            and m.get("tungku_alert_backlog", 1) == 0
            and m.get("tungku_unacked_messages", 1) == 0
        )

    return done


def open_scenario_permits(database_url: str, schema: str, sc: Scenario, start_ms: int) -> None:
    """Record a scenario's hot-work permits in the test schema, for a run starting at
    start_ms (so the engine sees them from its first reading)."""

    async def run() -> None:
        store = AlertStore(database_url=database_url, schema=schema)
        try:
            for p in sc.permits:
                await store.open_permit(
                    site=sc.site,
                    asset=p.asset,
                    areas=p.areas,
                    opened_us=(start_ms + p.open_s * 1000) * 1000,
                    closed_us=None if p.close_s is None else (start_ms + p.close_s * 1000) * 1000,
                    issued_by="test",
                )
        finally:
            await store.close()

    asyncio.run(run())


class IngestProcess:
    """The ingest service as a child process with its own settings."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        mqtt_port: int,
        sites: list[str],
        log_dir: Path,
        **settings: object,
    ) -> None:
        self.metrics_port = free_port()
        self.log_path = log_dir / f"ingest-{uuid.uuid4().hex[:6]}.log"
        self.env = {
            **os.environ,
            "TUNGKU_DATABASE_URL": database_url,
            "TUNGKU_DB_SCHEMA": schema,
            "TUNGKU_MQTT_PORT": str(mqtt_port),
            "TUNGKU_MQTT_CLIENT_ID": f"tungku-ingest-{schema}",
            "TUNGKU_SITES": ",".join(sites),
            "TUNGKU_METRICS_PORT": str(self.metrics_port),
            "TUNGKU_REGISTRY_REFRESH_S": "0.5",
            **{f"TUNGKU_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the service and wait until its metrics endpoint answers."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingest.cli", "ingest", "run"],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        wait_for(lambda: self.metrics() is not None, 30, "the ingest metrics endpoint")
        wait_for(
            lambda: (self.metrics() or {}).get("tungku_mqtt_connected") == 1,
            30,
            "the ingest service to connect to the broker",
        )

    def metrics(self) -> dict[str, float] | None:
        """Current metrics, or None when the endpoint does not answer."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return parse_metrics(resp.read().decode())
        except OSError:
            return None

    def kill(self) -> None:
        """SIGKILL: no flush, no clean disconnect."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def log(self) -> str:
        """What the service logged."""
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def ingest_factory(
    database_url: str, db_schema: str, tmp_path: Path
) -> Iterator[Callable[..., IngestProcess]]:
    """Make ingest processes bound to the test's schema; all are stopped at teardown."""
    made: list[IngestProcess] = []

    def make(*, mqtt_port: int, sites: list[str], **settings: object) -> IngestProcess:
        p = IngestProcess(
            database_url=database_url,
            schema=db_schema,
            mqtt_port=mqtt_port,
            sites=sites,
            log_dir=tmp_path,
            **settings,
        )
        made.append(p)
        return p

    yield make
    for p in made:
        if p.proc is not None and p.proc.poll() is None:
            p.stop()
