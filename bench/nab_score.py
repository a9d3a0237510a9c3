"""NAB scorer: the Numenta Anomaly Benchmark's published scoring, reimplemented.

Owns the arithmetic of a NAB score: the scaled-sigmoid weight of every row, the probationary
period, the corpus-wide threshold sweep (one threshold per detector and profile, the one with
the best total raw score), per-file scoring at a threshold, and the normalisation against the
null and perfect detectors. The core functions are pure (arrays in, numbers out); only the
loaders and the CLI read files, and nothing here knows where the corpus lives — the CLI takes
it as an argument.

Checked against NAB's own score files for the KNN-CAD detector:

    .venv/bin/python -m bench.nab_score --nab-dir ../shared/data/nab \
        --detector-results ../shared/data/nab/results/knncad

The method follows NAB's ``sweeper.py`` (MIT licence, numenta/NAB): a row at or above the
threshold is a detection; a window is worth -A_fn until detected, then the weight of its
earliest detected row; a detection outside windows adds its (negative) weight.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750  # NAB: min(floor(0.15 * rows), 0.15 * 5000)
OUTSIDE = -1  # window id of a scored row outside every window
PROBATION = -2  # window id of a row in the probationary period (never scored)
NO_DETECTION_THRESHOLD = 1.1  # NAB's first sweep threshold: above every score in [0, 1]
TOLERANCE = 0.01


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """The weights of one NAB scoring profile (A_tp, A_fp, A_fn)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FileScore:
    """The raw score of one file at one threshold, with NAB's row counts."""

    raw: float
    tp: int
    tn: int
    fp: int
    fn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesResult:
    """One file's detector output aligned with its anomaly windows (as row indices)."""

    scores: np.ndarray
    windows: list[tuple[int, int]]


def scaled_sigmoid(y: float | np.ndarray) -> np.ndarray:
    """Return NAB's f(y) = 2 / (1 + e^(5y)) - 1, and -1 where y > 3."""
    y = np.asarray(y, dtype=float)
    with np.errstate(over="ignore"):
        f = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y > 3.0, -1.0, f)


def probation_rows(n_rows: int) -> int:
    """Return how many leading rows of an n-row file are probationary (not scored)."""
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS)


def window_rows(
    timestamps: Sequence[object], windows: Sequence[tuple[object, object]]
) -> list[tuple[int, int]]:
    """Return each (start, end) timestamp window as inclusive (first, last) row indices."""
    ts = np.asarray(timestamps, dtype="datetime64[us]")
    out = []
    for start, end in windows:
        first, last = np.searchsorted(ts, np.asarray([start, end], dtype="datetime64[us]"))
        if (
            last >= len(ts)
            or ts[first] != np.datetime64(start, "us")
            or ts[last] != np.datetime64(end, "us")
        ):
            msg = f"window {start} .. {end} does not start and end on rows of the series"
            raise ValueError(msg)
        out.append((int(first), int(last)))
    return out


