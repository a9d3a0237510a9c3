"""The ingest service against a real Mosquitto and a real TimescaleDB."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.contract import readings_topic, status_topic
from tests.fix_broker import Broker
from tests.fix_ingest import IngestProcess, make_site, register, scalar, unique_site, wait_for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def publisher(broker: Broker) -> Iterator[paho.Client]:
    """A plain MQTT v5 client standing in for a gateway."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=MQTTProtocolVersion.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    yield c
    c.disconnect()
    c.loop_stop()


def publish(client: paho.Client, topic: str, payload: bytes | str, retain: bool = False) -> None:
    info = client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(timeout=10)
    assert info.is_published()


def reading(
    sensor: str, value: Any, ts: Any = None, unit: str = "MW", **extra: Any
) -> dict[str, Any]:
    return {
        "sensor": sensor,
        "ts": now_ms() if ts is None else ts,
        "value": value,
        "unit": unit,
        **extra,
    }


@pytest.fixture
def running(
    broker: Broker,
    database_url: str,
    db_schema: str,
    ingest_factory: Callable[..., IngestProcess],
) -> tuple[str, IngestProcess]:
    """A registered test site and a running ingest service subscribed to it."""
    site = unique_site()
    register(database_url, db_schema, make_site(site))
    svc = ingest_factory(mqtt_port=broker.port, sites=[site], max_payload_bytes=65536)
    svc.start()
    return site, svc


def acked(svc: IngestProcess, n: int) -> Callable[[], bool]:
    return lambda: (svc.metrics() or {}).get("tungku_messages_acked_total", 0) >= n


def test_readings_land_once_even_when_redelivered(
    running: tuple[str, IngestProcess], publisher: paho.Client, db: psycopg.Connection[Any]
) -> None:
    """A message published twice (a redelivery) leaves each reading in the table once."""
    site, svc = running
    ts = now_ms()
    msg = orjson.dumps(
        {
            "gateway": "gw0",
            "seq": 1,
            "readings": [
                reading("gw0.s0", 61.25, ts),
                reading("gw0.s1", 62.5, ts),
                reading("gw0.s2", 0, ts),
            ],
        }
    )
    publish(publisher, readings_topic(site, "gw0"), msg)
    publish(publisher, readings_topic(site, "gw0"), msg)
    wait_for(acked(svc, 2), 15, "both messages acknowledged")
    rows = db.execute(
        "SELECT s.id, r.value, r.quality, (extract(epoch FROM r.ts) * 1000)::bigint"
        " FROM readings r JOIN sensors s ON s.key = r.sensor_key ORDER BY s.id"
    ).fetchall()
    assert rows == [("gw0.s0", 61.25, 0, ts), ("gw0.s1", 62.5, 0, ts), ("gw0.s2", 0.0, 0, ts)]
    last_seq = "SELECT last_seq FROM gateway_state WHERE gateway_id = 'gw0'"
    wait_for(lambda: scalar(db, last_seq) == 1, 10, "the gateway's last seq recorded")


def test_rfc3339_timestamps_and_quality_are_stored(
    running: tuple[str, IngestProcess], publisher: paho.Client, db: psycopg.Connection[Any]
) -> None:
    """RFC 3339 times with an offset are stored as the same instant; quality is kept."""
    site, svc = running
    msg = orjson.dumps(
        {
            "gateway": "gw1",
            "seq": 7,
            "readings": [
                reading("gw1.s0", 10.5, "2026-11-28T15:00:00.250+08:00", quality="uncertain"),
                reading("gw1.s1", 11, "2026-11-28T07:00:00Z", quality="bad"),
            ],
        }
    )
    publish(publisher, readings_topic(site, "gw1"), msg)
    wait_for(acked(svc, 1), 15, "the message acknowledged")
    rows = db.execute(
        "SELECT s.id, r.ts AT TIME ZONE 'UTC', r.quality FROM readings r"
        " JOIN sensors s ON s.key = r.sensor_key ORDER BY s.id"
    ).fetchall()
    assert [(r[0], r[1].isoformat(), r[2]) for r in rows] == [
        ("gw1.s0", "2026-11-28T07:00:00.250000", 1),
        ("gw1.s1", "2026-11-28T07:00:00", 2),
    ]


