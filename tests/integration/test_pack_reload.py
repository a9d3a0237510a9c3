"""Changing the rule pack under a running service: a bad pack is refused and the running one
stays in force; a pack not yet effective waits; a valid one takes over, rebuilt from stored
history, and the alerts are reconciled with it — all on the real broker and database."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from alerting.pack import default_pack_path
from ingest.contract import encode_readings, readings_topic
from tests.fix_broker import Broker
from tests.fix_ingest import (
    IngestProcess,
    co_detector_site,
    evaluated,
    register,
    scalar,
    wait_for,
)

SITE = "reload-site"


class Gateway1:
    """One gateway publishing the CO detector, 2 s apart in event time."""

    def __init__(self, port: int) -> None:
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.seq = 0
        self.t_ms = (int(time.time()) - 3600) * 1000

    def send(self, value: float, n: int) -> None:
        for _ in range(n):
            body = encode_readings(
                "gw",
                self.seq,
                [{"sensor": "bay.co", "ts": self.t_ms, "value": value, "unit": "ppm"}],
            )
            self.c.publish(readings_topic(SITE, "gw"), body, qos=1).wait_for_publish(timeout=10)
            self.seq += 1
            self.t_ms += 2000

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _pack(text: str, *, version: str, co_warning: float | None = None, effective: str = "") -> str:
    out = text.replace('version = "2026.12.1"', f'version = "{version}"', 1)
    if co_warning is not None:
        block = out.index('id = "gas.co.level"')
        warn = out.index("level = 25.0", block)
        out = out[:warn] + f"level = {co_warning}" + out[warn + len("level = 25.0") :]
    if effective:
        out = out.replace("effective = 2026-12-07", f"effective = {effective}", 1)
    return out


def test_bad_pack_refused_future_pack_waits_valid_pack_takes_over(
    broker: Broker,
    db: psycopg.Connection[Any],
    database_url: str,
    db_schema: str,
    tmp_path: Path,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """The running pack raises a CO warning at 30 ppm; a broken pack file is refused (logged
    with its problem, counted) and alerts keep coming under the running version; a pack
    effective next year is not switched to; a pack with the warning at 50 ppm takes over and
    clears the warning, journaled with its version."""
    register(database_url, db_schema, co_detector_site(SITE, 2.0))
    text = default_pack_path().read_text("utf-8")
    pack_file = tmp_path / "pack.toml"
    pack_file.write_text(_pack(text, version="v1"), "utf-8")
    svc = ingest_factory(mqtt_port=broker.port, sites=[SITE], rule_pack=str(pack_file))
    svc.start()
    gw = Gateway1(broker.port)
    try:
        gw.send(30.0, 10)
        wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") == 10, 30, "10 stored")
        wait_for(evaluated(svc), 30, "evaluation")
        assert db.execute(
            "SELECT severity, pack_version FROM alerts WHERE rule_id = 'gas.co.level'"
        ).fetchone() == ("warning", "v1")

        pack_file.write_text(text.replace('kind = "threshold"', 'kind = "thresold"', 1), "utf-8")
        wait_for(
            lambda: (svc.metrics() or {}).get("tungku_rule_pack_refusals") == 1,
            30,
            "the broken pack to be refused",
        )
        assert "rule pack refused; the running pack stays in force" in svc.log()
        assert "thresold" in svc.log()

        pack_file.write_text(_pack(text, version="v3", effective="2099-01-01"), "utf-8")
        time.sleep(5)  # two refresh rounds
        assert "rule pack not yet in force" in svc.log()
        gw.send(0.0, 5)  # clears (off-delay 0): still judged by v1
        gw.send(30.0, 5)  # raises again under v1
        wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") == 20, 30, "20 stored")
        wait_for(evaluated(svc), 30, "evaluation")
        versions = {
            v
            for (v,) in db.execute(
                "SELECT DISTINCT pack_version FROM alert_journal WHERE rule_id = 'gas.co.level'"
            ).fetchall()
        }
        assert versions == {"v1"}

        pack_file.write_text(_pack(text, version="v2", co_warning=50.0), "utf-8")
        wait_for(
            lambda: (
                scalar(
                    db,
                    "SELECT count(*) FROM alert_journal WHERE rule_id = 'gas.co.level'"
                    " AND pack_version = 'v2' AND action = 'clear'",
                )
                == 1
            ),
            60,
            "the new pack to clear the CO warning it no longer sees",
        )
        reason = scalar(
            db,
            "SELECT reason FROM alert_journal WHERE pack_version = 'v2' AND action = 'clear'",
        )
        assert "v1 -> v2" in reason
        assert db.execute("SELECT count(*) FROM rule_packs").fetchone() == (2,)
    finally:
        gw.close()
