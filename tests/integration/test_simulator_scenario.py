"""A scenario through the real Mosquitto: every reading of the sensor-faults scenario arrives,
and the work-area gateway announces itself offline then online at plant time."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from simulator.fleet import SCENARIO_FLEET, Fleet, parse_fleet
from simulator.publisher import Mode, PublishConfig, publish_fleet
from simulator.scenario import SCENARIOS, ScenarioPlant
from tests.fix_broker import Broker

HOST = "127.0.0.1"
SEED = 4
START_MS = 1_700_000_000_000


class Collector:
    """Counts readings (by quality) and records statuses of one site."""

    def __init__(self, site: str) -> None:
        self.readings = 0
        self.bad = 0
        self.status: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"it-sub-{uuid.uuid4().hex[:12]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(f"tungku/v1/{site}/#", qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message

    def _on_message(self, client: Client, userdata: object, msg: MQTTMessage) -> None:
        if not msg.payload:
            return
        doc = orjson.loads(msg.payload)
        level = msg.topic.rsplit("/", 2)
        with self.lock:
            if level[-1] == "status":
                self.status[level[-2]].append((doc["state"], doc["ts"]))
            else:
                self.readings += len(doc["readings"])
                self.bad += sum(r.get("quality") == "bad" for r in doc["readings"])

    def wait_for(self, n: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.readings < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)


@pytest.fixture
def fleet() -> Fleet:
    text = (Path("simulator") / SCENARIO_FLEET).read_text(encoding="utf-8")
    site = f"it-{uuid.uuid4().hex[:12]}"
    return parse_fleet(text.replace('id = "scenario-site"', f'id = "{site}"'))


@pytest.fixture
def collector(fleet: Fleet, broker: Broker) -> Iterator[Collector]:
    site = fleet.site_specs[0].id
    col = Collector(site)
    col.client.connect(HOST, broker.port)
    col.client.loop_start()
    assert col.ready.wait(5.0), "subscription not acknowledged"
    yield col
    for gateway in ("f1-line", "work-areas", "utilities"):
        col.client.publish(f"tungku/v1/{site}/{gateway}/status", b"", qos=1, retain=True)
    col.client.disconnect()
    col.client.loop_stop()


def test_sensor_faults_scenario_arrives_complete_with_offline_and_online_status(
    tmp_path: Path, fleet: Fleet, collector: Collector, broker: Broker
) -> None:
    """Every reading the scenario makes arrives, and work-areas says offline/online at T0/T0+gap."""
    sc = SCENARIOS["sensor-faults"]
    replay = ScenarioPlant(fleet, sc, SEED)
    expected, bad = 0, 0
    for k in range(sc.duration_s):
        for g in replay.readings(k):
            expected += len(g)
            bad += (g.qualities or []).count("bad")
    played = ScenarioPlant(fleet, sc, SEED)
    config = PublishConfig(
        host=HOST,
        port=broker.port,
        mode=Mode.SPEED,
        speed=5000.0,
        duration_s=sc.duration_s,
        start_ms=START_MS,
        seed=SEED,
        spool_dir=tmp_path / "spool",
        progress=False,
        ack_timeout_s=10.0,
    )
    report = publish_fleet(fleet, config, source=played)
    collector.wait_for(expected)

    assert report.all_acked
    assert report.readings_generated == report.readings_acked == expected
    assert collector.readings == expected
    assert collector.bad == bad > 0
    gap = int(played.params["silent_s"])
    states = collector.status["work-areas"]
    assert ("offline", START_MS + sc.t0_s * 1000) in states
    assert ("online", START_MS + (sc.t0_s + gap) * 1000) in states
    names = [s for s, _ in states]
    assert names[0] == "online"
    assert names[-1] == "offline"
    assert names.index("offline") < len(names) - 2  # the scenario's offline is not the last
    assert [s for s, _ in collector.status["f1-line"]] == ["online", "offline"]