def test_bad_payload_corpus_is_rejected_with_reasons_and_good_data_kept(
    running: tuple[str, IngestProcess], publisher: paho.Client, db: psycopg.Connection[Any]
) -> None:
    """Every kind of bad input lands in rejects with its reason; good readings are intact."""
    site, svc = running
    t = readings_topic(site, "gw0")
    far_future = now_ms() + 3_600_000
    corpus: list[tuple[str, bytes | str, str]] = [
        (t, b"{not json", "malformed_json"),
        (t, b"\xff\xfe\x00garbage", "not_utf8"),
        (t, b"[1, 2, 3]", "bad_schema"),
        (t, orjson.dumps({"gateway": "gw0", "seq": "x", "readings": []}), "bad_schema"),
        (t, orjson.dumps({"gateway": "gw1", "seq": 1, "readings": []}), "gateway_mismatch"),
        (
            readings_topic(site, "ghost"),
            orjson.dumps({"gateway": "ghost", "seq": 1, "readings": []}),
            "unknown_gateway",
        ),
        (t, b'{"gateway": "gw0", "seq": 1, "pad": "' + b"x" * 70000 + b'"}', "oversized"),
        (
            t,
            orjson.dumps({"gateway": "gw0", "seq": 2, "readings": [reading("nope", 1.0)]}),
            "unknown_sensor",
        ),
        (
            t,
            orjson.dumps(
                {"gateway": "gw0", "seq": 3, "readings": [reading("gw0.s0", 1.0, unit="kW")]}
            ),
            "wrong_unit",
        ),
        (
            t,
            orjson.dumps({"gateway": "gw0", "seq": 4, "readings": [reading("gw0.s0", 500.0)]}),
            "out_of_range",
        ),
        (
            t,
            orjson.dumps({"gateway": "gw0", "seq": 5, "readings": [reading("gw0.s0", "high")]}),
            "bad_value",
        ),
        (
            t,
            orjson.dumps(
                {"gateway": "gw0", "seq": 6, "readings": [reading("gw0.s0", 1.0, ts="yesterday")]}
            ),
            "bad_timestamp",
        ),
        (
            t,
            orjson.dumps(
                {
                    "gateway": "gw0",
                    "seq": 7,
                    "readings": [reading("gw0.s0", 1.0, ts="2026-11-28T07:00:00")],
                }
            ),
            "bad_timestamp",
        ),
        (
            t,
            orjson.dumps(
                {"gateway": "gw0", "seq": 8, "readings": [reading("gw0.s0", 1.0, ts=far_future)]}
            ),
            "future_timestamp",
        ),
        (
            t,
            orjson.dumps(
                {
                    "gateway": "gw0",
                    "seq": 9,
                    "readings": [reading("gw0.s0", 1.0, quality="excellent")],
                }
            ),
            "bad_quality",
        ),
    ]
    good_ts = now_ms() - 10_000
    good = [
        orjson.dumps(
            {
                "gateway": "gw0",
                "seq": 100 + i,
                "readings": [reading("gw0.s1", float(i), good_ts + i)],
            }
        )
        for i in range(len(corpus))
    ]
    for (topic, payload, _), ok in zip(corpus, good, strict=True):
        publish(publisher, topic, payload)
        publish(publisher, t, ok)
    wait_for(acked(svc, 2 * len(corpus)), 20, "every message acknowledged")
    got = db.execute("SELECT reason, topic, payload FROM rejects ORDER BY id").fetchall()
    assert [r[0] for r in got] == [c[2] for c in corpus]
    for (_, topic, payload), (ctopic, cpayload, _) in zip(got, corpus, strict=True):
        assert topic == ctopic
        assert bytes(payload) == (cpayload.encode() if isinstance(cpayload, str) else cpayload)
    values = [r[0] for r in db.execute("SELECT value FROM readings ORDER BY ts").fetchall()]
    assert values == [float(i) for i in range(len(corpus))]
    m = svc.metrics() or {}
    assert m.get("tungku_unacked_messages") == 0
    assert svc.proc is not None
    assert svc.proc.poll() is None


