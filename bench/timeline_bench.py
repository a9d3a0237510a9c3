"""Timeline benchmark: how fast the API answers an inspector's timeline, and what the rollups
that make it fast cost ingest.

Loads a realistic volume: one site of the default simulator fleet (morowali-a: 201 sensors
of real kinds and periods, 1 s to 10 s; ~11.2 M readings a day) for --hours of plant time
ending now, values from simulator.plant.Plant, written by ingest's own ReadingStore (COPY,
insert, rollups) in --batch-row batches. A full-day load takes a few minutes; --keep reuses
a schema loaded before.

Then, against the real app (`dashboards.app`, served by uvicorn in this process, through its
lifespan and a real HTTP connection), the timeline of the whole facility, every sensor,
--requests times each for windows of 1 h, 24 h and 30 days, default point budget: p50, p95
and max of the full response time (query, JSON, transfer). The ratio of each window to the
1-h window in the same run says whether a month loads as fast as an hour.

Baselines measured in the same run:
- raw: the same 24-h downsampling computed from the raw readings (what the timeline would
  cost without rollups), the SQL alone, --raw-requests times;
- ingest: batches of the same readings written with and without the rollup statements (the
  SQL ingest runs, on one connection, alternating), as readings/s; cost = 1 - with/without.

Target (issue 5): 24 h of 200 sensors, downsampled: p95 <= 300 ms.
Writes bench/results/timeline.json.
Usage: .venv/bin/python -m bench.timeline_bench [--hours 24] [--requests 40] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg

from dashboards import auth
from ingest import store as ingest_store
from ingest.batch import Batch
from ingest.migrate import migrate, session_sql
from ingest.settings import Settings
from ingest.store import ReadingStore, load_site
from simulator.fleet import load_default_fleet
from simulator.plant import Plant
from tests.fix_api import serve

DB_URL = os.environ.get(
    "TUNGKU_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tungku_bench"
)
SCHEMA = "bench_timeline"
SITE = "morowali-a"
OUT = Path(__file__).parent / "results" / "timeline.json"


def _ensure_db() -> None:
    admin = DB_URL.rsplit("/", 1)[0] + "/postgres"
    name = DB_URL.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def _fresh_schema(schema: str) -> None:
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        migrate(conn, schema)


def _batches(hours: float, rows: int, end: datetime) -> Any:
    """(keys, ts_us, values) chunks of the plant's readings, oldest first."""
    fleet = load_default_fleet()
    site = next(s for s in fleet.sites() if s.id == SITE)
    plant = Plant([site], seed=7)
    ids = [sid for _s, _g, sid in plant.sensors()]
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(session_sql(SCHEMA))
        key_of = dict(
            conn.execute("SELECT id, key FROM sensors WHERE site_id = %s", (SITE,)).fetchall()
        )
    keys = np.array([key_of[i] for i in ids], dtype=np.int64)
    periods = np.array([max(1, round(s.period_s)) for _g, s in site.sensors()], dtype=np.int64)
    seconds = int(hours * 3600)
    t0 = int(end.timestamp()) - seconds
    kk, tt, vv = [], [], []
    held = 0
    for k in range(seconds):
        v = plant.values(k)
        due = k % periods == 0
        kk.append(keys[due])
        tt.append(np.full(int(due.sum()), (t0 + k) * 1_000_000, dtype=np.int64))
        vv.append(v[due])
        held += int(due.sum())
        if held >= rows or k == seconds - 1:
            yield np.concatenate(kk), np.concatenate(tt), np.concatenate(vv)
            kk, tt, vv, held = [], [], [], 0


