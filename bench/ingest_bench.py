"""Ingest benchmark: broker -> ingest -> committed rows, against a naive bridge, in one run.

Measures, on this machine, with a Mosquitto of the project's configuration and the real
TimescaleDB:

  (a) sustained readings/s through broker -> ingest service -> committed rows, 100-reading
      QoS 1 messages, idempotent writes. Three ways: "drain" (the broker already holds the
      messages for the service's persistent session; ingest alone is timed), "split" (the
      same with the plant as two sites and one ingest process per site) and "live"
      (the publisher runs at full speed at the same time, sharing the 2 cores);
  (b) publish -> commit latency p50/p99 at a paced rate (default 20k readings/s): each
      reading's ts is its publish time, each row's commit time is PostgreSQL's
      pg_xact_commit_timestamp (track_commit_timestamp = on, set by deploy/setup.sh);
  (c) a naive bridge in the same run: a paho callback doing one autocommitted INSERT per
      reading, drained from the same kind of backlog; and the ratio (a) / (c).

Prints a table and writes it as JSON (default bench/results/ingest.json).
Usage: .venv/bin/python -m bench.ingest_bench [--readings N] [--help]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import sql

from ingest.contract import readings_topic
from ingest.migrate import migrate, session_sql
from ingest.registry import Site
from ingest.store import load_site
from tests.fix_broker import Broker
from tests.fix_ingest import IngestProcess, make_site

SITE = "bench"


def make_messages(
    site: Site, readings: int, per_message: int, start_ms: int
) -> list[tuple[str, bytes]]:
    """Distinct (sensor, ts) readings packed per gateway, ts one second apart per sensor."""
    out: list[tuple[str, bytes]] = []
    seq: dict[str, int] = {}
    made = 0
    tick = 0
    while made < readings:
        for g in site.gateways:
            for i in range(0, len(g.sensors), per_message):
                chunk = g.sensors[i : i + per_message][: readings - made]
                if not chunk:
                    break
                seq[g.id] = seq.get(g.id, 0) + 1
                payload = orjson.dumps(
                    {
                        "gateway": g.id,
                        "seq": seq[g.id],
                        "readings": [
                            {
                                "sensor": s.id,
                                "ts": start_ms + tick * 1000,
                                "value": 30.0 + (made + k) % 97 / 10,
                                "unit": s.unit,
                            }
                            for k, s in enumerate(chunk)
                        ],
                    }
                )
                out.append((readings_topic(site.id, g.id), payload))
                made += len(chunk)
                if made >= readings:
                    return out
        tick += 1
    return out


def publisher(port: int, client_id: str) -> paho.Client:
    c = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def publish_all(c: paho.Client, messages: list[tuple[str, bytes]]) -> float:
    """Publish at full speed; return seconds until the broker acknowledged all."""
    t0 = time.perf_counter()
    infos = [c.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(timeout=120)
    return time.perf_counter() - t0


def count(url: str, schema: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(session_sql(schema))
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0


def wait_rows(url: str, schema: str, n: int, timeout_s: float) -> float:
    """Wait until the table holds n rows; return when (perf_counter)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if count(url, schema) >= n:
            return time.perf_counter()
        time.sleep(0.05)
    raise TimeoutError(f"{count(url, schema)} of {n} rows after {timeout_s} s")


@contextlib.contextmanager
def fresh_schema(url: str, *sites: Site) -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, schema)
        for site in sites:
            load_site(conn, schema, site)
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def ingest(
    url: str, schema: str, port: int, log_dir: Path, site: str = SITE, **settings: object
) -> IngestProcess:
    # Ingest alone: what alerting costs on top is bench/alert_bench.py's measurement.
    settings.setdefault("alerting", "false")
    return IngestProcess(
        database_url=url,
        schema=schema,
        mqtt_port=port,
        sites=[site],
        log_dir=log_dir,
        log_level="warning",
        **settings,
    )