def test_partly_bad_message_keeps_its_good_readings(
    running: tuple[str, IngestProcess], publisher: paho.Client, db: psycopg.Connection[Any]
) -> None:
    """Good readings of a partly bad message are stored; the message is kept once in rejects
    with one entry per bad reading."""
    site, svc = running
    ts = now_ms()
    msg = orjson.dumps(
        {
            "gateway": "gw0",
            "seq": 1,
            "readings": [
                reading("gw0.s0", 1.0, ts),
                reading("gw0.s1", 999.0, ts),
                reading("gw0.s2", 3.0, ts),
                reading("gw9.s0", 4.0, ts),
            ],
        }
    )
    publish(publisher, readings_topic(site, "gw0"), msg)
    wait_for(acked(svc, 1), 15, "the message acknowledged")
    assert [r[0] for r in db.execute("SELECT value FROM readings ORDER BY value")] == [1.0, 3.0]
    row = db.execute(
        "SELECT reason, reasons, accepted_readings, rejected_readings, errors FROM rejects"
    ).fetchall()
    assert len(row) == 1
    reason, reasons, accepted, rejected, errors = row[0]
    assert (reason, reasons, accepted, rejected) == (
        "out_of_range",
        ["out_of_range", "unknown_sensor"],
        2,
        2,
    )
    assert [(e["index"], e["reason"]) for e in errors] == [
        (1, "out_of_range"),
        (3, "unknown_sensor"),
    ]


def test_gateway_status_and_last_will_track_online_gateways(
    running: tuple[str, IngestProcess], broker: Broker, db: psycopg.Connection[Any]
) -> None:
    """A gateway that announces itself is online; when its connection dies, its last will
    marks it offline."""
    site, svc = running
    topic = status_topic(site, "gw1")
    gw = subprocess.Popen(
        [
            "mosquitto_sub",
            "-p",
            str(broker.port),
            "-V",
            "mqttv5",
            "-t",
            f"{topic}/none",
            "--will-topic",
            topic,
            "--will-payload",
            '{"state": "offline", "ts": 1}',
            "--will-qos",
            "1",
            "--will-retain",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-r",
                "-t",
                topic,
                "-m",
                orjson.dumps({"state": "online", "ts": now_ms()}).decode(),
            ],
            check=True,
        )
        online = "SELECT online FROM gateway_state WHERE site_id = %s AND gateway_id = 'gw1'"
        wait_for(lambda: scalar(db, online, site) is True, 15, "gw1 online")
        wait_for(
            lambda: (svc.metrics() or {}).get("tungku_gateways_online") == 1,
            15,
            "gateways_online metric at 1",
        )
        time.sleep(0.5)  # let mosquitto_sub finish connecting before it is killed
        os.kill(gw.pid, signal.SIGKILL)
        wait_for(lambda: scalar(db, online, site) is False, 15, "gw1 offline by last will")
    finally:
        gw.kill()
        gw.wait()


def test_registry_change_is_picked_up_while_running(
    running: tuple[str, IngestProcess],
    publisher: paho.Client,
    db: psycopg.Connection[Any],
    database_url: str,
    db_schema: str,
) -> None:
    """A sensor loaded into the registry while the service runs is accepted without a restart."""
    site, svc = running
    bigger = make_site(site, gateways=2, sensors=4)
    register(database_url, db_schema, bigger)
    gen = scalar(db, "SELECT generation FROM registry_generation")
    wait_for(
        lambda: (svc.metrics() or {}).get("tungku_registry_generation") == gen,
        15,
        "the new registry generation in use",
    )
    publish(
        publisher,
        readings_topic(site, "gw0"),
        orjson.dumps({"gateway": "gw0", "seq": 1, "readings": [reading("gw0.s3", 5.0)]}),
    )
    wait_for(acked(svc, 1), 15, "the message acknowledged")
    assert scalar(db, "SELECT count(*) FROM readings") == 1
    assert scalar(db, "SELECT count(*) FROM rejects") == 0


def test_retention_drops_chunks_older_than_the_period(
    broker: Broker,
    database_url: str,
    db_schema: str,
    publisher: paho.Client,
    ingest_factory: Callable[..., IngestProcess],
    db: psycopg.Connection[Any],
) -> None:
    """With retention_days set, the service drops chunks of old readings and keeps recent ones."""
    site = unique_site()
    register(database_url, db_schema, make_site(site))
    day_ms = 86_400_000
    old = [reading("gw0.s0", 1.0, now_ms() - 40 * day_ms), reading("gw0.s0", 2.0, now_ms())]
    svc = ingest_factory(mqtt_port=broker.port, sites=[site])
    svc.start()
    publish(
        publisher,
        readings_topic(site, "gw0"),
        orjson.dumps({"gateway": "gw0", "seq": 1, "readings": old}),
    )
    wait_for(acked(svc, 1), 15, "the message acknowledged")
    assert scalar(db, "SELECT count(*) FROM readings") == 2
    svc.stop()
    svc = ingest_factory(mqtt_port=broker.port, sites=[site], retention_days=30)
    svc.start()
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") == 1, 15, "old chunk dropped")
    assert scalar(db, "SELECT value FROM readings") == 2.0
