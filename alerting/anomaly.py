"""Streaming anomaly detection: a score in [0, 1] per reading, per sensor, from value-band novelty.

Owns the detector: its parameters, its per-sensor state (fixed-size numpy arrays, the same
size for every sensor), the vectorised scoring of a batch across sensors, the explanation of a
score, and saving/restoring the state. Pure: no I/O, no clock (time is the readings' own),
no randomness; the same readings give the same scores however they were cut into batches.

The method was chosen by measurement on the Numenta Anomaly Benchmark (bench/anomaly_bench.py,
README "Anomaly detection"). Per sensor it counts how often readings fell in each band of the
value range; a reading's surprise is S = ln((N + 1) / (c + 0.1)) nats, with c the weight of
readings seen in its band before it and N the weight of all. Four tables are kept:

- **value**: bands across the sensor's range, and beyond it slots that double in width, so a
  value far beyond anything seen lands in a slot of its own;
- **season**: coarser value bands per hour of day (UTC), used from the sensor's second day;
- **deviation**: bands of the reading's departure from a 30-minute EWMA of the sensor, in
  units of the sensor's own usual step, so a change of pace shows before the value is new;
- **persistence**: how long the readings have stayed outside the usual range (EWMA -/+ 3
  usual spreads), in doubling bands from 7 effective readings on: a slow fault keeps them
  out longer than the signal's own wander ever has.

A table's surprise counts only when it beats the surprise that table last let through, within
the last `hold` effective readings, by `hold_add` nats (one detection per episode, not one
per reading), less a penalty for a table that keeps firing on this sensor. The detector's
score is max(S) / (max(S) + out_c).

Readings are weighted by how much time they cover: min(1, dt / w_dt_s), so a 1-Hz sensor and a
5-minute one learn at the pace of the plant, not of their sampling. A sensor whose range is not
given learns its band grid from its first `learn` effective readings and scores 0 until then.
Non-finite readings are neither scored nor learnt from (score NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

STATE_VERSION: Final = 1
_US: Final = 1_000_000
_DAY_US: Final = 86_400 * _US
_HOUR_US: Final = 3_600 * _US


class AnomalyError(ValueError):
    """Raised when the detector is given inconsistent input or an unusable saved state."""


@dataclass(frozen=True, slots=True)
class Params:
    """The one parameter set (chosen on NAB, see the module docstring)."""

    w_dt_s: float = 10.0  # seconds of plant time worth one effective reading
    learn: float = 300.0  # effective readings that set a learnt band grid
    bands: int = 24  # value bands across the range
    table: int = 64  # value-table slots: the bands and room either side of the range
    season_bands: int = 16  # season bands across the range
    season_table: int = 32
    dev_table: int = 64  # deviation-table slots, centred on "no departure"
    dev_scale: float = 5.0  # deviation band width, in usual steps
    ewma_s: float = 1800.0  # baseline the deviation is measured from
    spread_s: float = 3600.0  # time constant of the usual spread (explanations)
    hold: float = 100.0  # effective readings a table's last detection holds
    hold_add: float = 1.0  # nats a new detection must beat the held one by
    fire_decay: float = 2000.0  # effective readings over which a table's firing count decays
    fire_pen: float = 3.0  # nats of penalty per ln(1 + firings)
    out_c: float = 7.0  # score = S / (S + out_c)
    prior: float = 1.0  # share of the learning readings counted in the value table
    outer_growth: bool = True  # slots beyond the range double in width
    run_table: int = 16  # persistence slots: streak lengths 0, 1, 2-3, 4-7, ...
    run_min_band: int = 3  # persistence counts from this slot on (7 effective readings)

    def check(self) -> None:
        """Raise AnomalyError for parameters the detector cannot run with."""
        problems = []
        if not (self.w_dt_s > 0 and self.learn >= 1 and self.ewma_s > 0 and self.spread_s > 0):
            problems.append("w_dt_s, learn, ewma_s and spread_s must be positive")
        for name, n, inner in (
            ("table", self.table, self.bands),
            ("season_table", self.season_table, self.season_bands),
        ):
            if not (1 <= inner <= n):
                problems.append(f"{name} must hold its bands")
        if self.dev_table < 2 or self.out_c <= 0:
            problems.append("dev_table must be >= 2 and out_c > 0")
        if problems:
            raise AnomalyError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a reading scored as it did: what an advisory alert says."""

    score: float
    value: float
    expected: float  # the EWMA baseline before this reading
    low: float  # usual range: baseline -/+ 3 usual spreads
    high: float
    spreads: float  # how far off, in usual spreads
    table: str  # which view found it new: value, season (hour of day), deviation, persistence
    since_us: int  # since when the readings have been outside the usual range (this one's
    # time when it is the first)

    def describe(self, signal: str) -> str:
        """One sentence for an operator."""
        why = {
            "value": "a value this sensor has rarely shown",
            "season": "unusual for this hour of day",
            "deviation": "an unusual departure from its recent course",
            "persistence": "outside its usual range for longer than it has ever been",
        }.get(self.table, "unusual")
        return (
            f"{signal} {self.value:.4g} ({why}): expected about {self.expected:.4g}, usual "
            f"range {self.low:.4g} to {self.high:.4g}, {self.spreads:.1f} spreads off; "
            f"anomaly score {self.score:.2f}"
        )