def bench_drain_split(
    url: str, broker: Broker, site: Site, n: int, per_msg: int, log_dir: Path
) -> dict[str, Any]:
    """(a) with the plant split in two sites, one ingest process per site, each with its own
    client id and persistent session: the deployment that scales past one Python process."""
    half = len(site.gateways) // 2
    sites = [
        Site(id=f"{SITE}-a", name="bench a", gateways=site.gateways[:half]),
        Site(id=f"{SITE}-b", name="bench b", gateways=site.gateways[half:]),
    ]
    start_ms = int(time.time() * 1000) - 3 * 3600_000
    parts = [make_messages(s, n // 2, per_msg, start_ms) for s in sites]
    messages = [m for pair in zip(*parts, strict=False) for m in pair]
    messages += parts[0][len(parts[1]) :] + parts[1][len(parts[0]) :]
    with fresh_schema(url, *sites) as schema:
        procs = [
            ingest(
                url,
                schema,
                broker.port,
                log_dir,
                site=s.id,
                mqtt_client_id=f"tungku-ingest-{schema}-{s.id}",
            )
            for s in sites
        ]
        for proc in procs:
            prime_session(proc)
        c = publisher(broker.port, "bench-pub-split")
        publish_all(c, messages)
        c.disconnect()
        c.loop_stop()
        for proc in procs:
            proc.start()
        t_conn = time.perf_counter()
        total = sum(len(p) for p in parts) and (n // 2) * 2
        t_done = wait_rows(url, schema, total, 600)
        for proc in procs:
            proc.stop()
        got = count(url, schema)
    return {"readings": total, "rows": got, "readings_per_s": total / (t_done - t_conn)}


def prime_session(proc: IngestProcess) -> None:
    """Start and stop the service once so the broker keeps its subscription while it is away."""
    proc.start()
    proc.stop()


def bench_drain(
    url: str, broker: Broker, site: Site, n: int, per_msg: int, log_dir: Path
) -> dict[str, Any]:
    messages = make_messages(site, n, per_msg, int(time.time() * 1000) - 3 * 3600_000)
    with fresh_schema(url, site) as schema:
        proc = ingest(url, schema, broker.port, log_dir)
        prime_session(proc)
        c = publisher(broker.port, "bench-pub-drain")
        pub_s = publish_all(c, messages)
        c.disconnect()
        c.loop_stop()
        t0 = time.perf_counter()
        proc.start()
        t_conn = time.perf_counter()
        t_done = wait_rows(url, schema, n, 600)
        proc.stop()
        got = count(url, schema)
    return {
        "readings": n,
        "rows": got,
        "publish_s": pub_s,
        "publish_readings_per_s": n / pub_s,
        "ingest_s": t_done - t_conn,
        "readings_per_s": n / (t_done - t_conn),
        "startup_s": t_conn - t0,
    }


def bench_live(
    url: str, broker: Broker, site: Site, n: int, per_msg: int, log_dir: Path
) -> dict[str, Any]:
    messages = make_messages(site, n, per_msg, int(time.time() * 1000) - 3 * 3600_000)
    with fresh_schema(url, site) as schema:
        proc = ingest(url, schema, broker.port, log_dir)
        proc.start()
        c = publisher(broker.port, "bench-pub-live")
        t0 = time.perf_counter()
        publish_all(c, messages)
        t_done = wait_rows(url, schema, n, 600)
        c.disconnect()
        c.loop_stop()
        proc.stop()
        got = count(url, schema)
    return {"readings": n, "rows": got, "seconds": t_done - t0, "readings_per_s": n / (t_done - t0)}


def bench_latency(
    url: str, broker: Broker, site: Site, rate: int, seconds: float, per_msg: int, log_dir: Path
) -> dict[str, Any]:
    sensors = [(g.id, s.id) for g in site.gateways for s in g.sensors]
    with fresh_schema(url, site) as schema:
        proc = ingest(url, schema, broker.port, log_dir)
        proc.start()
        c = publisher(broker.port, "bench-pub-latency")
        msgs_per_s = rate / per_msg
        total_msgs = int(msgs_per_s * seconds)
        by_gw: dict[str, list[str]] = {}
        for gw, sid in sensors:
            by_gw.setdefault(gw, []).append(sid)
        gws = sorted(by_gw)
        t0 = time.perf_counter()
        infos = []
        for k in range(total_msgs):
            due = t0 + k / msgs_per_s
            while (delay := due - time.perf_counter()) > 0:
                time.sleep(min(delay, 0.002))
            gw = gws[k % len(gws)]
            ids = by_gw[gw]
            rnd = k // len(gws)
            chunk = [ids[(rnd * per_msg + j) % len(ids)] for j in range(per_msg)]
            # ts = publish time, microseconds, unique per sensor within a run (rnd advances)
            now = datetime.now(UTC).isoformat()
            payload = orjson.dumps(
                {
                    "gateway": gw,
                    "seq": k + 1,
                    "readings": [
                        {"sensor": sid, "ts": now, "value": 31.0, "unit": "MW"} for sid in chunk
                    ],
                }
            )
            infos.append(c.publish(readings_topic(SITE, gw), payload, qos=1))
        achieved = total_msgs * per_msg / (time.perf_counter() - t0)
        for info in infos:
            info.wait_for_publish(timeout=60)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(session_sql(schema))
            deadline = time.time() + 60
            expected = total_msgs * per_msg
            while True:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
                got = int(row[0]) if row else 0
                if got >= expected or time.time() > deadline:
                    break
                time.sleep(0.1)
            pct = conn.execute(
                "SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY lat),"
                " max(lat) FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts)"
                " * 1000 AS lat FROM readings) x"
            ).fetchone()
        proc.stop()
        c.disconnect()
        c.loop_stop()
    assert pct is not None
    p50, p90, p99 = pct[0]
    return {
        "target_readings_per_s": rate,
        "achieved_readings_per_s": achieved,
        "readings": expected,
        "rows": got,
        "per_message": per_msg,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": float(pct[1]),
    }


def naive_bridge(
    url: str,
    schema: str,
    port: int,
    keys: dict[str, int],
    stop: threading.Event,
    ready: threading.Event,
) -> None:
    """The naive way: paho callback, json.loads, one autocommitted INSERT per reading."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(session_sql(schema))

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        for r in doc["readings"]:
            conn.execute(
                "INSERT INTO readings (sensor_key, ts, value, quality) VALUES"
                " (%s, to_timestamp(%s / 1000.0), %s, 0) ON CONFLICT DO NOTHING",
                (keys[r["sensor"]], r["ts"], r["value"]),
            )

    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"naive-{schema}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.on_connect = lambda cl, *a: cl.subscribe(f"tungku/v1/{SITE}/+/readings", qos=1)
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    ready.set()
    stop.wait()
    c.disconnect()
    c.loop_stop()
    conn.close()


def bench_naive(url: str, broker: Broker, site: Site, n: int, per_msg: int) -> dict[str, Any]:
    messages = make_messages(site, n, per_msg, int(time.time() * 1000) - 3 * 3600_000)
    with fresh_schema(url, site) as schema:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(session_sql(schema))
            keys = dict(conn.execute("SELECT id, key FROM sensors").fetchall())

        def run(stop: threading.Event) -> tuple[threading.Thread, threading.Event]:
            ready = threading.Event()
            t = threading.Thread(
                target=naive_bridge, args=(url, schema, broker.port, keys, stop, ready)
            )
            t.start()
            ready.wait()
            return t, ready

        stop = threading.Event()
        t, _ = run(stop)
        time.sleep(1)
        stop.set()
        t.join()
        c = publisher(broker.port, "bench-pub-naive")
        publish_all(c, messages)
        c.disconnect()
        c.loop_stop()
        stop = threading.Event()
        t0 = time.perf_counter()
        t, _ = run(stop)
        t_done = wait_rows(url, schema, n, 600)
        stop.set()
        t.join()
        got = count(url, schema)
    return {"readings": n, "rows": got, "seconds": t_done - t0, "readings_per_s": n / (t_done - t0)}


def repeated(n: int, url: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a throughput step n times; report the median run, with every run's rate kept.
    This machine is shared and noisy: single runs of the same code vary by +-30 %."""
    runs = []
    for i in range(n):
        if i:
            quiesce(url)
        runs.append(step())
        print(f"  run {i + 1}: {runs[-1]['readings_per_s']:,.0f} readings/s", file=sys.stderr)
    ordered = sorted(runs, key=lambda r: r["readings_per_s"])
    median = dict(ordered[len(ordered) // 2])
    median["runs_readings_per_s"] = [r["readings_per_s"] for r in runs]
    median["rows"] = min(r["rows"] for r in runs)
    median["readings"] = max(r["readings"] for r in runs)
    return median


def quiesce(url: str) -> None:
    """Start each measurement from a quiet database: the previous step's rows checkpointed
    and its schema dropped, so one step's clean-up does not land in the next one's figures."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    time.sleep(2.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench.ingest_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "TUNGKU_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tungku"
        ),
    )
    p.add_argument("--readings", type=int, default=2_000_000, help="readings for (a)")
    p.add_argument(
        "--repeat", type=int, default=3, help="runs of each throughput step; the median counts"
    )
    p.add_argument("--per-message", type=int, default=100)
    p.add_argument("--gateways", type=int, default=10)
    p.add_argument("--sensors-per-gateway", type=int, default=100)
    p.add_argument("--latency-rate", type=int, default=20_000, help="readings/s for (b)")
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--latency-per-message", type=int, default=50)
    p.add_argument("--naive-readings", type=int, default=30_000, help="readings for (c)")
    p.add_argument("--out", default="bench/results/ingest.json")
    p.add_argument(
        "--only",
        choices=["naive", "drain", "split", "live", "latency"],
        action="append",
        help="run only these parts (repeatable); no table then, just the JSON",
    )
    args = p.parse_args(argv)

    site = make_site(SITE, args.gateways, args.sensors_per_gateway)
    data_dir = Path(tempfile.mkdtemp(prefix="tungku-bench-broker-"))
    log_dir = Path(tempfile.mkdtemp(prefix="tungku-bench-logs-"))
    broker = Broker(data_dir)
    broker.start()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": vars(args),
    }
    try:
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            (
                "latency",
                lambda: bench_latency(
                    args.database_url,
                    broker,
                    site,
                    args.latency_rate,
                    args.latency_seconds,
                    args.latency_per_message,
                    log_dir,
                ),
            ),
            (
                "naive",
                lambda: bench_naive(
                    args.database_url, broker, site, args.naive_readings, args.per_message
                ),
            ),
            (
                "drain",
                lambda: repeated(
                    args.repeat,
                    args.database_url,
                    lambda: bench_drain(
                        args.database_url, broker, site, args.readings, args.per_message, log_dir
                    ),
                ),
            ),
            (
                "split",
                lambda: repeated(
                    args.repeat,
                    args.database_url,
                    lambda: bench_drain_split(
                        args.database_url, broker, site, args.readings, args.per_message, log_dir
                    ),
                ),
            ),
            (
                "live",
                lambda: repeated(
                    args.repeat,
                    args.database_url,
                    lambda: bench_live(
                        args.database_url, broker, site, args.readings, args.per_message, log_dir
                    ),
                ),
            ),
        ]
        for name, step in steps:
            if args.only and name not in args.only:
                continue
            quiesce(args.database_url)
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results[name] = step()
            print(json.dumps(results[name]), file=sys.stderr, flush=True)
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.only:
        return 0
    naive = results["naive"]["readings_per_s"]
    results["ratio_drain_to_naive"] = results["drain"]["readings_per_s"] / naive
    results["ratio_split_to_naive"] = results["split"]["readings_per_s"] / naive
    results["ratio_live_to_naive"] = results["live"]["readings_per_s"] / naive
    lat = results["latency"]
    rows = [
        (
            "(a) sustained, drain (ingest alone), median",
            f"{results['drain']['readings_per_s']:,.0f} readings/s",
            ">= 100,000",
        ),
        (
            "    runs",
            " / ".join(f"{r / 1000:.0f}k" for r in results["drain"]["runs_readings_per_s"]),
            "",
        ),
        (
            "(a) sustained, drain, 2 processes split by site, median",
            f"{results['split']['readings_per_s']:,.0f} readings/s",
            ">= 100,000",
        ),
        (
            "    runs",
            " / ".join(f"{r / 1000:.0f}k" for r in results["split"]["runs_readings_per_s"]),
            "",
        ),
        (
            "(a) sustained, live (publisher on the same 2 cores), median",
            f"{results['live']['readings_per_s']:,.0f} readings/s",
            ">= 100,000",
        ),
        (
            "    runs",
            " / ".join(f"{r / 1000:.0f}k" for r in results["live"]["runs_readings_per_s"]),
            "",
        ),
        (
            "    publisher alone, QoS 1, to broker ack",
            f"{results['drain']['publish_readings_per_s']:,.0f} readings/s",
            "",
        ),
        (
            f"(b) latency p50 at {lat['achieved_readings_per_s']:,.0f} readings/s",
            f"{lat['p50_ms']:.1f} ms",
            "",
        ),
        ("(b) latency p99", f"{lat['p99_ms']:.1f} ms", "<= 150 ms"),
        ("(c) naive bridge (INSERT per reading)", f"{naive:,.0f} readings/s", ""),
        ("ratio (a drain) / (c)", f"{results['ratio_drain_to_naive']:.1f}x", ">= 30x"),
        ("ratio (a split) / (c)", f"{results['ratio_split_to_naive']:.1f}x", ">= 30x"),
        ("ratio (a live) / (c)", f"{results['ratio_live_to_naive']:.1f}x", ">= 30x"),
        (
            "rows == readings published (a, b, c)",
            str(
                all(
                    results[k]["rows"] == results[k]["readings"]
                    for k in ("drain", "split", "live", "latency", "naive")
                )
            ),
            "True",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>22}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>22}  {target}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
