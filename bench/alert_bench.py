"""Alerting benchmark: what the rule engine costs ingest, and how fast an alert gets out.

Measures, on this machine, the default simulator fleet (2 sites, 424 sensors of real kinds)
under the full default rule pack (alerting/packs/smelter-default.toml: thresholds, rates,
deviations, exposure windows, derived cooling signals, health rules), through a Mosquitto of
the project's configuration, the ingest service as a process, and the real TimescaleDB:

  (a) throughput cost of rule evaluation, in the same run: one backlog of the normal plant
      (values from simulator.plant.Plant, ts = consecutive plant seconds ending near now),
      pre-published for the service's persistent session, drained by one ingest process
      with alerting off, then the same backlog (fresh schema, fresh session) with alerting
      on. The off run is done when every reading is committed; the on run when every
      reading is also evaluated (tungku_alert_readings_total >= readings, then backlog 0).
      Cost = 1 - on/off, from the medians of --repeat runs (off and on alternate). Also:
      how far evaluation trails the last commit in the on run.
  (b) publish -> alert committed and notified, at a paced rate (default 20k readings/s):
      the normal plant published with ts = publish time (so each sensor reports many times a
      second), alerting on. About once a second one reading crossing a critical level with
      no on-delay (found in the pack: gas.co.level, gas.lel, ...) is injected, rotating over
      every such sensor so each has cleared (off-delay) before it is hit again. A
      `LISTEN tungku_alerts` connection takes, per activation, receive time - the injected
      reading's ts (matched on site, subject and event time). Also the same run's publish ->
      commit latency of ordinary readings (pg_xact_commit_timestamp).
  --profile (and automatically when the cost target is missed): Engine.process alone in
      this process, timed and then under cProfile, on the two shapes of input the service
      gives it: a drained backlog (10k-reading batches, a plant second a tick) and the paced
      feed of (b) (batches of rate x max_batch_delay readings, ten seconds of it); with ms
      per batch, the checkpoint's dump_state time and where the time goes.

Targets (the issue): (b) p99 <= 250 ms; (a) cost <= 25 % of the maximum ingest rate.
Prints a table and writes it as JSON (default bench/results/alerts.json).
Usage: .venv/bin/python -m bench.alert_bench [--readings N] [--repeat N] [--rate R]
       [--seconds S] [--profile] [--help]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from alerting.engine import Engine, SensorInfo
from alerting.pack import Pack, RuleKind, Severity, When, default_pack_path, load_pack
from alerting.store import NOTIFY_CHANNEL
from bench.ingest_bench import fresh_schema, publish_all, publisher, quiesce
from ingest.contract import encode_readings, format_ts, readings_topic
from ingest.migrate import session_sql
from ingest.registry import Site
from ingest.settings import Settings
from simulator.fleet import load_default_fleet
from simulator.plant import Plant
from tests.fix_broker import Broker
from tests.fix_ingest import IngestProcess

SEED = 20231224
COST_TARGET = 0.25
P99_TARGET_MS = 250.0


# -- the plant as messages --------------------------------------------------------------------


def plant_backlog(
    sites: list[Site], readings: int, per_message: int, end_ms: int
) -> tuple[list[tuple[str, bytes]], int]:
    """The normal plant for enough ticks to give `readings`, one tick = one plant second, the
    last tick at end_ms; each gateway's readings packed in messages of about per_message
    (a gateway forwarding what it holds). Returns the messages and the readings in them."""
    plant = Plant(sites, SEED)
    ticks = plant.ticks_for(readings)
    start_ms = end_ms - (ticks - 1) * 1000
    pending: dict[tuple[str, str], list[dict[str, Any]]] = {}
    seq: dict[tuple[str, str], int] = {}
    out: list[tuple[str, bytes]] = []
    total = 0

    def flush(key: tuple[str, str]) -> None:
        seq[key] = seq.get(key, 0) + 1
        out.append((readings_topic(*key), encode_readings(key[1], seq[key], pending.pop(key))))

    for k in range(ticks):
        ts = start_ms + k * 1000
        for gr in plant.readings(k):
            key = (gr.site, gr.gateway)
            held = pending.setdefault(key, [])
            held.extend(
                {"sensor": s, "ts": ts, "value": v, "unit": u}
                for s, u, v in zip(gr.sensor_ids, gr.units, gr.values, strict=True)
            )
            total += len(gr)
            if len(held) >= per_message:
                flush(key)
    for key in list(pending):
        flush(key)
    return out, total


def site_ids(sites: list[Site]) -> list[str]:
    return [s.id for s in sites]


def start_ingest(
    url: str, schema: str, broker: Broker, sites: list[Site], log_dir: Path, *, alerting: bool
) -> IngestProcess:
    return IngestProcess(
        database_url=url,
        schema=schema,
        mqtt_port=broker.port,
        sites=site_ids(sites),
        log_dir=log_dir,
        log_level="warning",
        alerting=str(alerting).lower(),
    )


def stored_rows(url: str, schema: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(session_sql(schema))
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0


# -- (a) throughput, alerting off and on -------------------------------------------------------


def drain(
    url: str,
    broker: Broker,
    sites: list[Site],
    messages: list[tuple[str, bytes]],
    n: int,
    log_dir: Path,
    *,
    alerting: bool,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Drain the pre-published backlog through one ingest process; time to the last commit
    and (alerting on) to the last evaluation, from the metrics endpoint polled every 0.1 s."""
    with fresh_schema(url, *sites) as schema:
        proc = start_ingest(url, schema, broker, sites, log_dir, alerting=alerting)
        proc.start()  # the broker keeps the subscription (and queues for it) while it is away
        proc.stop()
        c = publisher(broker.port, f"bench-pub-{schema}")
        publish_all(c, messages)
        c.disconnect()
        c.loop_stop()
        proc.start()
        t_conn = time.perf_counter()
        t_commit: float | None = None
        t_eval: float | None = None
        m: dict[str, float] = {}
        deadline = t_conn + timeout_s
        while time.perf_counter() < deadline:
            m = proc.metrics() or m
            now = time.perf_counter()
            if t_commit is None and m.get("tungku_readings_accepted_total", 0) >= n:
                t_commit = now
            if t_commit is not None and (
                not alerting or m.get("tungku_alert_readings_total", 0) >= n
            ):
                t_eval = now
                break
            time.sleep(0.1)
        if t_commit is None or t_eval is None:
            proc.stop()
            raise TimeoutError(f"drain (alerting={alerting}) not done after {timeout_s} s: {m}")
        while alerting and (proc.metrics() or {}).get("tungku_alert_backlog", 1) != 0:
            time.sleep(0.1)  # the gauge is refreshed once a second; not part of the timing
        m = proc.metrics() or m
        proc.stop()
        rows = stored_rows(url, schema)
    done = t_eval - t_conn
    out = {
        "alerting": alerting,
        "readings": n,
        "rows": rows,
        "seconds": done,
        "readings_per_s": n / done,
        "commit_seconds": t_commit - t_conn,
        "commit_readings_per_s": n / (t_commit - t_conn),
    }
    if alerting:
        out |= {
            "eval_lag_after_last_commit_s": t_eval - t_commit,
            "alert_readings": m.get("tungku_alert_readings_total", 0),
            "alert_events": m.get("tungku_alert_events_total", 0),
            "alert_errors": m.get("tungku_alert_errors_total", 0),
        }
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["readings_per_s"])
    med = dict(ordered[len(ordered) // 2])
    med["runs_readings_per_s"] = [r["readings_per_s"] for r in runs]
    med["rows"] = min(r["rows"] for r in runs)
    return med


def bench_cost(
    url: str,
    broker: Broker,
    sites: list[Site],
    readings: int,
    per_message: int,
    repeat: int,
    log_dir: Path,
) -> dict[str, Any]:
    """Off and on alternate, so a noisy stretch of the machine hits both alike."""
    t0 = time.perf_counter()
    messages, n = plant_backlog(sites, readings, per_message, int(time.time() * 1000) - 60_000)
    print(
        f"  backlog: {n:,} readings in {len(messages):,} messages,"
        f" built in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    off: list[dict[str, Any]] = []
    on: list[dict[str, Any]] = []
    for i in range(repeat):
        for alerting, runs in ((False, off), (True, on)):
            quiesce(url)
            runs.append(drain(url, broker, sites, messages, n, log_dir, alerting=alerting))
            r = runs[-1]
            extra = (
                f", last evaluation {r['eval_lag_after_last_commit_s']:.2f} s after last commit"
                if alerting
                else ""
            )
            print(
                f"  run {i + 1} alerting {'on ' if alerting else 'off'}:"
                f" {r['readings_per_s']:,.0f} readings/s{extra}",
                file=sys.stderr,
                flush=True,
            )
    med_off, med_on = median_run(off), median_run(on)
    cost = 1 - med_on["readings_per_s"] / med_off["readings_per_s"]
    pair_costs = [
        1 - b["readings_per_s"] / a["readings_per_s"] for a, b in zip(off, on, strict=True)
    ]
    return {
        "readings": n,
        "messages": len(messages),
        "per_message": per_message,
        "off": med_off,
        "on": med_on,
        "cost": cost,
        "cost_of_each_pair": pair_costs,
        "eval_lag_after_last_commit_s": statistics.median(
            r["eval_lag_after_last_commit_s"] for r in on
        ),
        "target_cost": COST_TARGET,
        "pass": cost <= COST_TARGET,
    }


# -- (b) latency of an alert -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A sensor a single reading can put into critical at once, and the value that does."""

    site: str
    gateway: str
    sensor: str
    unit: str
    rule_id: str
    value: float


def instant_criticals(pack: Pack, sites: list[Site]) -> tuple[list[Target], float]:
    """Sensors under a high threshold rule whose critical level has no on-delay and that runs
    whatever the plant state and without a permit; and the longest off-delay among them."""
    rules = [
        r
        for r in pack.rules
        if r.kind is RuleKind.THRESHOLD
        and r.direction == "high"
        and r.when is When.ALWAYS
        and not r.requires_permit
        and not r.sensors.assets
        and any(lv.severity is Severity.CRITICAL and lv.on_delay_s == 0 for lv in r.levels)
    ]
    out: list[Target] = []
    for site in sites:
        for g, s in site.sensors():
            for r in rules:
                if s.kind in r.sensors.kinds:
                    lv = next(lv for lv in r.levels if lv.severity is Severity.CRITICAL)
                    value = min(s.max_value, round(lv.level * 1.25 + 1, 1))
                    out.append(Target(site.id, g.id, s.id, s.unit, r.id, value))
    off_delay_s = max((r.off_delay_s for r in rules), default=0.0)
    return out, off_delay_s


class Listener(threading.Thread):
    """LISTEN tungku_alerts; keep (receive time us, payload) of every notification."""

    def __init__(self, url: str) -> None:
        super().__init__(name="listen", daemon=True)
        self.url = url
        self.got: list[tuple[int, dict[str, Any]]] = []
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.ready.set()
            while not self.stop.is_set():
                for n in conn.notifies(timeout=0.2):
                    self.got.append((time.time_ns() // 1000, json.loads(n.payload)))


def to_us(iso: str) -> int:
    dt = datetime.fromisoformat(iso)
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64)
    if not a.size:
        return {}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(a.max()),
    }


def bench_latency(
    url: str,
    broker: Broker,
    sites: list[Site],
    pack: Pack,
    rate: int,
    seconds: float,
    warmup_s: float,
    log_dir: Path,
) -> dict[str, Any]:
    targets, off_delay_s = instant_criticals(pack, sites)
    assert targets, "the pack has no critical level without an on-delay on these sensors"
    random.Random(SEED).shuffle(targets)
    if len(targets) < off_delay_s + 5:
        print(
            f"  warning: {len(targets)} target sensors, off-delay {off_delay_s} s: an alert may"
            " still be active when its sensor is hit again (counted as missed)",
            file=sys.stderr,
        )
    plant = Plant(sites, SEED)
    listener = Listener(url)
    with fresh_schema(url, *sites) as schema:
        proc = start_ingest(url, schema, broker, sites, log_dir, alerting=True)
        proc.start()
        listener.start()
        listener.ready.wait(10)
        c = publisher(broker.port, f"bench-pub-{schema}")
        seq: dict[tuple[str, str], int] = {}
        injected: dict[tuple[str, str, int], Target] = {}
        total_s = warmup_s + seconds
        published = 0
        k = 0
        next_inject = warmup_s
        infos = []
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < total_s:
            if elapsed >= next_inject:
                tg = targets[len(injected) % len(targets)]
                key = (tg.site, tg.gateway)
                seq[key] = seq.get(key, 0) + 1
                now_us = time.time_ns() // 1000
                payload = encode_readings(
                    tg.gateway,
                    seq[key],
                    [{"sensor": tg.sensor, "ts": format_ts(now_us), "value": tg.value,
                      "unit": tg.unit}],
                )  # fmt: skip
                infos.append(c.publish(readings_topic(*key), payload, qos=1))
                injected[(tg.site, tg.sensor, now_us)] = tg
                published += 1
                next_inject += 1.0
            for gr in plant.readings(k):
                due = t0 + published / rate
                while (delay := due - time.perf_counter()) > 0:
                    time.sleep(min(delay, 0.002))
                key = (gr.site, gr.gateway)
                seq[key] = seq.get(key, 0) + 1
                ts = format_ts(time.time_ns() // 1000)
                payload = encode_readings(
                    gr.gateway,
                    seq[key],
                    [
                        {"sensor": s, "ts": ts, "value": v, "unit": u}
                        for s, u, v in zip(gr.sensor_ids, gr.units, gr.values, strict=True)
                    ],
                )
                infos.append(c.publish(readings_topic(*key), payload, qos=1))
                published += len(gr)
            k += 1
        achieved = published / (time.perf_counter() - t0)
        for info in infos:
            info.wait_for_publish(timeout=60)
        deadline = time.perf_counter() + 120
        m: dict[str, float] = {}
        while time.perf_counter() < deadline:
            m = proc.metrics() or m
            if m.get("tungku_alert_readings_total", 0) >= published:
                break
            time.sleep(0.1)
        time.sleep(1.0)  # the last notifications
        listener.stop.set()
        listener.join(5)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(session_sql(schema))
            row = conn.execute(
                "SELECT count(*), percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lat),"
                " max(lat) FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts)"
                " * 1000 AS lat FROM readings) x"
            ).fetchone()
        proc.stop()
        c.disconnect()
        c.loop_stop()
    assert row is not None
    lat: list[float] = []
    other_activations = 0
    for recv_us, p in listener.got:
        if p.get("action") != "activate":
            continue
        hit = injected.get((p["site_id"], p["subject"], to_us(p["at"])))
        if hit is not None and hit.rule_id == p["rule_id"]:
            lat.append((recv_us - to_us(p["at"])) / 1000)
        else:
            other_activations += 1
    alert = percentiles(lat)
    return {
        "target_readings_per_s": rate,
        "achieved_readings_per_s": achieved,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "readings": published,
        "rows": int(row[0]),
        "target_sensors": len(targets),
        "target_rules": sorted({t.rule_id for t in targets}),
        "injected": len(injected),
        "alerts_notified": len(lat),
        "missed": len(injected) - len(lat),
        "other_activations": other_activations,
        "notifications": len(listener.got),
        "alert_errors": m.get("tungku_alert_errors_total", 0),
        "alert": alert,
        "alert_latencies_ms": [round(x, 1) for x in lat],
        "commit": {"p50_ms": row[1][0], "p99_ms": row[1][1], "max_ms": float(row[2])},
        "target_p99_ms": P99_TARGET_MS,
        "pass": bool(alert) and alert["p99_ms"] <= P99_TARGET_MS and len(lat) == len(injected),
    }


# -- the engine alone, profiled ----------------------------------------------------------------


def profile_engine(
    sites: list[Site], pack: Pack, readings: int, batch_rows: int, tick_us: int, top: int
) -> dict[str, Any]:
    """Engine.process in this process over the normal plant, tick k at k * tick_us, in batches
    of batch_rows as ingest hands them over: once timed, once under cProfile (fresh engines);
    plus dump_state (the checkpoint the evaluator saves every 5 s)."""
    infos: list[SensorInfo] = []
    key_of: dict[tuple[str, str], int] = {}
    for site in sites:
        for g, s in site.sensors():
            key = len(infos) + 1
            key_of[(site.id, s.id)] = key
            infos.append(
                SensorInfo(key, site.id, g.id, s.id, s.kind, s.unit, s.period_s, s.asset,
                           s.min_value, s.max_value)
            )  # fmt: skip
    plant = Plant(sites, SEED)
    ticks = plant.ticks_for(readings)
    start_us = (time.time_ns() // 1000) - ticks * tick_us
    keys: list[int] = []
    ts: list[int] = []
    values: list[float] = []
    for k in range(ticks):
        t = start_us + k * tick_us
        for gr in plant.readings(k):
            keys.extend(key_of[(gr.site, s)] for s in gr.sensor_ids)
            ts.extend([t] * len(gr))
            values.extend(gr.values)
    ka = np.asarray(keys, dtype=np.int64)
    ta = np.asarray(ts, dtype=np.int64)
    va = np.asarray(values, dtype=np.float64)
    qa = np.zeros_like(ka)
    bounds = list(range(0, ka.size, batch_rows))

    engine = Engine(pack, infos)
    per_batch_ms: list[float] = []
    events = 0
    for a in bounds:
        t0 = time.perf_counter()
        events += len(engine.process(ka[a : a + batch_rows], ta[a : a + batch_rows],
                                     va[a : a + batch_rows], qa[a : a + batch_rows]))  # fmt: skip
        per_batch_ms.append((time.perf_counter() - t0) * 1000)
    process_s = sum(per_batch_ms) / 1000
    t1 = time.perf_counter()
    state = engine.dump_state()
    dump_s = time.perf_counter() - t1

    engine = Engine(pack, infos)
    prof = cProfile.Profile()
    prof.enable()
    for a in bounds:
        engine.process(ka[a : a + batch_rows], ta[a : a + batch_rows],
                       va[a : a + batch_rows], qa[a : a + batch_rows])  # fmt: skip
    prof.disable()
    stats = pstats.Stats(prof)
    raw = stats.stats  # type: ignore[attr-defined]
    total_tt = sum(v[2] for v in raw.values())
    rows = [
        {
            "function": f"{Path(file).name}:{line}:{func}",
            "calls": nc,
            "tottime_s": tt,
            "cumtime_s": ct,
            "tottime_share": tt / total_tt if total_tt else 0.0,
            "cumtime_share": ct / total_tt if total_tt else 0.0,
        }
        for (file, line, func), (_cc, nc, tt, ct, _callers) in raw.items()
    ]
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(top)
    return {
        "readings": int(ka.size),
        "batch_rows": batch_rows,
        "tick_us": tick_us,
        "batches": len(bounds),
        "events": events,
        "process_s": process_s,
        "readings_per_s": ka.size / process_s,
        "batch_ms": {
            "p50": float(np.percentile(per_batch_ms, 50)),
            "p99": float(np.percentile(per_batch_ms, 99)),
            "max": max(per_batch_ms),
        },
        "dump_state_s": dump_s,
        "state_bytes": len(state),
        "profiled_s": total_tt,
        "top_self": sorted(rows, key=lambda r: -r["tottime_s"])[:top],
        "top_cumulative": sorted(rows, key=lambda r: -r["cumtime_s"])[:top],
        "text": text.getvalue(),
    }


def profile_shapes(
    sites: list[Site], pack: Pack, readings: int, rate: int, batch_delay_s: float
) -> dict[str, Any]:
    """The engine on both shapes of input the service gives it: a drained backlog (10k-row
    batches, one plant second a tick) and a live feed at `rate` (the batches max_batch_delay
    makes, each sensor reporting many times a second as in (b))."""
    per_tick = 100_000 / Plant(sites, SEED).ticks_for(100_000)  # readings a tick, on average
    tick_us = round(1e6 * per_tick / rate)
    return {
        "drain": profile_engine(sites, pack, readings, 10_000, 1_000_000, 25),
        # Ten seconds of the feed: small batches are slow per reading, and that is the point.
        "live": profile_engine(
            sites, pack, min(readings, rate * 10), max(1, round(rate * batch_delay_s)), tick_us, 25
        ),
    }


# -- wiring ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench.alert_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "TUNGKU_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tungku"
        ),
    )
    p.add_argument("--readings", type=int, default=2_000_000, help="readings in the backlog of (a)")
    p.add_argument("--repeat", type=int, default=3, help="off/on pairs in (a); the medians count")
    p.add_argument("--per-message", type=int, default=100, help="readings per message in (a)")
    p.add_argument("--rate", type=int, default=20_000, help="readings/s published in (b)")
    p.add_argument(
        "--seconds", type=float, default=60.0, help="seconds of (b) with one injection a second"
    )
    p.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of (b) published before injecting"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile the engine in-process (done anyway when the cost target is missed)",
    )
    p.add_argument(
        "--profile-readings",
        type=int,
        default=500_000,
        help="readings for the drain-shaped profile",
    )
    p.add_argument("--out", default="bench/results/alerts.json", help="where the JSON goes")
    p.add_argument(
        "--only",
        choices=["cost", "latency", "profile"],
        action="append",
        help="run only these parts (repeatable); no table then, just the JSON on stderr",
    )
    args = p.parse_args(argv)

    sites = load_default_fleet().sites()
    pack = load_pack(default_pack_path())
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
        "fleet": {
            "sites": len(sites),
            "sensors": sum(len(list(s.sensors())) for s in sites),
            "pack": f"{pack.name} {pack.version}",
            "rules": len(pack.rules),
        },
    }
    wanted = set(args.only or ["cost", "latency"])
    try:
        if "latency" in wanted:
            quiesce(args.database_url)
            print("running latency ...", file=sys.stderr, flush=True)
            results["latency"] = bench_latency(
                args.database_url,
                broker,
                sites,
                pack,
                args.rate,
                args.seconds,
                args.warmup,
                log_dir,
            )
            print(json.dumps(results["latency"]), file=sys.stderr, flush=True)
        if "cost" in wanted:
            print("running cost ...", file=sys.stderr, flush=True)
            results["cost"] = bench_cost(
                args.database_url,
                broker,
                sites,
                args.readings,
                args.per_message,
                args.repeat,
                log_dir,
            )
            print(json.dumps(results["cost"]), file=sys.stderr, flush=True)
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    missed = "cost" in results and not results["cost"]["pass"]
    if args.profile or missed or "profile" in wanted:
        print("profiling the engine in-process ...", file=sys.stderr, flush=True)
        prof = profile_shapes(
            sites, pack, args.profile_readings, args.rate, Settings().max_batch_delay_ms / 1000
        )
        for shape, r in prof.items():
            print(f"--- engine, {shape}-shaped batches ---", file=sys.stderr)
            print(r.pop("text"), file=sys.stderr)
        results["profile"] = prof
    if args.only:
        print(json.dumps(results, indent=2), file=sys.stderr)
        return 0
    print_table(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


def print_table(results: dict[str, Any]) -> None:
    cost, lat = results["cost"], results["latency"]
    off, on = cost["off"], cost["on"]
    al, cm = lat["alert"], lat["commit"]

    def runs(r: dict[str, Any]) -> str:
        return " / ".join(f"{x / 1000:.0f}k" for x in r["runs_readings_per_s"])

    rows = [
        (f"(a) drain {cost['readings']:,} readings, alerting off, median",
         f"{off['readings_per_s']:,.0f} readings/s", ""),
        ("    runs", runs(off), ""),
        ("(a) same backlog, alerting on (all evaluated), median",
         f"{on['readings_per_s']:,.0f} readings/s", ""),
        ("    runs", runs(on), ""),
        ("(a) cost of rule evaluation = 1 - on/off", f"{cost['cost']:.1%}",
         f"<= {COST_TARGET:.0%}"),
        ("    each pair", " / ".join(f"{c:.0%}" for c in cost["cost_of_each_pair"]), ""),
        ("(a) on run: last evaluation after last commit",
         f"{cost['eval_lag_after_last_commit_s']:.2f} s", ""),
        ("(a) on run (median): readings/s to the last commit",
         f"{on['commit_readings_per_s']:,.0f} readings/s", ""),
        (f"(b) publish -> alert notified p50 at {lat['achieved_readings_per_s']:,.0f} readings/s",
         f"{al.get('p50_ms', float('nan')):.1f} ms", ""),
        ("(b) publish -> alert notified p95", f"{al.get('p95_ms', float('nan')):.1f} ms", ""),
        ("(b) publish -> alert notified p99", f"{al.get('p99_ms', float('nan')):.1f} ms",
         f"<= {P99_TARGET_MS:.0f} ms"),
        ("(b) publish -> alert notified max", f"{al.get('max_ms', float('nan')):.1f} ms", ""),
        ("(b) alerts notified / injected", f"{lat['alerts_notified']} / {lat['injected']}",
         "all"),
        ("(b) ordinary readings publish -> commit p50 / p99",
         f"{cm['p50_ms']:.1f} / {cm['p99_ms']:.1f} ms", ""),
        ("rows == readings published (a off, a on, b)",
         str(off["rows"] == cost["readings"] == on["rows"] and lat["rows"] == lat["readings"]),
         "True"),
        ("(a) cost target", "PASS" if cost["pass"] else "FAIL", ""),
        ("(b) latency target", "PASS" if lat["pass"] else "FAIL", ""),
    ]  # fmt: skip
    if "profile" in results:
        for shape, pr in results["profile"].items():
            rows.append(
                (
                    f"engine alone in-process, {shape}-shaped batches of {pr['batch_rows']:,}",
                    f"{pr['readings_per_s']:,.0f} readings/s",
                    "",
                )
            )
            rows.append(
                (
                    "    ms per batch p50 / p99",
                    f"{pr['batch_ms']['p50']:.1f} / {pr['batch_ms']['p99']:.1f}",
                    "",
                )
            )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>24}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>24}  {target}")


if __name__ == "__main__":
    sys.exit(main())