_TABLES: Final = ("value", "season", "deviation", "persistence")
_MAX_SPREADS: Final = 1e6  # how far off an explanation says at most
_MAX_BANDS: Final = 1e9  # positions are clipped here before becoming slot numbers


@dataclass(frozen=True, slots=True)
class Explained:
    """Scores of a batch with what explains each (arrays, so that scoring stays vectorised;
    an `Explanation` is built only for the readings that need one)."""

    scores: FloatArray
    expected: FloatArray  # EWMA baseline before the reading (NaN: not scored)
    spread: FloatArray  # the usual spread around it
    table: IntArray  # which table let the surprise through (-1: none)
    values: FloatArray
    ts_us: IntArray
    since_us: IntArray  # start of the streak outside the usual range (-1: inside it)

    def at(self, i: int) -> Explanation | None:
        """The explanation of reading i (None where it was not scored)."""
        score, ew = float(self.scores[i]), float(self.expected[i])
        if not (math.isfinite(score) and math.isfinite(ew)):
            return None
        sp = float(self.spread[i])
        v = float(self.values[i])
        # A flat signal's spread tends to 0: "how far off" is capped, so that it stays a
        # number a journal (JSON) can carry exactly.
        off = abs(v - ew) / sp if sp > 0 else _MAX_SPREADS
        return Explanation(
            score=score,
            value=v,
            expected=ew,
            low=ew - 3 * sp,
            high=ew + 3 * sp,
            spreads=min(off, _MAX_SPREADS),
            table=_TABLES[int(self.table[i])] if self.table[i] >= 0 else "",
            since_us=int(self.since_us[i]) if self.since_us[i] >= 0 else int(self.ts_us[i]),
        )