def row_weights(
    n_rows: int, windows: Sequence[tuple[int, int]], profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """Return each row's NAB weight and window id (k, OUTSIDE or PROBATION)."""
    weights = np.full(n_rows, -profile.fp_weight)  # no preceding window: f = -1
    ids = np.full(n_rows, OUTSIDE, dtype=np.int64)
    idx = np.arange(n_rows)
    max_tp = float(scaled_sigmoid(-1.0))
    ordered = sorted(windows)
    for k, (first, last) in enumerate(ordered):
        width = last - first + 1
        inside = idx[first : last + 1]
        weights[first : last + 1] = (
            profile.tp_weight * scaled_sigmoid(-(last - inside + 1) / width) / max_tp
        )
        ids[first : last + 1] = k
        stop = ordered[k + 1][0] if k + 1 < len(ordered) else n_rows
        after = idx[last + 1 : stop]
        # NAB divides by (width - 1): a one-row window would divide by zero there too.
        weights[last + 1 : stop] = profile.fp_weight * scaled_sigmoid(
            np.abs(last - after) / (width - 1)
        )
    ids[: probation_rows(n_rows)] = PROBATION
    return weights, ids


def score_rows(
    scores: np.ndarray, weights: np.ndarray, ids: np.ndarray, threshold: float, profile: Profile
) -> FileScore:
    """Return the raw score and counts of rows with given weights and window ids at a threshold."""
    detected = np.asarray(scores, dtype=float) >= threshold
    outside = ids == OUTSIDE
    in_window = ids >= 0
    raw = float(weights[detected & outside].sum())
    for k in np.unique(ids[in_window]):
        hits = detected & (ids == k)
        # Weights fall across a window, so the best detected row is the earliest one.
        raw += float(weights[hits].max()) if hits.any() else -profile.fn_weight
    return FileScore(
        raw=raw,
        tp=int((detected & in_window).sum()),
        tn=int((~detected & outside).sum()),
        fp=int((detected & outside).sum()),
        fn=int((~detected & in_window).sum()),
    )


def score_file(
    scores: np.ndarray, windows: Sequence[tuple[int, int]], threshold: float, profile: Profile
) -> FileScore:
    """Return one file's raw score and row counts at a threshold; windows are row indices."""
    weights, ids = row_weights(len(scores), windows, profile)
    return score_rows(scores, weights, ids, threshold, profile)


def sweep_threshold(series: Sequence[SeriesResult], profile: Profile) -> tuple[float, float]:
    """Return the corpus-wide (threshold, raw score) with the best total raw score.

    Candidate thresholds are NAB's: 1.1 (no detection) and every distinct anomaly score;
    on a tie the highest threshold wins, as NAB's stable sort keeps it first.
    """
    all_scores = np.concatenate([np.asarray(s.scores, dtype=float) for s in series])
    candidates = np.unique(np.append(all_scores, NO_DETECTION_THRESHOLD))[::-1]  # descending
    total = np.zeros(len(candidates))
    for s in series:
        scores = np.asarray(s.scores, dtype=float)
        weights, ids = row_weights(len(scores), s.windows, profile)
        fp_rows = ids == OUTSIDE
        # False positives: sum of weights of outside rows with score >= t, for every t.
        fp_scores = scores[fp_rows]
        order = np.argsort(fp_scores)
        cum = np.concatenate([[0.0], np.cumsum(weights[fp_rows][order][::-1])])
        n_at_or_above = len(fp_scores) - np.searchsorted(fp_scores[order], candidates, side="left")
        total += cum[n_at_or_above]
        for k in np.unique(ids[ids >= 0]):
            rows = np.flatnonzero(ids == k)
            # The earliest detection at t is the first row whose running max reaches t.
            running_max = np.maximum.accumulate(scores[rows])
            first = np.searchsorted(running_max, candidates, side="left")
            hit = first < len(rows)
            total += np.where(
                hit, weights[rows][np.minimum(first, len(rows) - 1)], -profile.fn_weight
            )
    best = int(np.argmax(total))  # first maximum = highest threshold
    return float(candidates[best]), float(total[best])


def normalise(raw: float, n_windows: int, profile: Profile) -> float:
    """Return 100 * (S - S_null) / (S_perfect - S_null) for a corpus of n windows."""
    null = -profile.fn_weight * n_windows
    perfect = profile.tp_weight * n_windows
    return 100.0 * (raw - null) / (perfect - null)


def score_corpus(
    series: Mapping[str, SeriesResult], profiles: Sequence[Profile]
) -> dict[str, float]:
    """Return each profile's normalised score of a detector's results over a corpus."""
    n_windows = sum(len(s.windows) for s in series.values())
    out = {}
    for profile in profiles:
        _, raw = sweep_threshold(list(series.values()), profile)
        out[profile.name] = normalise(raw, n_windows, profile)
    return out


# --- loaders (file I/O) ------------------------------------------------------------------


def load_profiles(path: Path) -> list[Profile]:
    """Read NAB's config/profiles.json."""
    raw = json.loads(path.read_text())
    return [
        Profile(
            name=name,
            tp_weight=float(p["CostMatrix"]["tpWeight"]),
            fp_weight=float(p["CostMatrix"]["fpWeight"]),
            fn_weight=float(p["CostMatrix"]["fnWeight"]),
        )
        for name, p in raw.items()
    ]


def read_detector_file(path: Path) -> tuple[list[str], np.ndarray]:
    """Read a detector's per-row results file: (timestamps, anomaly scores)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["timestamp"] for r in rows], np.array([float(r["anomaly_score"]) for r in rows])


def load_results(results_dir: Path, windows_path: Path) -> dict[str, SeriesResult]:
    """Load every ``<category>/<detector>_<file>.csv`` under a detector's results dir."""
    labelled = json.loads(windows_path.read_text())
    out = {}
    for rel, windows in labelled.items():
        category, name = rel.split("/")
        matches = sorted((results_dir / category).glob(f"*_{name}"))
        if len(matches) != 1:
            msg = f"expected one results file for {rel} under {results_dir}, found {len(matches)}"
            raise FileNotFoundError(msg)
        timestamps, scores = read_detector_file(matches[0])
        as_iso = [(start.replace(" ", "T"), end.replace(" ", "T")) for start, end in windows]
        rows = window_rows([t.replace(" ", "T") for t in timestamps], as_iso)
        out[rel] = SeriesResult(scores=scores, windows=rows)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print a detector's normalised NAB scores next to the published ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab-dir", type=Path, required=True, help="NAB data root")
    parser.add_argument(
        "--detector-results", type=Path, required=True, help="a detector's results dir"
    )
    parser.add_argument(
        "--detector", help="name in results/final_results.json (default: the dir name)"
    )
    args = parser.parse_args(argv)
    profiles = load_profiles(args.nab_dir / "config" / "profiles.json")
    series = load_results(args.detector_results, args.nab_dir / "labels" / "combined_windows.json")
    detector = args.detector or args.detector_results.name
    published = json.loads((args.nab_dir / "results" / "final_results.json").read_text()).get(
        detector, {}
    )
    n_windows = sum(len(s.windows) for s in series.values())
    ok = True
    print(
        f"{'profile':<20} {'threshold':>10} {'raw':>10} {'score':>8} {'published':>10} {'diff':>8}"
    )
    for profile in profiles:
        threshold, raw = sweep_threshold(list(series.values()), profile)
        score = normalise(raw, n_windows, profile)
        ref = published.get(profile.name)
        diff = "" if ref is None else f"{score - ref:+8.3f}"
        ok = ok and ref is not None and abs(score - ref) <= TOLERANCE
        ref_text = "" if ref is None else f"{ref:10.2f}"
        figures = f"{threshold:10.4f} {raw:10.4f} {score:8.2f} {ref_text:>10} {diff:>8}"
        print(f"{profile.name:<20} {figures}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
