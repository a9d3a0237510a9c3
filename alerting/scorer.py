"""`tungku anomaly score`: a `timestamp,value` CSV file through the service's anomaly detector.

Owns the command's options, reading and checking the input file, and writing
`timestamp,value,anomaly_score`. The scores come from `alerting.anomaly.AnomalyDetector` with
its one parameter set and a fresh state: exactly the code the service runs. It must not score
anything itself.

Range: by default the file's own min/max is the sensor's range (the Numenta Anomaly
Benchmark's rules allow it); `--learn` learns it from the first readings as the service does;
`--range LO HI` gives it. Rows whose time goes backwards are scored in file order (moved 1 us
after their predecessor) with a warning. Exit status: 0 done, 2 a file cannot be read or
written or a row is bad (its line and problem named; no output file is left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from alerting.anomaly import AnomalyDetector

EXIT_OK = 0
EXIT_BAD = 2


class ScoreError(ValueError):
    """Raised when the input cannot be scored; the message names the line and problem."""


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tungku anomaly score` to the tungku subcommands."""
    anomaly = sub.add_parser(
        "anomaly",
        help="the streaming anomaly detector (score a file)",
        description="The streaming anomaly detector that raises advisory alerts.",
    )
    asub = anomaly.add_subparsers(dest="anomaly_command", required=True, metavar="ACTION")
    score = asub.add_parser(
        "score",
        help="score a timestamp,value CSV file",
        description="Stream INPUT (CSV with columns timestamp,value; ISO 8601 timestamps, UTC "
        "if no offset) through the service's anomaly detector with a fresh state and write "
        "timestamp,value,anomaly_score (score in [0, 1]; empty where the value is not a finite "
        "number). By default the file's min/max is the sensor's range. Exit status: 0 done, "
        "2 unreadable or bad input or unwritable output.",
    )
    score.add_argument("input", type=Path, metavar="INPUT.csv")
    score.add_argument(
        "-o", "--output", type=Path, metavar="OUT.csv", help="output file (default: stdout)"
    )
    how = score.add_mutually_exclusive_group()
    how.add_argument(
        "--learn",
        action="store_true",
        help="learn the range from the first readings, as the service does (scores 0 "
        "while learning)",
    )
    how.add_argument(
        "--range", nargs=2, type=float, metavar=("LO", "HI"), help="the sensor's range"
    )
    score.set_defaults(func=lambda args, out: run(args, out, sys.stderr))


def read_series(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(timestamp texts, times in us, values) of a timestamp,value file."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ScoreError(f"{path}: cannot read: {exc}") from exc
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["timestamp", "value"]:
        raise ScoreError(f"{path}: line 1: the header must be timestamp,value")
    stamps: list[str] = []
    ts: list[int] = []
    vals: list[float] = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            raise ScoreError(f"{path}: line {n}: expected timestamp,value, got {row!r}")
        text, raw = row[0].strip(), row[1].strip()
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ScoreError(f"{path}: line {n}: {text!r} is not an ISO 8601 timestamp") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            value = float(raw) if raw else math.nan
        except ValueError:
            raise ScoreError(f"{path}: line {n}: value {raw!r} is not a number") from None
        stamps.append(text)
        ts.append(int(when.timestamp() * 1_000_000))
        vals.append(value)
    if not ts:
        raise ScoreError(f"{path}: no rows after the header")
    return stamps, np.array(ts, dtype=np.int64), np.array(vals)


def score_series(
    ts: np.ndarray, values: np.ndarray, value_range: tuple[float, float] | None
) -> tuple[np.ndarray, int]:
    """Scores of one series with a fresh detector; and how many rows went back in time."""
    fixed = ts.copy()
    back = 0
    for i in range(1, fixed.size):
        if fixed[i] <= fixed[i - 1]:
            fixed[i] = fixed[i - 1] + 1
            back += 1
    det = AnomalyDetector()
    ranges = {0: value_range} if value_range is not None else None
    return det.score(np.zeros(fixed.size, dtype=np.int64), fixed, values, ranges), back


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Score args.input; write to args.output or `out`."""
    try:
        stamps, ts, values = read_series(args.input)
        finite = values[np.isfinite(values)]
        if args.learn:
            value_range = None
        elif args.range:
            lo, hi = args.range
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ScoreError(f"--range {lo:g} {hi:g}: LO must be below HI, both finite")
            value_range = (lo, hi)
        elif finite.size:
            value_range = (float(finite.min()), float(finite.max()))
        else:
            value_range = None
        scores, back = score_series(ts, values, value_range)
        if back:
            err.write(
                f"tungku anomaly score: warning: {back} rows go back in time; scored in file "
                "order\n"
            )
        lines = ["timestamp,value,anomaly_score\n"]
        for text, v, s in zip(stamps, values.tolist(), scores.tolist(), strict=True):
            shown_v = "" if math.isnan(v) else repr(v)
            shown_s = "" if math.isnan(s) else f"{s:.6f}"
            lines.append(f"{text},{shown_v},{shown_s}\n")
        if args.output is None:
            out.writelines(lines)
        else:
            _write_atomically(args.output, lines)
    except ScoreError as exc:
        err.write(f"tungku anomaly score: error: {exc}\n")
        return EXIT_BAD
    return EXIT_OK


def _write_atomically(path: Path, lines: Sequence[str]) -> None:
    """Write beside the target and rename: a failed write leaves no partial file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or Path(), prefix=f".{path.name}.")
    except OSError as exc:
        raise ScoreError(f"{path}: cannot write: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.writelines(lines)
        umask = os.umask(0)
        os.umask(umask)
        Path(tmp).chmod(0o666 & ~umask)  # as an ordinary new file (mkstemp makes it 0600)
        Path(tmp).replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise ScoreError(f"{path}: cannot write: {exc}") from exc
