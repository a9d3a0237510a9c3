"""Exposure windows: time-weighted averages of one gas sensor over 8 h (NAB) and 15 min (PSD).

Owns `ExposureWindow`, the bounded per-sensor state that the engine keeps to evaluate the
NAB (8-hour time-weighted average) and PSD (15-minute short-term average) limits of
DOMAIN.md §3, and `twa`, the same quantity computed the direct way from a list of samples
(the reference for tests and for inspectors' reports). Pure: no clock, no I/O, no logging;
time comes in as integer microseconds since the epoch. It does not decide alerts (rules do)
and does not judge sensor health (the stale/stuck rules do).

Semantics
---------
Samples ``(t_i, v_i)`` of one sensor arrive in increasing time order, in chunks. A sample's
value is held (zero-order hold) from ``t_i`` until the next sample ``t_{i+1}``, but for at most
``max_hold_s`` (per sensor, e.g. 5 x its period). Time beyond that is *uncovered*: no exposure
is known there. A sample whose value is not finite (NaN, ±inf) covers nothing: its hold is
uncovered too. Samples at or before the latest accepted time are ignored.

For a window ``W`` ending at ``t``, over ``(t - W, t]``:

- ``integral`` = ∫ v dt over the covered time, ``covered`` = covered seconds;
- ``mean = integral / covered`` — the mean over *covered* time. An uncovered gap is never
  taken as zero: a dead sensor must not read as safe (the sensor-health rules flag the gap);
  ``mean`` is NaN when nothing in the window is covered;
- ``coverage = covered / W``, in [0, 1].

The stored integral is *closed* up to the latest sample time ``t_last``: the last sample's hold
is only stored once the next sample arrives. Evaluating at ``t_last`` (the default) therefore
uses stored data only. Evaluating at ``at_us > t_last`` applies the zero-order-hold rule to the
last sample on the fly: its value counts over ``(t_last, min(at_us, t_last + max_hold_s)]``
(provisionally; nothing is stored), so a silent sensor keeps its last value for
``max_hold_s`` and is then uncovered, never zero.

Memory and the approximation
----------------------------
State is a ring of fixed-width time buckets (``bucket_s``, default 10 s), each holding the
integral (float64, value·µs) and the covered time (int64 µs, exact) of the closed holds that
fall inside it; hold segments that cross bucket boundaries are split exactly (integer µs).
Buckets are numbered ``floor(t / bucket_s)`` in absolute time, so the state does not depend on
how samples were chunked (see below). The ring holds ``ceil(max(windows_s) / bucket_s) + 1``
buckets: 2,881 for 8 h (2,880 plus the one the window's start edge falls in), ~46 kB.

The window's end edge is exact (stored data ends at ``t_last`` ≤ ``t``; the pending hold is
computed exactly). Its start edge ``t - W`` generally falls inside a bucket, whose content is
counted *pro rata*: the fraction of the bucket's closed span ``[start, min(end, t_last))`` that
lies inside the window, as if its content were spread uniformly. This is exact when the edge
is on a bucket boundary (e.g. at every bucket end when ``W`` is a multiple of ``bucket_s``) or
the bucket is uniformly covered at a constant value. Otherwise:

- ``|covered - covered_exact| ≤`` that bucket's covered time ``≤ bucket_s``;
- the estimate is still a time-weighted mean (non-negative weights) of the values held in
  ``(t - W - bucket_s, t]``, so it lies within their [min, max];
- ``|mean - mean_exact| ≤ bucket_s x (v_max - v_min) / covered``, with v_max, v_min over
  those values and ``covered`` the reported covered seconds (the weights of at most one
  bucket's worth of time are misplaced). With full coverage that is 10 s / 8 h ≈ 0.035 % of
  the value range for NAB and 10 s / 15 min ≈ 1.1 % for PSD; ``means_at_bucket_ends`` has no
  edge error at all.

Chunking invariance
-------------------
Each hold segment is split into pieces whose durations are exact integers of µs and whose
integrals are ``v x duration`` (one float multiply), and pieces are accumulated into their
bucket one at a time in time order (``np.add.at`` is unbuffered and sequential). A bucket's
sum is therefore the same left-to-right sum however the samples were chunked: state, means
and coverages are bit-identical for any chunking.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

__all__ = ["ExposureError", "ExposureWindow", "twa"]

_US_PER_S: Final = 1_000_000
_STATE_VERSION: Final = 1
_INTEGRAL_DTYPE: Final = "<f8"
_COVERED_DTYPE: Final = "<i8"

NAB_WINDOW_S: Final = 28_800.0
PSD_WINDOW_S: Final = 900.0


class ExposureError(ValueError):
    """Raised when an exposure window is built, fed or queried with invalid arguments."""


def _to_us(seconds: float, what: str) -> int:
    """Convert seconds to whole microseconds, refusing non-finite or sub-µs values."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ExposureError(f"{what} must be a positive finite number of seconds, got {seconds}")
    us = round(seconds * _US_PER_S)
    if us < 1 or abs(us - seconds * _US_PER_S) > 1e-6 * max(1.0, us):
        raise ExposureError(f"{what} must be a whole number of microseconds, got {seconds}")
    return us


