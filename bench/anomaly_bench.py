"""The anomaly detector's benchmark: NAB scores (three profiles, with and without ranges) and
throughput on one core, written to bench/results/anomaly.json.

    .venv/bin/python -m bench.anomaly_bench ../shared/data/nab [--out bench/results/anomaly.json]

Throughput is measured on synthetic readings (2,000 sensors x 20 readings per call, and the
live shape of 424 sensors x 3) with the process pinned to one CPU, against a vectorised EWMA
z-score on the same batches in the same run (the simplest streaming detector: the ratio says
what the richer method costs). The NAB corpus is read from the path given; it is not part of
the project.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from alerting.anomaly import AnomalyDetector, Params
from bench.nab_corpus import load_corpus, run_lockstep, score_nab

#: Published detectors to print beside ours, as named in NAB's results/final_results.json.
PUBLISHED = (
    "ARTime", "numenta", "contextOSE", "earthgeckoSkyline", "knncad", "relativeEntropy",
    "randomCutForest", "windowedGaussian",
)  # fmt: skip


class _EwmaZ:
    """Baseline: per-sensor EWMA mean and variance, score = squashed |z| (vectorised)."""

    def __init__(self, n: int, alpha: float = 0.01) -> None:
        self.m = np.zeros(n)
        self.v = np.ones(n)
        self.alpha = alpha

    def score(self, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        m, v = self.m[keys], self.v[keys]
        d = values - m
        z = np.abs(d) / np.sqrt(v + 1e-12)
        self.m[keys] = m + self.alpha * d
        self.v[keys] = (1 - self.alpha) * (v + self.alpha * d * d)
        return np.asarray(1.0 - np.exp(-z / 3.0))


def _batches(
    sensors: int, per_call: int, calls: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1000, sensors)
    out = []
    for c in range(calls):
        keys = np.tile(np.arange(sensors, dtype=np.int64), per_call)
        step = np.repeat(np.arange(per_call, dtype=np.int64), sensors)
        ts = (1_800_000_000 + (c * per_call + step) * 10) * 1_000_000
        vals = base[keys] + rng.standard_normal(keys.size) * 5.0
        out.append((keys, ts.astype(np.int64), vals))
    return out


def throughput(sensors: int, per_call: int, calls: int) -> dict[str, float]:
    """Readings/s of the detector and of the EWMA z baseline on the same batches, in steady
    state: the detector has learnt every sensor (400 readings each) before the clock starts."""
    warm = _batches(sensors, 400, 1, 1)[0]
    batches = _batches(sensors, per_call, calls, 2)
    det = AnomalyDetector()
    keys, ts, vals = warm
    det.score(keys, ts - 10**13, vals)  # learning, well before the timed readings
    t0 = time.perf_counter()
    for keys, ts, vals in batches:
        det.score(keys, ts, vals)
    spent = time.perf_counter() - t0
    base = _EwmaZ(sensors)
    t0 = time.perf_counter()
    for keys, _ts, vals in batches:
        base.score(keys, vals)
    spent_base = time.perf_counter() - t0
    n = sensors * per_call * calls
    return {
        "sensors": sensors,
        "readings_per_call": sensors * per_call,
        "readings": n,
        "detector_readings_per_s": n / spent,
        "ewma_z_readings_per_s": n / spent_base,
        "ratio_to_ewma_z": (n / spent) / (n / spent_base),
        "ms_per_call": 1000 * spent / calls,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the figures, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nab_dir", type=Path, help="NAB root (holds data/, labels/, config/)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/anomaly.json"))
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    corpus = load_corpus(args.nab_dir)
    nab: dict[str, dict[str, float]] = {}
    for label, use_range in (("file_range", True), ("learnt_range", False)):
        scores, _ = run_lockstep(corpus, use_range=use_range)
        nab[label] = {k: round(v[0], 2) for k, v in score_nab(args.nab_dir, corpus, scores).items()}
        print(f"NAB {label:<13}", "  ".join(f"{k} {v:.2f}" for k, v in nab[label].items()))
    board = json.loads((args.nab_dir / "results" / "final_results.json").read_text())
    published = {k: {p: round(x, 2) for p, x in board[k].items()} for k in PUBLISHED if k in board}
    for k, v in published.items():
        print(f"published {k:<18}", "  ".join(f"{p} {x:.2f}" for p, x in v.items()))
    bulk = throughput(2000, 20, 25)
    live = throughput(424, 3, 400)
    for name, r in (("bulk 2000x20", bulk), ("live 424x3", live)):
        print(
            f"{name:<13} detector {r['detector_readings_per_s']:,.0f} readings/s, EWMA z "
            f"{r['ewma_z_readings_per_s']:,.0f}/s, ratio {r['ratio_to_ewma_z']:.3f}, "
            f"{r['ms_per_call']:.2f} ms per call"
        )
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, pinned to one",
        "params": asdict(Params()),
        "bytes_per_sensor": AnomalyDetector().bytes_per_sensor(),
        "nab": nab,
        "published": published,
        "throughput_bulk": bulk,
        "throughput_live": live,
        "target_readings_per_s": 200_000,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"bytes per sensor {result['bytes_per_sensor']}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