async def _load(hours: float, rows: int, end: datetime) -> tuple[int, float]:
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        site = next(s for s in load_default_fleet().sites() if s.id == SITE)
        load_site(conn, SCHEMA, site)
    store = ReadingStore(database_url=DB_URL, schema=SCHEMA)
    n, t_start = 0, time.perf_counter()
    try:
        for keys, ts, vals in _batches(hours, rows, end):
            await store.commit_batch(
                Batch(
                    started_mono_s=0.0,
                    sensor_keys=keys.tolist(),
                    ts_us=ts.tolist(),
                    values=vals.tolist(),
                    qualities=[0] * len(vals),
                )
            )
            n += len(vals)
            if n % (rows * 50) < rows:
                print(f"  loaded {n:,} readings", file=sys.stderr)
    finally:
        await store.close()
    return n, time.perf_counter() - t_start


def _stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "n": len(s),
        "p50_ms": round(statistics.median(s) * 1000, 1),
        "p95_ms": round(s[min(len(s) - 1, int(np.ceil(0.95 * len(s))) - 1)] * 1000, 1),
        "max_ms": round(s[-1] * 1000, 1),
    }


def _api_times(requests: int, end: datetime) -> dict[str, Any]:
    settings = Settings(database_url=DB_URL, db_schema=SCHEMA)

    async def admin(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(session_sql(SCHEMA))
        await conn.execute("DELETE FROM users WHERE username = 'bench'")
        await auth.create_user(
            conn,
            username="bench",
            role=auth.Role.ADMIN,
            password="bench-password-1",  # noqa: S106 - a benchmark user
            sites=[],
            actor="bench",
            now=datetime.now(UTC),
        )

    async def make() -> None:
        async with await psycopg.AsyncConnection.connect(DB_URL, autocommit=True) as conn:
            await admin(conn)

    asyncio.run(make())
    server, thread, url = serve(settings)
    out: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            tok = c.post(
                "/api/v1/auth/login", json={"username": "bench", "password": "bench-password-1"}
            ).json()
            c.headers["Authorization"] = f"Bearer {tok['access_token']}"
            for label, span in (
                ("1h", timedelta(hours=1)),
                ("24h", timedelta(hours=24)),
                ("30d", timedelta(days=30)),
            ):
                params = {"from": (end - span).isoformat(), "to": end.isoformat()}
                times, doc = [], {}
                for i in range(requests + 3):
                    t = time.perf_counter()
                    r = c.get(f"/api/v1/facilities/{SITE}/timeline", params=params)
                    dt = time.perf_counter() - t
                    assert r.status_code == 200, r.text
                    if i >= 3:  # warm-up
                        times.append(dt)
                    doc = r.json()
                series = doc["series"]
                out[label] = {
                    **_stats(times),
                    "bucket_s": doc["bucket_s"],
                    "source": doc["source"],
                    "series": len(series),
                    "points": sum(len(s["t"]) for s in series),
                    "readings_covered": sum(sum(s["n"]) for s in series),
                    "bytes": len(r.content),
                }
                print(f"  {label}: {out[label]}", file=sys.stderr)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return out


def _raw_baseline(requests: int, end: datetime) -> dict[str, Any]:
    from dashboards.timeline import series_sql  # noqa: PLC0415

    q = series_sql("readings")
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(session_sql(SCHEMA))
        keys = [r[0] for r in conn.execute("SELECT key FROM sensors WHERE site_id = %s", (SITE,))]
        params = {
            "b": timedelta(seconds=300),
            "keys": keys,
            "f": end - timedelta(hours=24),
            "to": end,
        }
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            conn.execute(q, params).fetchall()
            times.append(time.perf_counter() - t)
    return _stats(times)


def _ingest_cost(batches: int, rows: int, end: datetime) -> dict[str, Any]:
    """Rows/s of ingest's staged insert with and without the rollup statements, alternating."""
    results: dict[str, list[float]] = {"with": [], "without": []}
    schemas = {"with": f"{SCHEMA}_w", "without": f"{SCHEMA}_wo"}
    site = next(s for s in load_default_fleet().sites() if s.id == SITE)
    for sch in schemas.values():
        _fresh_schema(sch)
        with psycopg.connect(DB_URL, autocommit=True) as conn:
            load_site(conn, sch, site)
    fast = ingest_store._INSERT_FAST
    rollup = ingest_store._rollup("readings_staging")
    chunks = _batches(rows * batches / 11_200_000 * 24, rows, end)
    with psycopg.connect(DB_URL) as cw, psycopg.connect(DB_URL) as cwo:
        for mode, conn in (("with", cw), ("without", cwo)):
            conn.execute(session_sql(schemas[mode]))
            conn.execute(
                "CREATE TEMP TABLE readings_staging (sensor_key integer, ts timestamptz,"
                " value double precision, quality smallint) ON COMMIT DELETE ROWS"
            )
            conn.commit()
        for keys, ts, vals in chunks:
            data = ingest_store.copy_rows(
                keys.tolist(), ts.tolist(), vals.tolist(), [0] * len(vals)
            )
            for mode, conn in (("with", cw), ("without", cwo)):
                t = time.perf_counter()
                with conn.cursor() as cur:
                    with cur.copy(
                        "COPY readings_staging (sensor_key, ts, value, quality)"
                        " FROM STDIN (FORMAT BINARY)"
                    ) as cp:
                        cp.write(data)
                    cur.execute(fast + ("; " + rollup if mode == "with" else ""))
                conn.commit()
                results[mode].append(len(vals) / (time.perf_counter() - t))
    w, wo = statistics.median(results["with"]), statistics.median(results["without"])
    return {
        "batches": len(results["with"]),
        "rows_per_batch": rows,
        "with_rollups_rows_per_s": round(w),
        "without_rollups_rows_per_s": round(wo),
        "cost": round(1 - w / wo, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--hours", type=float, default=24.0, help="plant hours to load (default 24)")
    p.add_argument("--requests", type=int, default=40, help="timed requests per window")
    p.add_argument("--raw-requests", type=int, default=5, help="timed raw-baseline queries")
    p.add_argument("--batch-rows", type=int, default=20_000, help="readings per ingest batch")
    p.add_argument("--ingest-batches", type=int, default=60, help="batches for the ingest cost")
    p.add_argument("--keep", action="store_true", help="reuse the schema loaded by a previous run")
    p.add_argument("-o", "--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    _ensure_db()
    end = datetime.now(UTC).replace(microsecond=0)
    result: dict[str, Any] = {
        "machine": os.uname().nodename,
        "cpus": os.cpu_count(),
        "site": SITE,
        "hours": args.hours,
    }
    if args.keep:
        with psycopg.connect(DB_URL, autocommit=True) as conn:
            conn.execute(session_sql(SCHEMA))
            last = conn.execute(
                "SELECT max(bucket) + interval '1 minute' FROM readings_1m"
            ).fetchone()
        end = last[0] if last and last[0] else end
        result["load"] = "kept from an earlier run"
    else:
        _fresh_schema(SCHEMA)
        n, secs = asyncio.run(_load(args.hours, args.batch_rows, end))
        result["load"] = {"readings": n, "seconds": round(secs, 1), "rows_per_s": round(n / secs)}
        print(f"loaded {n:,} readings in {secs:.0f} s", file=sys.stderr)
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(session_sql(SCHEMA))
        # As autovacuum would have by the time anyone looks at a day (see migration 0004).
        conn.execute("VACUUM ANALYZE readings")
        conn.execute("VACUUM ANALYZE readings_1m")
        conn.execute("VACUUM ANALYZE readings_1h")
    result["api"] = _api_times(args.requests, end)
    one = result["api"]["1h"]["p95_ms"]
    result["ratio_p95_to_1h"] = {k: round(v["p95_ms"] / one, 2) for k, v in result["api"].items()}
    result["raw_24h_sql"] = _raw_baseline(args.raw_requests, end)
    result["rollup_speedup_24h_p50"] = round(
        result["raw_24h_sql"]["p50_ms"] / result["api"]["24h"]["p50_ms"], 1
    )
    result["ingest"] = _ingest_cost(args.ingest_batches, args.batch_rows, end)
    result["target"] = {"24h_p95_ms": 300, "met": result["api"]["24h"]["p95_ms"] <= 300}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
