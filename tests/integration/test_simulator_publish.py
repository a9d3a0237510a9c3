"""The simulator against the real Mosquitto: exact delivery, and spool backfill after an outage.

Each test gets a Mosquitto of its own, started from the project's configuration on a free port
(tests/fix_broker.py), and its own site id.
"""

from __future__ import annotations

import collections
import csv
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from simulator.fleet import Fleet, load_fleet
from simulator.publisher import Mode, PublishConfig, publish_fleet
from tests.fix_broker import Broker, free_port

HOST = "127.0.0.1"

Row = tuple[str, str, int, float]


def _fleet(tmp_path: Path) -> Fleet:
    site = f"it-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "fleet.toml"
    path.write_text(
        f"""seed = 5
[[sites]]
id = "{site}"
[[sites.gateways]]
id = "f1-line"
role = "furnace"
furnace = "F1"
panels = 6
hearth_tcs = 4
sidewall_tcs = 4
shell_tcs = 2
[[sites.gateways]]
id = "areas"
role = "work-area"
[[sites.gateways.areas]]
name = "tapping-floor"
gases = ["co", "o2", "lel"]
""",
        encoding="utf-8",
    )
    return load_fleet(path)


class Subscriber:
    """Collects every readings message of one site, and the status messages."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.rows: list[Row] = []
        self.seqs: dict[str, list[int]] = collections.defaultdict(list)
        self.status: dict[str, list[str]] = collections.defaultdict(list)
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
        channel = msg.topic.rsplit("/", 2)
        if not msg.payload:
            return
        doc = orjson.loads(msg.payload)
        with self.lock:
            if channel[-1] == "status":
                self.status[channel[-2]].append(doc["state"])
                return
            self.seqs[doc["gateway"]].append(doc["seq"])
            self.rows.extend((self.site, r["sensor"], r["ts"], r["value"]) for r in doc["readings"])

    def count(self) -> int:
        with self.lock:
            return len(self.rows)

    def wait_for(self, n: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything beyond n (a duplicate) would show up now


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return _fleet(tmp_path)


@pytest.fixture
def subscriber(fleet: Fleet, broker: Broker) -> Iterator[Subscriber]:
    site = fleet.site_specs[0].id
    sub = Subscriber(site)
    sub.client.connect(HOST, broker.port)
    sub.client.loop_start()
    assert sub.ready.wait(5.0), "subscription not acknowledged"
    yield sub
    for gateway in ("f1-line", "areas"):  # leave no retained status behind
        sub.client.publish(f"tungku/v1/{site}/{gateway}/status", b"", qos=1, retain=True)
    sub.client.disconnect()
    sub.client.loop_stop()


def _record(path: Path) -> list[Row]:
    with path.open(encoding="utf-8", newline="") as f:
        return [
            (r["site"], r["sensor"], int(r["ts_ms"]), float(r["value"])) for r in csv.DictReader(f)
        ]


def _config(tmp_path: Path, fleet: Fleet, port: int, **overrides: object) -> PublishConfig:
    values: dict[str, object] = {
        "host": HOST,
        "port": port,
        "mode": Mode.COUNT,
        "count": 5000,
        "seed": fleet.seed,
        "readings_per_message": 100,
        "spool_dir": tmp_path / "spool",
        "record_path": tmp_path / "record.csv",
        "progress": False,
        "session_expiry_s": 10,
        "ack_timeout_s": 10.0,
    }
    values.update(overrides)
    return PublishConfig(**values)  # type: ignore[arg-type]


def test_count_run_delivers_exactly_the_recorded_readings(
    tmp_path: Path, fleet: Fleet, subscriber: Subscriber, broker: Broker
) -> None:
    """A count run of 5,000 readings delivers exactly those readings, as recorded, in order."""
    before_ms = time.time_ns() // 1_000_000
    report = publish_fleet(fleet, _config(tmp_path, fleet, broker.port))
    subscriber.wait_for(5000)

    assert report.all_acked
    assert report.readings_generated == report.readings_acked == 5000
    recorded = _record(tmp_path / "record.csv")
    assert len(recorded) == 5000
    assert collections.Counter(subscriber.rows) == collections.Counter(recorded)
    assert max(ts for _, _, ts, _ in recorded) <= before_ms + 1000 * report.elapsed_s + 1000
    for seqs in subscriber.seqs.values():
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
    for states in subscriber.status.values():
        assert states[0] == "online"
        assert states[-1] == "offline"


def test_readings_spooled_during_an_outage_are_backfilled_at_the_next_start(
    tmp_path: Path, fleet: Fleet, subscriber: Subscriber, broker: Broker
) -> None:
    """Readings published while the broker is unreachable are kept and sent, in order, later."""
    down = _config(
        tmp_path,
        fleet,
        free_port(),
        count=1000,
        record_path=tmp_path / "down.csv",
        connect_timeout_s=0.5,
        ack_timeout_s=0.5,
    )
    first = publish_fleet(fleet, down)
    assert not first.all_acked
    assert first.left_in_spool_readings == 1000
    assert subscriber.count() == 0

    up = _config(
        tmp_path, fleet, broker.port, count=500, record_path=tmp_path / "up.csv", start_ms=None
    )
    second = publish_fleet(fleet, up)
    subscriber.wait_for(1500)

    assert second.all_acked
    assert second.backfilled_readings >= 1000
    assert second.readings_acked == 1500
    expected = _record(tmp_path / "down.csv") + _record(tmp_path / "up.csv")
    assert collections.Counter(subscriber.rows) == collections.Counter(expected)
    for seqs in subscriber.seqs.values():
        assert seqs == sorted(seqs)