class ExposureWindow:
    """Time-weighted exposure of one sensor over rolling windows, in bounded memory.

    See the module docstring for the semantics and the approximation bound.
    """

    def __init__(
        self,
        *,
        max_hold_s: float,
        bucket_s: float = 10.0,
        windows_s: tuple[float, ...] = (NAB_WINDOW_S, PSD_WINDOW_S),
    ) -> None:
        self._max_hold_us: Final = _to_us(max_hold_s, "max_hold_s")
        self._bucket_us: Final = _to_us(bucket_s, "bucket_s")
        if not windows_s:
            raise ExposureError("windows_s must name at least one window")
        windows_us = [_to_us(w, "each of windows_s") for w in windows_s]
        for w_s, w_us in zip(windows_s, windows_us, strict=True):
            if w_us < self._bucket_us:
                raise ExposureError(f"window {w_s} s is shorter than bucket_s {bucket_s} s")
        self._max_hold_s: Final = float(max_hold_s)
        self._bucket_s: Final = float(bucket_s)
        self._windows_s: Final = tuple(float(w) for w in windows_s)
        self._max_window_us: Final = max(windows_us)
        # One bucket more than the longest window: the start edge's partial bucket.
        self._n: Final = -(-self._max_window_us // self._bucket_us) + 1
        self._integral: NDArray[np.float64] = np.zeros(self._n, dtype=np.float64)
        self._covered: NDArray[np.int64] = np.zeros(self._n, dtype=np.int64)
        self._head: int | None = None  # absolute bucket number of the latest sample time
        self._last_us: int | None = None
        self._last_value: float = math.nan

    # -- read-only configuration -------------------------------------------------------------

    @property
    def max_hold_s(self) -> float:
        """Longest time one sample's value is held."""
        return self._max_hold_s

    @property
    def bucket_s(self) -> float:
        """Width of one ring bucket."""
        return self._bucket_s

    @property
    def windows_s(self) -> tuple[float, ...]:
        """Windows the ring was sized for; any window up to the longest can be queried."""
        return self._windows_s

    @property
    def last_us(self) -> int | None:
        """Time of the latest accepted sample (µs since the epoch), None before any."""
        return self._last_us

    # -- feeding -----------------------------------------------------------------------------

    def add(self, ts_us: NDArray[np.int64], values: NDArray[np.float64]) -> None:
        """Add a chunk of samples; those at or before the latest accepted time are ignored."""
        ts = np.asarray(ts_us)
        vs = np.asarray(values, dtype=np.float64)
        if ts.ndim != 1 or vs.shape != ts.shape:
            raise ExposureError(
                f"ts_us and values must be 1-D of equal length, got {ts.shape} and {vs.shape}"
            )
        if ts.size == 0:
            return
        if not np.issubdtype(ts.dtype, np.integer):
            raise ExposureError(f"ts_us must hold integer microseconds, got dtype {ts.dtype}")
        ts = ts.astype(np.int64, copy=False)

        # Keep each sample later than everything accepted before it (in or before this chunk).
        floor = np.iinfo(np.int64).min if self._last_us is None else self._last_us
        seen = np.maximum.accumulate(ts)
        before = np.empty_like(seen)
        before[0] = floor
        np.maximum(seen[:-1], floor, out=before[1:])
        keep = ts > before
        ts, vs = ts[keep], vs[keep]
        if ts.size == 0:
            return

        if self._last_us is None:
            self._head = int(ts[0]) // self._bucket_us
            seg_start, seg_next, seg_v = ts[:-1], ts[1:], vs[:-1]
        else:
            seg_start = np.concatenate(([self._last_us], ts[:-1]))
            seg_next = ts
            seg_v = np.concatenate(([self._last_value], vs[:-1]))
        seg_end = np.minimum(seg_next, seg_start + self._max_hold_us)

        self._last_us = int(ts[-1])
        self._last_value = float(vs[-1])
        self._advance(self._last_us // self._bucket_us)
        self._accumulate(seg_start, seg_end, seg_v)

    def _advance(self, new_head: int) -> None:
        """Move the ring's head forward, clearing the buckets it enters."""
        assert self._head is not None  # noqa: S101 -- set by add() before the first advance
        steps = new_head - self._head
        if steps <= 0:
            return
        if steps >= self._n:
            self._integral[:] = 0.0
            self._covered[:] = 0
        else:
            slots = np.arange(self._head + 1, new_head + 1) % self._n
            self._integral[slots] = 0.0
            self._covered[slots] = 0
        self._head = new_head

    def _accumulate(
        self,
        seg_start: NDArray[np.int64],
        seg_end: NDArray[np.int64],
        seg_v: NDArray[np.float64],
    ) -> None:
        """Split closed hold segments exactly at bucket boundaries and add them in time order."""
        assert self._head is not None  # noqa: S101 -- add() sets the head first
        b = self._bucket_us
        oldest_us = (self._head - self._n + 1) * b  # start of the oldest bucket still held
        live = np.isfinite(seg_v) & (seg_end > oldest_us)
        if not live.any():
            return
        # Clipping to the oldest bucket drops only pieces that would be evicted anyway.
        start = np.maximum(seg_start[live], oldest_us)
        end = seg_end[live]
        value = seg_v[live]
        first = start // b
        counts = (end - 1) // b - first + 1
        seg = np.repeat(np.arange(start.size), counts)
        offset = np.arange(seg.size) - np.repeat(np.cumsum(counts) - counts, counts)
        bucket = first[seg] + offset
        piece_start = np.maximum(start[seg], bucket * b)
        piece_end = np.minimum(end[seg], (bucket + 1) * b)
        duration = piece_end - piece_start
        slot = bucket % self._n
        # Sequential, in time order: the same sum whatever the chunking (module docstring).
        np.add.at(self._integral, slot, value[seg] * duration.astype(np.float64))
        np.add.at(self._covered, slot, duration)

    # -- queries -----------------------------------------------------------------------------

    def _window_us(self, window_s: float) -> int:
        w_us = _to_us(window_s, "window_s")
        if not self._bucket_us <= w_us <= self._max_window_us:
            raise ExposureError(
                f"window_s must lie in [{self._bucket_s}, {max(self._windows_s)}] s, got {window_s}"
            )
        return w_us

    def _sums(self, window_s: float, at_us: int | None) -> tuple[float, float]:
        """Integral (value·µs) and covered µs over (at - W, at]."""
        w_us = self._window_us(window_s)
        if self._last_us is None or self._head is None:
            return 0.0, 0.0
        last = self._last_us
        at = last if at_us is None else int(at_us)
        if at < last:
            raise ExposureError(f"at_us {at} is before the latest sample {last}")
        b = self._bucket_us
        edge = at - w_us
        k_edge = edge // b
        integral = 0.0
        covered = 0.0
        if k_edge <= self._head:
            # k_edge ≥ head - n + 1 always holds: the ring is one bucket longer than any window.
            slots = np.arange(k_edge + 1, self._head + 1) % self._n
            integral = float(self._integral[slots].sum())
            covered = float(self._covered[slots].sum())
            span_start = k_edge * b
            span_end = min(span_start + b, last)  # stored data in the edge bucket ends here
            if span_end > span_start:
                fraction = min(1.0, max(0.0, (span_end - edge) / (span_end - span_start)))
                slot = k_edge % self._n
                integral += fraction * float(self._integral[slot])
                covered += fraction * float(self._covered[slot])
        if math.isfinite(self._last_value):
            # The pending hold of the last sample, by the zero-order-hold rule (not stored).
            lo = max(last, edge)
            hi = min(at, last + self._max_hold_us)
            if hi > lo:
                integral += self._last_value * float(hi - lo)
                covered += float(hi - lo)
        return integral, covered

    def mean(self, window_s: float, at_us: int | None = None) -> float:
        """Time-weighted mean over the covered part of (at - W, at]; NaN if none is covered.

        ``at_us`` defaults to the latest sample time and must not be before it.
        """
        integral, covered = self._sums(window_s, at_us)
        return integral / covered if covered > 0 else math.nan

    def coverage(self, window_s: float, at_us: int | None = None) -> float:
        """Covered fraction of (at - W, at], in [0, 1]."""
        _, covered = self._sums(window_s, at_us)
        return covered / self._window_us(window_s)

    def covered_s(self, window_s: float, at_us: int | None = None) -> float:
        """Covered seconds in (at - W, at]."""
        _, covered = self._sums(window_s, at_us)
        return covered / _US_PER_S

    def means_at_bucket_ends(
        self, window_s: float
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        """Exact rolling means at every bucket end the ring can evaluate, oldest first.

        Returns ``(ends_us, means, coverages)`` for each bucket end ``e ≤`` the latest sample
        time whose whole window ``(e - W, e]`` is still in the ring; ``W`` must be a multiple
        of ``bucket_s``. No pro-rata edge: these are exact (e.g. a shift's PSD peak is
        ``np.nanmax(means)``). Means are NaN where nothing is covered.
        """
        w_us = self._window_us(window_s)
        if w_us % self._bucket_us:
            raise ExposureError(f"window_s {window_s} is not a multiple of bucket_s")
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0, dtype=np.float64)
        if self._last_us is None or self._head is None:
            return empty_i, empty_f, empty_f
        m = w_us // self._bucket_us
        oldest = self._head - self._n + 1
        newest_closed = self._last_us // self._bucket_us - 1  # bucket ending at or before last
        if newest_closed - oldest + 1 < m:
            return empty_i, empty_f, empty_f
        order = np.arange(oldest, newest_closed + 1) % self._n
        integral = sliding_window_view(self._integral[order], m).sum(axis=1)
        covered = sliding_window_view(self._covered[order], m).sum(axis=1)
        ends = (np.arange(oldest + m - 1, newest_closed + 1, dtype=np.int64) + 1) * self._bucket_us
        means = np.full(integral.shape, np.nan)
        np.divide(integral, covered, out=means, where=covered > 0)
        return ends, means, covered / w_us

    # -- persistence -------------------------------------------------------------------------

    def to_state(self) -> dict[str, object]:
        """The full state as plain types (arrays as little-endian bytes), for the database."""
        return {
            "version": _STATE_VERSION,
            "max_hold_s": self._max_hold_s,
            "bucket_s": self._bucket_s,
            "windows_s": list(self._windows_s),
            "head": self._head,
            "last_us": self._last_us,
            "last_value": self._last_value,
            "integral_dtype": _INTEGRAL_DTYPE,
            "integral": self._integral.astype(_INTEGRAL_DTYPE, copy=False).tobytes(),
            "covered_dtype": _COVERED_DTYPE,
            "covered": self._covered.astype(_COVERED_DTYPE, copy=False).tobytes(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> ExposureWindow:
        """Rebuild a window from `to_state` output; the round trip is exact."""
        try:
            if state["version"] != _STATE_VERSION:
                raise ExposureError(f"unknown exposure state version {state['version']!r}")
            max_hold_s = state["max_hold_s"]
            bucket_s = state["bucket_s"]
            windows_s = state["windows_s"]
            head = state["head"]
            last_us = state["last_us"]
            last_value = state["last_value"]
            if not isinstance(max_hold_s, float | int) or not isinstance(bucket_s, float | int):
                raise ExposureError("max_hold_s and bucket_s must be numbers")
            if not isinstance(windows_s, list | tuple) or not all(
                isinstance(w, float | int) for w in windows_s
            ):
                raise ExposureError("windows_s must be a list of numbers")
            window = cls(
                max_hold_s=float(max_hold_s),
                bucket_s=float(bucket_s),
                windows_s=tuple(float(w) for w in windows_s),
            )
            if head is not None or last_us is not None:
                if not (isinstance(head, int) and isinstance(last_us, int)):
                    raise ExposureError("head and last_us must both be integers or both be None")
                if head != last_us // window._bucket_us:
                    raise ExposureError("head does not match last_us")
            if not isinstance(last_value, float | int):
                raise ExposureError("last_value must be a number")
            integral = _array(state, "integral", window._n)
            covered = _array(state, "covered", window._n)
        except KeyError as exc:
            raise ExposureError(f"exposure state lacks {exc.args[0]!r}") from exc
        window._integral = integral.astype(np.float64)
        window._covered = covered.astype(np.int64)
        window._head = head
        window._last_us = last_us
        window._last_value = float(last_value)
        return window


def _array(state: Mapping[str, object], key: str, n: int) -> NDArray[np.generic]:
    """Decode one ring array (bytes + dtype) from a state dict, checking its length."""
    data = state[key]
    dtype = state[f"{key}_dtype"]
    expected = _INTEGRAL_DTYPE if key == "integral" else _COVERED_DTYPE
    if dtype != expected or not isinstance(data, bytes):
        raise ExposureError(f"{key} must be bytes of dtype {expected}")
    array = np.frombuffer(data, dtype=np.dtype(expected))
    if array.size != n:
        raise ExposureError(f"{key} holds {array.size} buckets, the window needs {n}")
    return array


def twa(
    ts_s: Sequence[float],
    values: Sequence[float],
    start_s: float,
    end_s: float,
    max_hold_s: float,
) -> tuple[float, float]:
    """Exact time-weighted mean over (start, end] and its covered seconds, the direct way.

    Same semantics as `ExposureWindow` (zero-order hold capped at ``max_hold_s``, non-finite
    values and gaps uncovered, samples not after the previous accepted one ignored); the last
    sample holds up to ``end_s`` within its cap. Returns ``(mean, covered_s)``, mean NaN when
    nothing is covered. A plain loop: the reference for tests and for inspectors' reports.
    """
    if len(ts_s) != len(values):
        raise ExposureError(f"ts_s and values differ in length: {len(ts_s)} != {len(values)}")
    if not max_hold_s > 0:
        raise ExposureError(f"max_hold_s must be positive, got {max_hold_s}")
    accepted: list[tuple[float, float]] = []
    for t, v in zip(ts_s, values, strict=True):
        if not accepted or t > accepted[-1][0]:
            accepted.append((t, v))
    integral = 0.0
    covered = 0.0
    for i, (t, v) in enumerate(accepted):
        following = accepted[i + 1][0] if i + 1 < len(accepted) else end_s
        lo = max(t, start_s)
        hi = min(following, t + max_hold_s, end_s)
        if hi > lo and math.isfinite(v):
            integral += v * (hi - lo)
            covered += hi - lo
    return (integral / covered if covered > 0 else math.nan), covered