class AnomalyDetector:
    """Scores readings of many sensors; state per sensor in fixed-size arrays.

    `score(keys, ts_us, values)` takes readings of any sensors in any order within a sensor's
    time order; readings at or before a sensor's last scored one are refused (the caller
    skips redeliveries). Ranges: `ranges[key] = (lo, hi)` set a sensor's band grid at its
    first reading (NAB's rules allow a file's min/max); a sensor without one learns it.
    """

    def __init__(self, params: Params | None = None) -> None:
        self.params = params or Params()
        self.params.check()
        self._slot: dict[int, int] = {}
        self._n = 0
        self._cap = 0
        self.a: dict[str, npt.NDArray[np.float64]] = {}
        self._grow(16)

    # -- state layout ---------------------------------------------------------------------

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        p = self.params
        return {
            "last_t": (),  # us; -1 before any reading
            "first_t": (),
            "age": (),  # effective readings seen
            "lo": (),  # band grid; NaN while learning
            "width": (),
            "l_min": (),  # learning: min, max, sum |step|, steps
            "l_max": (),
            "l_step": (),
            "l_n": (),
            "prev": (),  # previous value
            "ewma": (),
            "spread": (),  # EWMA of |value - ewma|
            "off_t": (),  # us: start of the streak outside ewma -/+ 3 spreads; -1 inside
            "dev_w": (),  # deviation band width
            "c_v": (p.table,),
            "n_v": (),
            "c_s": (24, p.season_table),
            "n_s": (24,),
            "c_d": (p.dev_table,),
            "n_d": (),
            "streak": (),  # effective readings in a row outside ewma -/+ 3 spreads
            "c_r": (p.run_table,),
            "n_r": (),
            "held": (4,),  # per table: last surprise let through
            "held_at": (4,),  # per table: age when it was let through
            "fires": (4,),  # per table: decaying count of detections
        }

    def _grow(self, cap: int) -> None:
        old, n = self.a, self._n
        new: dict[str, npt.NDArray[np.float64]] = {}
        init = {"last_t": -1.0, "first_t": -1.0, "off_t": -1.0, "lo": math.nan, "held_at": -1e18}
        for name, shape in self._shapes().items():
            arr = np.full((cap, *shape), init.get(name, 0.0), dtype=np.float64)
            if name in old:
                arr[:n] = old[name][:n]
            new[name] = arr
        self.a, self._cap = new, cap

    def _slots(self, keys: IntArray) -> IntArray:
        """Each reading's state slot (a new sensor gets the next one, in order of appearance
        by key value)."""
        uniq, inverse = np.unique(keys, return_inverse=True)
        slots = np.empty(uniq.size, dtype=np.int64)
        for i, k in enumerate(uniq.tolist()):
            s = self._slot.get(k)
            if s is None:
                if self._n == self._cap:
                    self._grow(self._cap * 2)
                s = self._slot[k] = self._n
                self._n += 1
            slots[i] = s
        return slots[inverse.reshape(-1)]

    def bytes_per_sensor(self) -> int:
        """Memory of one sensor's state."""
        return sum(int(np.prod(s, dtype=np.int64)) * 8 for s in self._shapes().values()) or 8

    # -- scoring --------------------------------------------------------------------------

    def score(
        self,
        keys: Sequence[int] | IntArray,
        ts_us: Sequence[int] | IntArray,
        values: Sequence[float] | FloatArray,
        ranges: Mapping[int, tuple[float, float]] | None = None,
    ) -> FloatArray:
        """Score readings (in the given order); NaN for a non-finite value."""
        return self._run(keys, ts_us, values, ranges).scores

    def score_explained(
        self,
        keys: Sequence[int] | IntArray,
        ts_us: Sequence[int] | IntArray,
        values: Sequence[float] | FloatArray,
        ranges: Mapping[int, tuple[float, float]] | None = None,
    ) -> Explained:
        """Scores, with what explains each (`Explained.at`)."""
        return self._run(keys, ts_us, values, ranges)

    def _run(
        self,
        keys: Sequence[int] | IntArray,
        ts_us: Sequence[int] | IntArray,
        values: Sequence[float] | FloatArray,
        ranges: Mapping[int, tuple[float, float]] | None,
    ) -> Explained:
        k = np.asarray(keys, dtype=np.int64)
        t = np.asarray(ts_us, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        if not (k.shape == t.shape == v.shape) or k.ndim != 1:
            raise AnomalyError("keys, ts_us and values must be 1-d and of one length")
        ex = Explained(
            np.full(k.size, math.nan),
            np.full(k.size, math.nan),
            np.full(k.size, math.nan),
            np.full(k.size, -1, dtype=np.int64),
            v,
            t,
            np.full(k.size, -1, dtype=np.int64),
        )
        if not k.size:
            return ex
        slots = self._slots(k)
        if ranges:
            self._set_ranges(slots, k, ranges)
        # Rounds: the i-th reading of each sensor in round i, so a batch holding several
        # readings of one sensor scores exactly as if they had come one per batch.
        order = np.argsort(slots, kind="stable")
        s_sorted = slots[order]
        first = np.concatenate(([True], s_sorted[1:] != s_sorted[:-1]))
        starts = np.flatnonzero(first)
        rank = np.arange(k.size) - np.repeat(starts, np.diff(np.append(starts, k.size)))
        rounds = int(rank.max()) + 1
        for r in range(rounds):
            idx = order if rounds == 1 else order[rank == r]
            self._round(slots[idx], t[idx], v[idx], idx, ex)
        return ex

    def _set_ranges(
        self, slots: IntArray, keys: IntArray, ranges: Mapping[int, tuple[float, float]]
    ) -> None:
        a, p = self.a, self.params
        for s, key in zip(slots.tolist(), keys.tolist(), strict=True):
            if not math.isnan(a["lo"][s]) or key not in ranges:
                continue
            lo, hi = ranges[key]
            if not (math.isfinite(lo) and math.isfinite(hi)):
                continue
            a["lo"][s], a["width"][s] = _grid(lo, hi, p.bands)

    def _round(
        self,
        s: IntArray,
        t: IntArray,
        v: FloatArray,
        where: IntArray,
        ex: Explained,
    ) -> None:
        """Score one reading of each sensor in `s` (distinct); results go to ex[where]."""
        a, p = self.a, self.params
        ok = np.isfinite(v)
        last = a["last_t"][s]
        if np.any(ok & (last >= 0) & (t <= last)):
            raise AnomalyError("a reading at or before its sensor's last scored one")
        if not ok.all():
            s, t, v, last, where = s[ok], t[ok], v[ok], last[ok], where[ok]
        if not s.size:
            return
        fresh = last < 0
        dt_s = np.where(fresh, p.w_dt_s, (t - last) / _US)
        w = np.minimum(1.0, dt_s / p.w_dt_s)
        a["first_t"][s] = np.where(fresh, t, a["first_t"][s])
        a["last_t"][s] = t
        prev = np.where(fresh, v, a["prev"][s])
        step = np.abs(v - prev)
        a["prev"][s] = v
        # Baseline (EWMA on time) and the usual spread around it.
        ew = np.where(fresh, v, a["ewma"][s])
        dev = v - ew
        alpha = 1.0 - np.exp(-dt_s / p.ewma_s)
        beta = 1.0 - np.exp(-dt_s / p.spread_s)
        spread = a["spread"][s]
        a["ewma"][s] = ew + alpha * dev
        a["spread"][s] = np.where(fresh, 0.0, spread + beta * (np.abs(dev) - spread))
        outside = (np.abs(dev) > 3 * spread) & (spread > 0)
        off_t = a["off_t"][s]
        off_t = np.where(outside, np.where(off_t < 0, t, off_t), -1.0)
        a["off_t"][s] = off_t
        streak = np.where(outside, a["streak"][s] + w, 0.0)
        a["streak"][s] = streak

        age = a["age"][s] + w
        a["age"][s] = age
        # Learning: the grid and the deviation band width from the first `learn` readings.
        a["l_min"][s] = np.where(fresh, v, np.minimum(a["l_min"][s], v))
        a["l_max"][s] = np.where(fresh, v, np.maximum(a["l_max"][s], v))
        a["l_step"][s] += step * w
        a["l_n"][s] += np.where(fresh, 0.0, w)
        lo = a["lo"][s]
        done = age >= p.learn
        need_grid = np.isnan(lo) & done
        if need_grid.any():
            for gs in s[need_grid].tolist():
                a["lo"][gs], a["width"][gs] = _grid(
                    float(a["l_min"][gs]), float(a["l_max"][gs]), p.bands
                )
                # What was learnt counts: the learning readings, spread over the bands they
                # spanned, so a value beyond them is news from the first scored reading.
                off = (p.table - p.bands) // 2
                a["c_v"][gs, off : off + p.bands] += p.learn * p.prior / p.bands
                a["n_v"][gs] += p.learn * p.prior
        need_dev = (a["dev_w"][s] == 0) & done
        if need_dev.any():
            g = s[need_dev]
            mean_step = a["l_step"][g] / np.maximum(a["l_n"][g], 1e-9)
            floor = np.maximum(a["width"][g] / 8.0, 1e-9)
            a["dev_w"][g] = np.maximum(p.dev_scale * mean_step, floor)
        ex.scores[where] = 0.0
        lo = a["lo"][s]
        live = ~np.isnan(lo)
        if live.any():
            ls, lt, lv, lw, ldev = s[live], t[live], v[live], w[live], dev[live]
            lage = age[live]
            width = a["width"][ls]
            x = np.clip((lv - a["lo"][ls]) / width, -_MAX_BANDS, _MAX_BANDS)  # in bands
            # value table
            bv = _band(x, p.bands, p.table, p.outer_growth)
            sv = self._surprise("c_v", "n_v", ls, bv, lw)
            # season table (hour of day, UTC), from the sensor's second day
            hour = (lt // _HOUR_US) % 24
            xs = x * (p.season_bands / p.bands)
            bs = _band(xs, p.season_bands, p.season_table, p.outer_growth)
            ss = self._surprise("c_s", "n_s", ls, bs, lw, row=hour)
            ss = np.where(lt - a["first_t"][ls] >= _DAY_US, ss, 0.0)
            # deviation table
            dw = a["dev_w"][ls]
            dv = ldev / np.where(dw > 0, dw, 1.0)
            di = np.clip(np.floor(dv), -_MAX_BANDS, _MAX_BANDS).astype(np.int64)
            bd = np.clip(di + p.dev_table // 2, 0, p.dev_table - 1)
            sd = self._surprise("c_d", "n_d", ls, bd, lw)
            sd = np.where(dw > 0, sd, 0.0)
            # persistence: how long the readings have stayed outside the usual range, in
            # doubling bands; a slow fault keeps them out longer than the signal ever has
            br = np.minimum(np.floor(np.log2(1.0 + streak[live])).astype(np.int64), p.run_table - 1)
            sr = self._surprise("c_r", "n_r", ls, br, lw)
            sr = np.where(br >= p.run_min_band, sr, 0.0)
            surprise = np.stack((sv, ss, sd, sr), axis=1)
            passed = self._hold(ls, lage, lw, surprise)
            best = passed.argmax(axis=1)
            top = passed[np.arange(ls.size), best]
            lw_ = where[live]
            ex.scores[lw_] = top / (top + p.out_c)
            ex.table[lw_] = np.where(top > 0, best, -1)
            ex.expected[lw_] = ew[live]
            ex.spread[lw_] = spread[live]
            ex.since_us[lw_] = off_t[live].astype(np.int64)

    def _surprise(
        self,
        counts: str,
        totals: str,
        s: IntArray,
        band: IntArray,
        w: FloatArray,
        *,
        row: IntArray | None = None,
    ) -> FloatArray:
        a = self.a
        c_arr, n_arr = a[counts], a[totals]
        if row is None:
            c = c_arr[s, band]
            n = n_arr[s]
            c_arr[s, band] = c + w
            n_arr[s] = n + w
        else:
            c = c_arr[s, row, band]
            n = n_arr[s, row]
            c_arr[s, row, band] = c + w
            n_arr[s, row] = n + w
        return np.log((n + 1.0) / (c + 0.1))

    def _hold(self, s: IntArray, age: FloatArray, w: FloatArray, sur: FloatArray) -> FloatArray:
        a, p = self.a, self.params
        held, held_at, fires = a["held"][s], a["held_at"][s], a["fires"][s]
        fires = fires * np.exp(-w / p.fire_decay)[:, None]
        eff = sur - p.fire_pen * np.log1p(fires)
        recent = age[:, None] - held_at <= p.hold
        bar = np.where(recent, held + p.hold_add, p.hold_add)
        ok = eff > bar
        held = np.where(ok, eff, held)
        held_at = np.where(ok, age[:, None], held_at)
        fires = fires + ok
        a["held"][s], a["held_at"][s], a["fires"][s] = held, held_at, fires
        return np.where(ok, eff, 0.0)

    # -- state ----------------------------------------------------------------------------

    def dump(self) -> dict[str, object]:
        """The whole state, as plain data (for the engine's checkpoint)."""
        n = self._n
        return {
            "version": STATE_VERSION,
            "params": asdict(self.params),
            "slots": dict(self._slot),
            "arrays": {name: arr[:n].copy() for name, arr in self.a.items()},
        }

    def load(self, state: Mapping[str, object]) -> None:
        """Restore `dump` output; the parameters must be the same."""
        if state.get("version") != STATE_VERSION:
            raise AnomalyError("saved detector state is of another version")
        if state.get("params") != asdict(self.params):
            raise AnomalyError("saved detector state was made with other parameters")
        slots = state["slots"]
        arrays = state["arrays"]
        if not isinstance(slots, dict) or not isinstance(arrays, dict):
            raise AnomalyError("saved detector state is malformed")
        n = len(slots)
        shapes = self._shapes()
        if set(arrays) != set(shapes) or any(
            arrays[k].shape != (n, *shp) for k, shp in shapes.items()
        ):
            raise AnomalyError("saved detector state does not match its layout")
        self._slot, self._n = dict(slots), n
        self.a = {}
        self._cap = 0
        self._grow(max(16, n))
        for name, arr in arrays.items():
            self.a[name][:n] = arr


def _band(x: FloatArray, bands: int, table: int, growth: bool) -> IntArray:
    """Table slot of positions x (in bands from the range's lower edge): one slot per band
    inside the range; beyond it, slots one band wide (or, with `growth`, 1, 2, 4, ... bands
    wide, so that a value far beyond anything seen still lands in a slot of its own)."""
    off = (table - bands) // 2
    if not growth:
        return np.clip(np.floor(x).astype(np.int64) + off, 0, table - 1)
    inner = np.floor(np.clip(x, 0.0, bands - 1e-9)).astype(np.int64)
    above = np.floor(np.log2(1.0 + np.maximum(x - bands, 0.0))).astype(np.int64)
    below = np.floor(np.log2(1.0 + np.maximum(-x, 0.0))).astype(np.int64)
    idx = np.where(x >= bands, off + bands + above, np.where(x < 0, off - 1 - below, off + inner))
    return np.clip(idx, 0, table - 1)


def _grid(lo: float, hi: float, bands: int) -> tuple[float, float]:
    """(lower edge, band width) of a grid of `bands` bands over [lo, hi]."""
    span = hi - lo
    if not span > 0:
        span = max(abs(lo) * 1e-3, 1e-6)
        lo -= span / 2
    return lo, span / bands
