"""The NAB corpus run through Tungku's anomaly detector, the way the service runs it.

Owns reading the corpus (data/ and labels/ under a NAB root given as an argument) and playing
it through one `AnomalyDetector` in lockstep: every file is a sensor, and each call carries
the next row of every file still running, so the detector sees many sensors per batch as in
the service. Scores are then judged by `bench.nab_score`. Nothing here tunes per file.

    .venv/bin/python -m bench.nab_corpus ../shared/data/nab [--no-range]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alerting.anomaly import AnomalyDetector, Params
from bench.nab_score import SeriesResult, load_profiles, normalise, sweep_threshold, window_rows


@dataclass(frozen=True, slots=True)
class Series:
    """One NAB data file."""

    name: str  # "<category>/<file>.csv"
    stamps: list[str]
    ts_us: np.ndarray
    values: np.ndarray
    windows: list[tuple[int, int]]


def load_corpus(nab_dir: Path) -> list[Series]:
    """Every labelled file of the corpus, with its windows as row indices."""
    labelled = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    out = []
    for rel, windows in sorted(labelled.items()):
        with (nab_dir / "data" / rel).open(newline="") as f:
            rows = list(csv.DictReader(f))
        stamps = [r["timestamp"].replace(" ", "T") for r in rows]
        ts = np.asarray(stamps, dtype="datetime64[us]").astype(np.int64)
        values = np.array([float(r["value"]) for r in rows])
        wins = window_rows(stamps, [(a.replace(" ", "T"), b.replace(" ", "T")) for a, b in windows])
        out.append(Series(rel, stamps, ts, values, wins))
    return out


def run_lockstep(
    corpus: Sequence[Series], *, use_range: bool, params: Params | None = None
) -> tuple[list[np.ndarray], float]:
    """Scores of every file, and the seconds spent in the detector."""
    det = AnomalyDetector(params)
    ranges = (
        {i: (float(s.values.min()), float(s.values.max())) for i, s in enumerate(corpus)}
        if use_range
        else None
    )
    scores = [np.zeros(len(s.values)) for s in corpus]
    longest = max(len(s.values) for s in corpus)
    keys_all = np.arange(len(corpus), dtype=np.int64)
    lengths = np.array([len(s.values) for s in corpus])
    # Rows that go back in time (a few NAB files have them) are scored in file order: the
    # detector refuses time travel, so such a row is moved 1 us after its predecessor.
    ts = [_monotonic(s.ts_us) for s in corpus]
    spent = 0.0
    for r in range(longest):
        live = keys_all[lengths > r]
        kt = np.array([ts[i][r] for i in live.tolist()], dtype=np.int64)
        kv = np.array([corpus[i].values[r] for i in live.tolist()])
        t0 = time.perf_counter()
        sc = det.score(live, kt, kv, ranges)
        spent += time.perf_counter() - t0
        for i, x in zip(live.tolist(), np.nan_to_num(sc).tolist(), strict=True):
            scores[i][r] = x
    return scores, spent


def _monotonic(ts: np.ndarray) -> np.ndarray:
    out = ts.copy()
    for i in range(1, out.size):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + 1
    return out


def score_nab(
    nab_dir: Path, corpus: Sequence[Series], scores: Sequence[np.ndarray]
) -> dict[str, tuple[float, float]]:
    """Per profile: (normalised score, threshold)."""
    series = [
        SeriesResult(scores=sc, windows=s.windows) for s, sc in zip(corpus, scores, strict=True)
    ]
    n_windows = sum(len(s.windows) for s in corpus)
    out = {}
    for profile in load_profiles(nab_dir / "config" / "profiles.json"):
        threshold, raw = sweep_threshold(series, profile)
        out[profile.name] = (normalise(raw, n_windows, profile), threshold)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the detector's NAB scores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nab_dir", type=Path, help="NAB root (holds data/, labels/, config/)")
    parser.add_argument(
        "--no-range", action="store_true", help="learn each file's range, as the service does"
    )
    args = parser.parse_args(argv)
    corpus = load_corpus(args.nab_dir)
    scores, spent = run_lockstep(corpus, use_range=not args.no_range)
    for name, (score, thr) in score_nab(args.nab_dir, corpus, scores).items():
        print(f"{name:<20} {score:7.2f}  (threshold {thr:.4f})")
    n = sum(len(s.values) for s in corpus)
    print(f"{n} readings, {spent:.2f} s in the detector ({n / spent:,.0f} readings/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
