"""Incident scenarios: the seven incidents of DOMAIN.md §6, layered over the normal plant.

Owns the scenarios (`SCENARIOS`, by name), what each must make the alert engine say
(`Expectation`, `Forbidden`) and the pure checker of observed alerts against them (`check`),
and `ScenarioPlant`: the plant model of a fleet with one scenario's overlay applied, with the
same `values(k)` / `readings(k)` interface as `Plant` plus `status_changes(k)` for a gateway
going offline and online.

Time: one tick is one second of plant time counted from the start of the run (tick 0). A
scenario's event happens at T0 = `t0_s`; the run lasts `duration_s` ticks. Expectations and
permits are in ticks from the run start; their docstrings and messages also give them
relative to T0.

Long precursors are compressed. A furnace switched off 24 h before T0 starts the run with
its cooling already applied. Slow faults of weeks (30 days of sidewall wear, two weeks of
tap-block climb) are played as a 20-min ramp after 8 h without them, so that a detector that
learns a sensor's normal from its first hour or more has seen it before the fault: the
hot-work scenario plays T−11h40m … T+10 min (the wear ramp from T−3h40m), the tap-runout
scenario T−8h40m … T+25 min (the climb from T−40 min), the others T−15 min … T+15…35 min.

Overlays are deterministic: every random number (DOMAIN gives ranges, e.g. a cooling time
constant of 20–40 h) is drawn once, when the `ScenarioPlant` is built, from a generator seeded
by (seed, scenario name); per tick the overlay only transforms the plant's values, so the same
seed gives the same values. Before `baseline_until_s` the values are exactly the bare plant's.

Pure: numpy only. No clock, no global random, no I/O; the publisher maps ticks to timestamps.
"""

# DOMAIN.md's notation (T−3 h, 20–40 h) is quoted as written.
# ruff: noqa: RUF001, RUF002, RUF003

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from simulator.fleet import Fleet
from simulator.plant import DECIMALS, GatewayReadings, Plant, StatusChange

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Severity = Literal["warning", "critical"]
Profile = Callable[[int], "float | FloatArray"]

SEVERITY_RANK: Final[Mapping[str, int]] = MappingProxyType({"warning": 1, "critical": 2})
MINUTE: Final = 60
HOUR: Final = 3600


class ScenarioError(ValueError):
    """Raised when a scenario cannot be played on a fleet (no such scenario, no furnace)."""


# -- what a scenario declares ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PermitSpec:
    """A permit the scenario needs in the facility record, in plant seconds from the run start.

    `close_s` None: still open at the end of the run. `areas` are the work areas it covers.
    """

    asset: str
    areas: tuple[str, ...]
    open_s: int
    close_s: int | None
    kind: str = "hot-work"


@dataclass(frozen=True, slots=True)
class Expectation:
    """An alert of `rule` on `asset` reaches at least `severity` no later than `by_s` plant
    seconds after the run start."""

    rule: str
    asset: str
    severity: Severity
    by_s: int
    why: str = ""


@dataclass(frozen=True, slots=True)
class Forbidden:
    """No alert whose rule id starts with `rule_prefix` on `asset` ("" = any asset) may start
    before `before_s` plant seconds (None = during the whole run)."""

    rule_prefix: str
    asset: str
    why: str
    before_s: int | None = None


@dataclass(frozen=True, slots=True)
class ObservedAlert:
    """What the alert engine raised: one per rule, asset and severity, with the first time
    (plant seconds from the run start) it was at that severity."""

    rule: str
    asset: str
    severity: str
    first_at_s: float


# -- overlay building blocks -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a scenario's sensors are: sensor id (unique within the site) to value position."""

    site: str
    furnace: str
    index: Mapping[str, int]
    kind: Mapping[str, str]
    asset: Mapping[str, str]
    gateway: Mapping[str, str]

    def ids(self, kind: str, asset: str | None = None) -> list[str]:
        """Sensor ids of this kind (on this asset), in fleet order."""
        return [
            s
            for s, k in self.kind.items()
            if k == kind and (asset is None or self.asset[s] == asset)
        ]

    def panel(self, n: int) -> str:
        """The asset of cooling panel n of the scenario's furnace, e.g. `F1-CW-P02`."""
        return f"{self.furnace}-CW-P{n:02d}"

    def at(self, sensor_ids: Iterable[str]) -> IntArray:
        """Value positions of the sensors that exist (missing ids are skipped)."""
        return np.array([self.index[s] for s in sensor_ids if s in self.index], dtype=np.int64)


class _Effect:
    """Changes some sensors' values at a tick; may keep state (ticks come in order)."""

    def apply(self, t: int, v: FloatArray, raw: npt.NDArray[np.bool_]) -> None:
        raise NotImplementedError


@dataclass(slots=True)
class _Shift(_Effect):
    """v += profile(t)."""

    idx: IntArray
    profile: Profile

    def apply(self, t: int, v: FloatArray, raw: npt.NDArray[np.bool_]) -> None:
        if self.idx.size:
            v[self.idx] += self.profile(t)


@dataclass(slots=True)
class _Scale(_Effect):
    """v *= profile(t)."""

    idx: IntArray
    profile: Profile

    def apply(self, t: int, v: FloatArray, raw: npt.NDArray[np.bool_]) -> None:
        if self.idx.size:
            v[self.idx] *= self.profile(t)


@dataclass(slots=True)
class _Anchor(_Effect):
    """v = level(t) + (v - v at tick 0): a new level, keeping the plant's own fluctuation."""

    idx: IntArray
    level: Profile
    first: FloatArray | None = None

    def apply(self, t: int, v: FloatArray, raw: npt.NDArray[np.bool_]) -> None:
        if not self.idx.size:
            return
        if self.first is None:
            self.first = v[self.idx].copy()
        v[self.idx] = self.level(t) + (v[self.idx] - self.first)


@dataclass(slots=True)
class _Hold(_Effect):
    """A stuck sensor: repeats the value it had at `start_s` until `end_s`."""

    idx: IntArray
    start_s: int
    end_s: int
    held: FloatArray | None = None

    def apply(self, t: int, v: FloatArray, raw: npt.NDArray[np.bool_]) -> None:
        if self.start_s <= t < self.end_s and self.idx.size:
            if self.held is None:
                self.held = v[self.idx].copy()
            v[self.idx] = self.held


@dataclass(slots=True)
class _Spike(_Effect):
    """A value forced at the listed ticks, left unclipped: it may be outside the physical range."""

    idx: IntArray
    ticks: frozenset[int]
    value: float

    def apply(self, t: int, v: FloatArray, raw: npt.NDArray[np.bool_]) -> None:
        if t in self.ticks and self.idx.size:
            v[self.idx] = self.value
            raw[self.idx] = True


@dataclass(frozen=True, slots=True)
class Fault:
    """Readings of some sensors in [start_s, end_s): flagged `bad`, or `dropout` (not sent)."""

    kind: Literal["bad", "dropout"]
    sensor_ids: frozenset[str]
    start_s: int
    end_s: int


@dataclass(frozen=True, slots=True)
class Silence:
    """A gateway offline in [start_s, end_s): no readings, status offline then online."""

    gateway: str
    start_s: int
    end_s: int


@dataclass(slots=True)
class Overlay:
    """What a scenario does to one plant: value effects, reading faults, gateway silences, and
    the numbers it drew (for the record and for tests)."""

    effects: list[_Effect] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)

    def shift(self, idx: IntArray, profile: Profile) -> None:
        self.effects.append(_Shift(idx, profile))

    def scale(self, idx: IntArray, profile: Profile) -> None:
        self.effects.append(_Scale(idx, profile))

    def anchor(self, idx: IntArray, level: Profile) -> None:
        self.effects.append(_Anchor(idx, level))


def ramp(t: float, start: float, dur: float) -> float:
    """0 before start, rising linearly to 1 over dur seconds, then 1."""
    if t <= start:
        return 0.0
    return 1.0 if t >= start + dur else (t - start) / dur


def approach(t: float, start: float, tau: float) -> float:
    """0 before start, then 1 - exp(-(t - start) / tau)."""
    return 0.0 if t <= start else 1.0 - math.exp(-(t - start) / tau)


def pulse(t: float, start: float, rise_s: float, end: float, fall_tau: float) -> float:
    """Ramp up over rise_s from start, hold until end, then decay with time constant fall_tau."""
    if t < end:
        return ramp(t, start, rise_s)
    return ramp(end, start, rise_s) * math.exp(-(t - end) / fall_tau)


def _less(fraction: float, start: float, dur: float) -> Profile:
    """A scale factor falling from 1 to 1 - fraction over dur seconds from start."""
    return lambda t: 1.0 - fraction * ramp(t, start, dur)


def _pulse_of(height: float, start: float, rise_s: float, end: float, fall_tau: float) -> Profile:
    """`pulse` scaled to height."""
    return lambda t: height * pulse(t, start, rise_s, end, fall_tau)


# -- the scenario ----------------------------------------------------------------------------

Builder = Callable[[Layout, np.random.Generator], Overlay]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One incident of DOMAIN.md §6: its timeline, permits, expectations and overlay."""

    name: str
    title: str
    description: str
    t0_s: int  # plant seconds from the run start to T0, the event
    duration_s: int  # plant seconds played
    site: str  # site of the scenario fleet; another fleet: its first site with `furnace`
    furnace: str
    permits: tuple[PermitSpec, ...]
    expectations: tuple[Expectation, ...]
    forbidden: tuple[Forbidden, ...]
    baseline_until_s: int  # values before this tick are the bare plant's, unchanged
    build: Builder = field(repr=False, compare=False)

    def rel(self, t_s: float) -> str:
        """A plant second as T0-relative text, e.g. `T−3h00m00s` or `T+45s`."""
        d = t_s - self.t0_s
        if round(d) == 0:
            return "T0"
        sign = "+" if d >= 0 else "−"
        d = abs(d)
        h, rest = divmod(round(d), 3600)
        m, s = divmod(rest, 60)
        if h:
            return f"T{sign}{h}h{m:02d}m{s:02d}s"
        if m:
            return f"T{sign}{m}m{s:02d}s"
        return f"T{sign}{s}s"

    def to_json(self, start_ms: int | None = None) -> dict[str, Any]:
        """A JSON-ready description: timeline, permits, expectations, forbidden alerts.

        With `start_ms` (the plant time of tick 0 of a run), absolute times are added.
        """

        def at(t_s: int | None) -> dict[str, int | None]:
            if start_ms is None:
                return {}
            return {"ms": None if t_s is None else start_ms + t_s * 1000}

        doc: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "t0_s": self.t0_s,
            "duration_s": self.duration_s,
            "site": self.site,
            "furnace": self.furnace,
            "permits": [
                {
                    "kind": p.kind,
                    "asset": p.asset,
                    "areas": list(p.areas),
                    "open_s": p.open_s,
                    "close_s": p.close_s,
                    **{f"open_{k}": x for k, x in at(p.open_s).items()},
                    **{f"close_{k}": x for k, x in at(p.close_s).items()},
                }
                for p in self.permits
            ],
            "expectations": [
                {
                    "rule": e.rule,
                    "asset": e.asset,
                    "severity": e.severity,
                    "by_s": e.by_s,
                    "by": self.rel(e.by_s),
                    "why": e.why,
                }
                for e in self.expectations
            ],
            "forbidden": [
                {
                    "rule_prefix": f.rule_prefix,
                    "asset": f.asset,
                    "before_s": f.before_s,
                    "why": f.why,
                }
                for f in self.forbidden
            ],
        }
        if start_ms is not None:
            doc["start_ms"] = start_ms
            doc["t0_ms"] = start_ms + self.t0_s * 1000
            doc["end_ms"] = start_ms + (self.duration_s - 1) * 1000
        return doc


def check(scenario: Scenario, alerts: Iterable[ObservedAlert]) -> list[str]:
    """The problems of a run's alerts against the scenario's expectations; empty means pass.

    An expectation is met by an alert of its rule on its asset at its severity or above, first
    raised no later than `by_s`. A forbidden prefix is broken by any alert matching it.
    """
    seen = list(alerts)
    problems: list[str] = []
    rel = scenario.rel
    for e in scenario.expectations:
        want = f"{e.severity} by {e.by_s} s ({rel(e.by_s)})"
        same = [a for a in seen if a.rule == e.rule and a.asset == e.asset]
        strong = [a for a in same if SEVERITY_RANK.get(a.severity, 0) >= SEVERITY_RANK[e.severity]]
        if not same:
            problems.append(f"missing: no {e.rule} alert on {e.asset}; expected {want}")
        elif not strong:
            top = max(same, key=lambda a: SEVERITY_RANK.get(a.severity, 0)).severity
            problems.append(f"too weak: {e.rule} on {e.asset} reached only {top}; expected {want}")
        else:
            first = min(a.first_at_s for a in strong)
            if first > e.by_s:
                problems.append(
                    f"too late: {e.rule} on {e.asset} reached {e.severity} at {first:g} s "
                    f"({rel(first)}); expected {want}"
                )
    for f in scenario.forbidden:
        for a in seen:
            if (
                a.rule.startswith(f.rule_prefix)
                and (not f.asset or a.asset == f.asset)
                and (f.before_s is None or a.first_at_s < f.before_s)
            ):
                window = "" if f.before_s is None else f" before {rel(f.before_s)}"
                problems.append(
                    f"forbidden: {a.rule} {a.severity} on {a.asset} at {a.first_at_s:g} s "
                    f"({rel(a.first_at_s)}); no {f.rule_prefix}* alert"
                    f"{' on ' + f.asset if f.asset else ''} may fire{window}: {f.why}"
                )
    return problems


# -- the plant with a scenario ---------------------------------------------------------------


def _layout(plant: Plant, fleet: Fleet, scenario: Scenario) -> Layout:
    sites = fleet.sites()
    has_furnace = [s for s in sites if any(x.asset == scenario.furnace for _, x in s.sensors())]
    chosen = next((s for s in has_furnace if s.id == scenario.site), None)
    if chosen is None and has_furnace:
        chosen = has_furnace[0]
    if chosen is None:
        raise ScenarioError(
            f"scenario {scenario.name!r} needs furnace {scenario.furnace!r}; "
            f"fleet {fleet.source} has none"
        )
    index: dict[str, int] = {}
    gateway: dict[str, str] = {}
    for pos, (site, gw, sid) in enumerate(plant.sensors()):
        if site == chosen.id:
            index[sid] = pos
            gateway[sid] = gw
    kind = {x.id: x.kind for _, x in chosen.sensors()}
    asset = {x.id: x.asset for _, x in chosen.sensors()}
    return Layout(chosen.id, scenario.furnace, index, kind, asset, gateway)


class ScenarioPlant:
    """A fleet's plant model with one scenario played over it, tick by tick in order.

    Same interface as `Plant` for the publisher: `gateways`, `readings(k)`, `ticks_for`,
    plus `status_changes(k)`. `values(k)` gives every sensor's value with the scenario applied
    (dropouts and quality flags only show in `readings`).
    """

    def __init__(self, fleet: Fleet, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self._plant = Plant(fleet, seed)
        self.layout = _layout(self._plant, fleet, scenario)
        rng = np.random.default_rng([seed, zlib.crc32(scenario.name.encode())])
        self.overlay = scenario.build(self.layout, rng)
        self._lo, self._hi = self._plant.limits
        self._raw = np.zeros(self._plant.sensor_count, dtype=np.bool_)
        self._last: FloatArray | None = None
        self._next = 0
        by_gateway: dict[str, str] = dict(self.layout.gateway)
        self._fault_gateways = {
            (self.layout.site, by_gateway[s])
            for f in self.overlay.faults
            for s in f.sensor_ids
            if s in by_gateway
        }

    @property
    def site(self) -> str:
        """The site the scenario plays on."""
        return self.layout.site

    @property
    def params(self) -> Mapping[str, float]:
        """The numbers the overlay drew from its seeded generator."""
        return MappingProxyType(self.overlay.params)

    @property
    def next_tick(self) -> int:
        """The smallest tick `values`/`readings` can still be asked for."""
        return self._next

    def gateways(self) -> list[tuple[str, str]]:
        """Every (site, gateway) pair, in the order readings are returned."""
        return self._plant.gateways()

    def ticks_for(self, count: int) -> int:
        """Ticks needed for `count` readings of the bare plant (dropouts not counted)."""
        return self._plant.ticks_for(count)

    def index(self, sensor_id: str) -> int:
        """Position of a sensor of the scenario's site in the arrays `values` returns."""
        return self.layout.index[sensor_id]

    def _tick(self, t: int) -> FloatArray:
        v = self._plant.values(t).copy()
        if t >= self.scenario.baseline_until_s:
            self._raw[:] = False
            for e in self.overlay.effects:
                e.apply(t, v, self._raw)
            clipped = np.clip(np.round(v, DECIMALS), self._lo, self._hi)
            v = np.where(self._raw, np.round(v, DECIMALS), clipped)
        return v

    def values(self, k: int) -> FloatArray:
        """Advance to tick k and return every sensor's value there, scenario applied.

        Every tick in between is played (the overlay keeps state, e.g. a stuck value); asking
        for a tick already passed raises ValueError.
        """
        if k < self._next:
            raise ValueError(f"tick {k} is in the past: the scenario is at tick {self._next}")
        while self._next <= k:
            self._last = self._tick(self._next)
            self._next += 1
        if self._last is None:  # unreachable: the loop ran at least once
            raise ValueError(f"tick {k} was not played")
        return self._last.copy()

    def readings(self, k: int) -> list[GatewayReadings]:
        """The readings due at tick k: silent gateways and dropped sensors left out, bad
        readings flagged."""
        v = self.values(k)
        silent = {s.gateway for s in self.overlay.silences if s.start_s <= k < s.end_s}
        dropped: set[str] = set()
        bad: set[str] = set()
        for f in self.overlay.faults:
            if f.start_s <= k < f.end_s:
                (dropped if f.kind == "dropout" else bad).update(f.sensor_ids)
        out: list[GatewayReadings] = []
        site = self.layout.site
        for gr in self._plant.pack(k, v):
            if gr.site == site and gr.gateway in silent:
                continue
            if (gr.site, gr.gateway) not in self._fault_gateways or not (dropped or bad):
                out.append(gr)
                continue
            keep = [i for i, s in enumerate(gr.sensor_ids) if s not in dropped]
            if not keep:
                continue
            ids = [gr.sensor_ids[i] for i in keep]
            out.append(
                GatewayReadings(
                    gr.site,
                    gr.gateway,
                    ids,
                    [gr.units[i] for i in keep],
                    [gr.values[i] for i in keep],
                    ["bad" if s in bad else "good" for s in ids] if bad else None,
                )
            )
        return out

    def status_changes(self, k: int) -> list[StatusChange]:
        """Gateways going offline (first silent tick) or back online (first tick after) at k."""
        site = self.layout.site
        out: list[StatusChange] = []
        for s in self.overlay.silences:
            if k == s.start_s:
                out.append(StatusChange(site, s.gateway, online=False))
            elif k == s.end_s:
                out.append(StatusChange(site, s.gateway, online=True))
        return out


# -- the seven scenarios ---------------------------------------------------------------------

SITE: Final = "scenario-site"
FURNACE: Final = "F1"


def _draw(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _draws(rng: np.random.Generator, lo: float, hi: float, n: int) -> FloatArray:
    return rng.uniform(lo, hi, n)


# 1. Hot work on an off furnace (ITSS) --------------------------------------------------------

#: The off, cooling furnace without the wear: 8 h, the normal a learning detector sees first.
HOT_BASELINE_S: Final = 8 * HOUR
#: 30 days of sidewall wear and panel ΔT creep, played as a ramp of 20 min from HOT_BASELINE_S.
HOT_WEAR_S: Final = 20 * MINUTE
#: The wear ramp ends 3 h 20 min before T0; the permit, puffs and breakout keep their times
#: relative to T0.
HOT_T0: Final = 11 * HOUR + 40 * MINUTE
HOT_PERMIT_S: Final = HOT_T0 - 3 * HOUR
#: 30 days at +2 °C/day, and the panel ΔT's +0.1 °C/day for 30 days.
HOT_WEAR_C: Final = 60.0
HOT_DT_CREEP_C: Final = 3.0
HOT_FIRST_PUFF: Final = (HOT_T0 - 2 * HOUR - 40 * MINUTE, HOT_T0 - 2 * HOUR - 20 * MINUTE)


def _build_hot_work(lay: Layout, rng: np.random.Generator) -> Overlay:
    o = Overlay()
    f = lay.furnace
    t0 = HOT_T0
    t_ref = t0 - 2 * HOUR  # the hearth is > 800 °C here (DOMAIN §6)
    # Power off since T−24 h: power and electrode currents ~0, the off-gas duct cold-ish.
    o.scale(lay.at(lay.ids("furnace_power", f) + lay.ids("electrode_current", f)), lambda t: 0.002)
    o.scale(lay.at(lay.ids("offgas_temp", f)), lambda t: 0.3)
    # Hearth cooling exponentially (τ 20–40 h) towards ~60 °C, yet 850–950 °C at T−2 h.
    tau_s = _draw(rng, 20.0, 40.0) * HOUR
    hearth = lay.at(lay.ids("hearth_tc", f))
    level = _draws(rng, 850.0, 950.0, hearth.size)
    o.anchor(hearth, lambda t: 60.0 + (level - 60.0) * math.exp(-(t - t_ref) / tau_s))
    # Sidewall: residual heat cooling with the same τ from the start; 30 days of wear at
    # +2 °C/day on top of it as a ramp after the baseline.
    sidewall = lay.at(lay.ids("sidewall_tc", f))
    resid = _draws(rng, 200.0, 300.0, sidewall.size)

    def wear(t: int) -> float:  # 0 during the baseline, 1 once the 30 days are played
        return ramp(t, HOT_BASELINE_S, HOT_WEAR_S)

    o.shift(sidewall, lambda t: resid * math.exp(-(t - t_ref) / tau_s) + HOT_WEAR_C * wear(t))
    shell_ids = lay.ids("shell_temp", f)
    shell_warm = _draws(rng, 20.0, 40.0, len(shell_ids))
    o.shift(lay.at(shell_ids), lambda t: shell_warm * math.exp(-(t - t_ref) / tau_s))
    # Panel ΔT +0.1 °C/day for 30 days, in the same ramp.
    o.shift(lay.at(lay.ids("cw_return_temp")), lambda t: HOT_DT_CREEP_C * wear(t))
    # O₂ drifts up (oxy-fuel cutting) after the permit opens, to 22.5–23.0 %, with puffs of
    # 23.8–24.0 % while the torch leaks; LEL 3–8 % in the same puffs. The tapping floor, farther
    # away, sees half of it.
    base = _draw(rng, 22.5, 23.0) - 20.85
    puffs: list[tuple[float, float]] = []
    start = _draw(rng, *HOT_FIRST_PUFF)
    while start < t0 - 10 * MINUTE:
        puffs.append((start, start + _draw(rng, 4.0, 8.0) * MINUTE))
        start = puffs[-1][1] + _draw(rng, 10.0, 30.0) * MINUTE
    peak = _draw(rng, 23.9, 24.0) - 20.85
    lel = _draw(rng, 2.0, 7.0)

    def puff(t: int) -> float:
        return max((pulse(t, a, 60.0, b, 60.0) for a, b in puffs), default=0.0)

    def o2_shift(t: int) -> float:
        return base * ramp(t, HOT_PERMIT_S + 10 * MINUTE, 40 * MINUTE) + (peak - base) * puff(t)

    o.shift(lay.at(lay.ids("area_o2", "maintenance-bay")), o2_shift)
    o.shift(lay.at(lay.ids("area_o2", "tapping-floor")), lambda t: 0.5 * o2_shift(t))
    o.shift(lay.at(lay.ids("area_lel", "maintenance-bay")), lambda t: lel * puff(t))
    # T0: the shell breaks out (+500 °C in 10 s), CO floods the bay, panels leak.
    o.shift(lay.at(shell_ids[:2]), lambda t: 500.0 * ramp(t, t0, 8.0))
    co = _draw(rng, 330.0, 800.0)
    o.shift(lay.at(lay.ids("area_co", "maintenance-bay")), lambda t: co * ramp(t, t0, 40.0))
    o.shift(lay.at(lay.ids("area_co", "tapping-floor")), lambda t: 0.8 * co * ramp(t, t0, 40.0))
    imbalance = _draws(rng, 0.10, 0.30, 2)
    o.scale(
        lay.at(lay.ids("cw_return_flow", lay.panel(1)) + lay.ids("cw_return_flow", lay.panel(2))),
        lambda t: 1.0 - imbalance * ramp(t, t0, 10.0),
    )
    o.params.update(
        tau_h=tau_s / HOUR,
        o2_base_pct=20.85 + base,
        o2_puff_pct=20.85 + peak,
        lel_puff=lel,
        puffs=len(puffs),
        first_puff_s=puffs[0][0] if puffs else -1.0,
        co_ppm=co,
        imbalance_p01=float(imbalance[0]),
        imbalance_p02=float(imbalance[1]),
    )
    return o


# 2. Cooling pump trip -> water ingress (Port Talbot) ----------------------------------------

T0: Final = 15 * MINUTE  # the short scenarios start 15 min before their event
#: The run-out first plays 8 h of the normal plant: the normal a learning detector sees first,
#: and the history the tap block's rate of rise (tc.rate, a 2-h window) is judged against, as
#: a running plant has.
TAP_BASELINE_S: Final = 8 * HOUR
#: Two weeks of tap-block climb, played as a ramp of 20 min from TAP_BASELINE_S.
TAP_CLIMB_S: Final = 20 * MINUTE
#: Tapping 20 min after the climb is played; the step after the previous tap at T−10 min.
TAP_T0: Final = 8 * HOUR + 40 * MINUTE
PUMP_OUTAGE_S: Final = (3 * MINUTE, 6 * MINUTE)


def _build_pump_trip(lay: Layout, rng: np.random.Generator) -> Overlay:
    o = Overlay()
    f, t0 = lay.furnace, T0
    restart = t0 + round(_draw(rng, *PUMP_OUTAGE_S))

    def down(t: int) -> float:  # 0 normal -> 1 tripped, back to 0 over 20 s after the restart
        return ramp(t, t0, 4.0) - ramp(t, restart, 20.0)

    o.scale(lay.at(lay.ids("cw_header_pressure", "CW-H1")), lambda t: 1.0 - 0.8 * down(t))
    o.scale(lay.at(lay.ids("cw_pump_state", "CW-H1")), lambda t: 0.0 if t0 <= t < restart else 1.0)
    o.scale(
        lay.at(lay.ids("cw_supply_flow") + lay.ids("cw_return_flow")),
        lambda t: 1.0 - 0.99 * (ramp(t, t0, 8.0) - ramp(t, restart, 20.0)),
    )
    ret_t = lay.ids("cw_return_temp")
    rise = _draws(rng, 20.0, 40.0, len(ret_t))

    def stagnant(t: int) -> float:
        if t < restart:
            return approach(t, t0, 60.0)
        return approach(restart, t0, 60.0) * math.exp(-(t - restart) / 90.0)

    o.shift(lay.at(ret_t), lambda t: rise * stagnant(t))
    leaks = _draws(rng, 0.07, 0.15, 3)
    for n, leak in enumerate(leaks, start=1):
        o.scale(
            lay.at(lay.ids("cw_return_flow", lay.panel(n))),
            _less(float(leak), restart + 20, 30.0),
        )
    h2 = _draw(rng, 5.0, 10.0)
    o.shift(lay.at(lay.ids("offgas_h2", f)), lambda t: h2 * ramp(t, restart + 60, 180.0))
    amp, period = _draw(rng, 70.0, 150.0), _draw(rng, 4.0, 8.0)
    osc_start = restart + 60
    osc_end = osc_start + round(_draw(rng, 5.0, 10.0) * MINUTE)
    o.shift(
        lay.at(lay.ids("freeboard_pressure", f)),
        lambda t: (
            amp * math.sin(2 * math.pi * (t - osc_start) / period)
            if osc_start <= t < osc_end
            else 0.0
        ),
    )
    cooling = _draw(rng, 10.0, 30.0)
    o.shift(lay.at(lay.ids("hearth_tc", f)), lambda t: -cooling / HOUR * max(0, t - restart - 60))
    o.params.update(
        restart_s=restart,
        return_rise_c=float(rise.min()) if rise.size else 0.0,
        leak_min=float(leaks.min()),
        h2_rise=h2,
        swing_amp_pa=amp,
        swing_period_s=period,
        swing_start_s=osc_start,
        swing_end_s=osc_end,
        hearth_cooling_c_per_h=cooling,
    )
    return o


# 3. Tap-hole / sidewall run-out ---------------------------------------------------------------

TAPBLOCK: Final = "sidewall.t01"  # the sidewall thermocouple in the tap block


def _build_tap_runout(lay: Layout, rng: np.random.Generator) -> Overlay:
    o = Overlay()
    f, t0 = lay.furnace, TAP_T0
    tapblock = lay.at([f"{f.lower()}.{TAPBLOCK}"])
    neighbour = lay.at([f"{f.lower()}.sidewall.t02"])
    climb = _draw(rng, 150.0, 200.0)  # two weeks of climb, played after the baseline
    step = _draw(rng, 10.0, 20.0)  # after the previous tap, T−10 min

    def climbed(t: int) -> float:  # 0 during the baseline, 1 once the two weeks are played
        return ramp(t, TAP_BASELINE_S, TAP_CLIMB_S)

    o.shift(
        tapblock,
        lambda t: (
            climb * climbed(t) + step * ramp(t, t0 - 10 * MINUTE, 60.0) + 300 * ramp(t, t0, 120)
        ),
    )
    o.shift(neighbour, lambda t: 0.3 * climb * climbed(t) + 100.0 * ramp(t, t0, 120.0))
    p1_ret_t = lay.at(lay.ids("cw_return_temp", lay.panel(1)))
    dt_climb = _draw(rng, 2.0, 3.0)
    o.shift(p1_ret_t, lambda t: dt_climb * climbed(t) + 15.0 * ramp(t, t0 + 30, 120.0))
    o.shift(lay.at(lay.ids("cw_return_temp", lay.panel(2))), lambda t: 5.0 * ramp(t, t0 + 30, 120))
    co = _draw(rng, 50.0, 200.0)
    o.shift(
        lay.at(lay.ids("area_co", "tapping-floor")),
        lambda t: co * pulse(t, t0 + 20, 90.0, t0 + 10 * MINUTE, 5 * MINUTE),
    )
    burst = bool(rng.random() < 0.5)
    burst_loss = _draw(rng, 0.32, 0.5)
    if burst:
        o.scale(
            lay.at(lay.ids("cw_return_flow", lay.panel(1))),
            lambda t: 1.0 - burst_loss * ramp(t, t0 + 120, 5.0),
        )
    o.params.update(
        climb_c=climb, tap_step_c=step, dt_climb_c=dt_climb, co_ppm=co, burst=float(burst)
    )
    o.params["burst_loss"] = burst_loss if burst else 0.0
    return o


# 4. Positive furnace pressure / CO release (fan trip) -----------------------------------------


def _build_positive_pressure(lay: Layout, rng: np.random.Generator) -> Overlay:
    o = Overlay()
    f, t0 = lay.furnace, T0
    fan_back = t0 + round(_draw(rng, 3.0, 5.0) * MINUTE)
    recovery_s = _draw(rng, 5.0, 15.0) * MINUTE
    peak = _draw(rng, 80.0, 200.0)
    o.shift(
        lay.at(lay.ids("freeboard_pressure", f)),
        lambda t: (peak + 12.5) * pulse(t, t0, 4.0, fan_back, 10.0),
    )
    o.shift(
        lay.at(lay.ids("offgas_temp", f)),
        lambda t: 100.0 * pulse(t, t0, 60.0, fan_back, recovery_s / 3),
    )
    co = _draw(rng, 150.0, 600.0)
    rise_s = _draw(rng, 60.0, 180.0)
    for area, share in (("tapping-floor", 1.0), ("maintenance-bay", 0.4), ("slag-yard", 0.15)):
        o.shift(
            lay.at(lay.ids("area_co", area)),
            _pulse_of(share * co, t0, rise_s, fan_back, recovery_s / 3),
        )
    o.params.update(
        fan_back_s=fan_back, recovery_s=recovery_s, peak_pa=peak, co_ppm=co, co_rise_s=rise_s
    )
    return o


# 5. Oxygen enrichment (O₂ line leak) ----------------------------------------------------------


def _build_oxygen(lay: Layout, rng: np.random.Generator) -> Overlay:
    o = Overlay()
    t0 = T0
    drop = _draw(rng, 4.5, 5.5)  # 14 -> 9 bar over 60 s
    o.shift(lay.at(lay.ids("o2_line_pressure", "O2-L1")), lambda t: -drop * ramp(t, t0, 60.0))
    peak = _draw(rng, 24.0, 27.0)
    rise_s = _draw(rng, 5.0, 10.0) * MINUTE
    o.shift(
        lay.at(lay.ids("area_o2", "tapping-floor")),
        lambda t: (peak - 20.85) * ramp(t, t0 + 30, rise_s),
    )
    o.shift(
        lay.at(lay.ids("area_o2", "maintenance-bay")),
        lambda t: 0.3 * (peak - 20.85) * ramp(t, t0 + 30, rise_s),
    )
    fire = bool(rng.random() < 0.5)
    fire_co, fire_lel = _draw(rng, 100.0, 300.0), _draw(rng, 5.0, 10.0)
    if fire:  # optional fire at T+12 min
        o.shift(
            lay.at(lay.ids("area_co", "tapping-floor")),
            lambda t: fire_co * ramp(t, t0 + 12 * MINUTE, 60.0),
        )
        o.shift(
            lay.at(lay.ids("area_lel", "tapping-floor")),
            lambda t: fire_lel * ramp(t, t0 + 12 * MINUTE, 60.0),
        )
    o.params.update(line_drop_bar=drop, o2_peak_pct=peak, o2_rise_s=rise_s, fire=float(fire))
    return o


# 6. Slag quench steam explosion (GNI 2023) ----------------------------------------------------


def _build_slag_quench(lay: Layout, rng: np.random.Generator) -> Overlay:
    o = Overlay()
    t0 = T0
    starts = [t0 + 5.0, *sorted(float(x) + t0 for x in _draws(rng, 60.0, 300.0, 2))]
    holds = [float(x) for x in _draws(rng, 20.0, 60.0, 3)]
    h2s = [_draw(rng, 8.0, 20.0), *(float(x) for x in _draws(rng, 5.0, 20.0, 2))]
    so2 = [_draw(rng, 3.0, 10.0), *(float(x) for x in _draws(rng, 2.0, 10.0, 2))]
    bursts = list(zip(starts, holds, h2s, so2, strict=True))

    def gas(t: int, which: int) -> float:
        return sum(
            (b[2 + which] * pulse(t, b[0], 10.0, b[0] + 10.0 + b[1], 30.0) for b in bursts), 0.0
        )

    o.shift(lay.at(lay.ids("area_h2s", "slag-yard")), lambda t: gas(t, 0))
    o.shift(lay.at(lay.ids("area_so2", "slag-yard")), lambda t: gas(t, 1))
    o.params.update(first_h2s_ppm=h2s[0], first_so2_ppm=so2[0], first_hold_s=float(holds[0]))
    return o


# 7. Sensor and gateway faults -----------------------------------------------------------------

FAULT_STUCK: Final = "sidewall.t02"
FAULT_DROPOUT: Final = "offgas.temp"


def _build_sensor_faults(lay: Layout, rng: np.random.Generator) -> Overlay:
    o = Overlay()
    f, t0 = lay.furnace.lower(), T0
    # CO calibration drift −0.5 ppm/day, three days accumulated: the detector reads low.
    o.shift(lay.at(["maintenance-bay.co"]), lambda t: -1.5)
    # Bad quality on an LEL head for 3 min (T−10 … T−7 min).
    o.faults.append(
        Fault("bad", frozenset({"tapping-floor.lel"}), t0 - 10 * MINUTE, t0 - 7 * MINUTE)
    )
    # Out-of-range spikes (the instrument's span is 0–2,000 ppm) at T−8, T−6, T−4 min.
    spike = _draw(rng, 2500.0, 4000.0)
    ticks = frozenset(t0 - m * MINUTE + d for m in (8, 6, 4) for d in (0, 1))
    o.effects.append(_Spike(lay.at(["slag-yard.co"]), ticks, round(spike, DECIMALS)))
    # Dropouts of 60–120 s on the off-gas temperature.
    for base in (t0 - 12 * MINUTE, t0 - 6 * MINUTE, t0 + 8 * MINUTE):
        a = base + round(_draw(rng, 0.0, 60.0))
        o.faults.append(
            Fault("dropout", frozenset({f"{f}.{FAULT_DROPOUT}"}), a, a + round(_draw(rng, 60, 120)))
        )
    # The work-area gateway silent for 2–10 min from T0, then back.
    silent_s = round(_draw(rng, 2.0, 10.0) * MINUTE)
    gw = lay.gateway.get("tapping-floor.co")
    if gw is not None:
        o.silences.append(Silence(gw, t0, t0 + silent_s))
    # A sidewall thermocouple stuck from T0 for 20 min.
    o.effects.append(_Hold(lay.at([f"{f}.{FAULT_STUCK}"]), t0, t0 + 20 * MINUTE))
    o.params.update(spike_ppm=spike, silent_s=silent_s, first_dropout_s=o.faults[1].start_s)
    return o


def _exp(rule: str, asset: str, severity: Severity, by_s: int, why: str) -> Expectation:
    return Expectation(rule, asset, severity, by_s, why)


def _scenarios() -> tuple[Scenario, ...]:
    t0 = T0
    restart_max = t0 + PUMP_OUTAGE_S[1]
    normal = "the normal baseline before T0 raises no {} alert"
    return (
        Scenario(
            name="hot-work",
            title="Hot work on an off furnace (ITSS, 24 Dec 2023)",
            description=(
                "Furnace off since T−24 h (compressed: the run starts at T−11h40m with the "
                "cooling already applied). 8 h of the off, cooling furnace, then 30 days of "
                "sidewall wear (+2 °C/day: +60 °C) and panel ΔT creep (+0.1 °C/day: +3 °C) "
                "played as a 20-min ramp (T−3h40m … T−3h20m). Hearth cools with τ 20–40 h yet "
                "is 850–950 °C at T−2 h. "
                "Hot-work permit opens at T−3 h. O₂ in the maintenance bay drifts to 22.5–23 % "
                "with torch puffs to ~24 % and LEL 3–8 %. At T0 the shell breaks out (+500 °C "
                "in 10 s), area CO reaches 330–800 ppm within 40 s, panels P01/P02 lose "
                "10–30 % of their return flow."
            ),
            t0_s=HOT_T0,
            duration_s=HOT_T0 + 10 * MINUTE,
            site=SITE,
            furnace=FURNACE,
            permits=(PermitSpec("F1", ("maintenance-bay", "tapping-floor"), HOT_PERMIT_S, None),),
            expectations=(
                _exp("tc.high", "F1", "critical", 120, "hearth > 800 °C from the start"),
                _exp("hotwork.tc", "F1", "critical", HOT_PERMIT_S + 60, "permit + hearth > 800"),
                # DOMAIN §6: "O₂ warning" before T0. The puffs are short; the 5-s on-delay
                # of gas.o2.high lets a seed's first ones pass, the 2-s interlock does not.
                _exp(
                    "gas.o2.high", "maintenance-bay", "warning", HOT_T0, "torch puffs O₂ ≥ 23.8 %"
                ),
                _exp(
                    "hotwork.o2",
                    "maintenance-bay",
                    "critical",
                    HOT_FIRST_PUFF[1] + 180,
                    "permit + O₂ > 23.5 %",
                ),
                _exp("hotwork.shell", "F1", "critical", HOT_T0 + 30, "shell +500 °C"),
                _exp("gas.co.level", "maintenance-bay", "critical", HOT_T0 + 60, "CO ≥ 330 ppm"),
                _exp("gas.co.level", "tapping-floor", "critical", HOT_T0 + 90, "CO ≥ 264 ppm"),
                _exp("cw.imbalance", "F1-CW-P01", "critical", HOT_T0 + 60, "imbalance ≥ 10 %"),
                _exp("cw.imbalance", "F1-CW-P02", "critical", HOT_T0 + 60, "imbalance ≥ 10 %"),
            ),
            forbidden=(
                Forbidden("freeboard.", "F1", "freeboard rules run only while energised"),
                # The 8 h before the wear are the off furnace's normal: cooling, nothing rising.
                Forbidden("tc.rate", "", "a cooling furnace does not heat", HOT_BASELINE_S),
                Forbidden("tc.baseline", "", "a cooling furnace does not heat", HOT_BASELINE_S),
                Forbidden(
                    "cw.", "", "the cooling water is normal until the ΔT creep", HOT_BASELINE_S
                ),
            ),
            baseline_until_s=0,  # the furnace is off from the start
            build=_build_hot_work,
        ),
        Scenario(
            name="pump-trip",
            title="Cooling pump trip, then water ingress (Port Talbot)",
            description=(
                "At T0 both pumps of header CW-H1 trip: header 5 → ~1 bar in 4 s, panel flows "
                "~1 % for 3–6 min, return water +20–40 °C. After the restart panels P01–P03 "
                "leak 7–15 % (imbalance), off-gas H₂ rises 5–10 vol-% over 3 min, freeboard "
                "pressure oscillates ±70–150 Pa (period 4–8 s) for 5–10 min, the hearth cools "
                "10–30 °C/h. The explosion at T+30 h is not played."
            ),
            t0_s=t0,
            duration_s=t0 + 35 * MINUTE,
            site=SITE,
            furnace=FURNACE,
            permits=(),
            expectations=(
                _exp("cw.pump_trip", "CW-H1", "critical", t0 + 10, "pumps at 0"),
                _exp("cw.header_pressure", "CW-H1", "critical", t0 + 10, "header ~1 bar"),
                _exp("cw.panel_dt", "F1-CW-P01", "critical", t0 + 180, "return +20–40 °C"),
                _exp("cw.panel_dt", "F1-CW-P04", "critical", t0 + 180, "return +20–40 °C"),
                *(
                    _exp(
                        "cw.imbalance",
                        f"F1-CW-P0{n}",
                        "critical",
                        restart_max + 180,
                        "leak ≥ 7 % after the restart",
                    )
                    for n in (1, 2, 3)
                ),
                _exp("freeboard.swing", "F1", "critical", restart_max + 120, "±70–150 Pa"),
                _exp(
                    "offgas.h2.baseline",
                    "F1",
                    "warning",
                    restart_max + 60 + 10 * MINUTE,
                    "H₂ +5–10 vol-% (needs the rule's warm-up to have passed)",
                ),
            ),
            forbidden=(
                Forbidden("cw.", "", normal.format("cooling-water"), before_s=t0),
                Forbidden("freeboard.", "", normal.format("freeboard"), before_s=t0),
            ),
            baseline_until_s=t0,
            build=_build_pump_trip,
        ),
        Scenario(
            name="tap-runout",
            title="Tap-hole / sidewall run-out",
            description=(
                "8 h of the normal plant, then two weeks of tap-block climb compressed into a "
                "20-min ramp (T−40 … T−20 min) of +150–200 °C on f1.sidewall.t01 (its "
                "neighbour t02 30 % of it, +2–3 °C ΔT on panel P01), a +10–20 °C step after "
                "the tap at T−10 min. At T0 (tapping) the tap block rises +300 °C "
                "in 2 min, its neighbour t02 +100 °C, P01 return water +15 °C (P02 +5 °C) from "
                "T+30 s over 2 min, tapping-floor CO +50–200 ppm over 90 s. With probability "
                "1/2 a burst line on P01 (return flow −32…50 %, imbalance > 30 %)."
            ),
            t0_s=TAP_T0,
            duration_s=TAP_T0 + 25 * MINUTE,
            site=SITE,
            furnace=FURNACE,
            permits=(),
            expectations=(
                _exp("tc.high", "F1", "critical", TAP_T0 + 180, "tap block ≥ 650 °C"),
                _exp(
                    "tc.rate",
                    "F1",
                    "critical",
                    TAP_T0 + 300,
                    "the climb (+150–200 °C in 20 min), or +300 °C in 2 min at tapping",
                ),
                _exp("cw.panel_dt", "F1-CW-P01", "critical", TAP_T0 + 240, "ΔT ≥ 20 °C"),
                _exp("gas.co.level", "tapping-floor", "warning", TAP_T0 + 180, "CO +50–200 ppm"),
            ),
            forbidden=(
                Forbidden(
                    "",
                    "",
                    "the 8-h normal baseline before the climb raises no alert",
                    TAP_BASELINE_S,
                ),
            ),
            baseline_until_s=TAP_BASELINE_S,
            build=_build_tap_runout,
        ),
        Scenario(
            name="positive-pressure",
            title="Positive furnace pressure / CO release (off-gas fan trip)",
            description=(
                "At T0 the off-gas fan trips: freeboard −10 → +80…200 Pa in 4 s, off-gas "
                "temperature +100 °C over 1 min, tapping-floor CO to 150–600 ppm over 1–3 min "
                "(maintenance bay 40 %, slag yard 15 %). The fan restarts after 3–5 min; "
                "pressure is negative again within a minute, CO and off-gas recover over "
                "5–15 min."
            ),
            t0_s=t0,
            duration_s=t0 + 30 * MINUTE,
            site=SITE,
            furnace=FURNACE,
            permits=(),
            expectations=(
                _exp("freeboard.pressure", "F1", "critical", t0 + 15, "≥ +80 Pa"),
                _exp("gas.co.level", "tapping-floor", "warning", t0 + 120, "CO ≥ 150 ppm"),
                _exp("gas.co.level", "maintenance-bay", "warning", t0 + 240, "CO ≥ 60 ppm"),
            ),
            forbidden=(
                Forbidden("freeboard.", "", normal.format("freeboard"), before_s=t0),
                Forbidden("gas.", "", normal.format("gas"), before_s=t0),
            ),
            baseline_until_s=t0,
            build=_build_positive_pressure,
        ),
        Scenario(
            name="oxygen-enrichment",
            title="Oxygen enrichment (O₂ line leak)",
            description=(
                "At T0 the O₂ line O2-L1 leaks: pressure falls 4.5–5.5 bar over 60 s (14 → 9 "
                "bar); tapping-floor O₂ rises from 20.9 % to 24–27 % over 5–10 min (maintenance "
                "bay 30 % of that). With probability 1/2 a fire at T+12 min (tapping-floor CO "
                "+100–300 ppm, LEL +5–10 %). A slow leak is not a rupture: o2line.drop (> 2 bar "
                "in 10 s) must stay quiet."
            ),
            t0_s=t0,
            duration_s=t0 + 20 * MINUTE,
            site=SITE,
            furnace=FURNACE,
            permits=(),
            expectations=(_exp("gas.o2.high", "tapping-floor", "warning", t0 + 660, "O₂ ≥ 24 %"),),
            forbidden=(
                Forbidden("o2line.drop", "O2-L1", "≤ 0.92 bar per 10 s is a leak, not a rupture"),
                Forbidden("gas.", "", normal.format("gas"), before_s=t0),
            ),
            baseline_until_s=t0,
            build=_build_oxygen,
        ),
        Scenario(
            name="slag-quench",
            title="Slag quench steam explosion (GNI 2023)",
            description=(
                "At T0 quench water meets slag > 1,200 °C in the slag yard: three gas bursts "
                "(T+5 s, then two within T+1…5 min), each rising over 10 s, held 20–60 s, "
                "decaying with τ 30 s: H₂S 5–20 ppm (the first 8–20) and SO₂ 2–10 ppm (the "
                "first 3–10). The slag temperature and the pressure pulse have no sensor in "
                "the fleet and are not played."
            ),
            t0_s=t0,
            duration_s=t0 + 15 * MINUTE,
            site=SITE,
            furnace=FURNACE,
            permits=(),
            expectations=(
                _exp("gas.h2s.level", "slag-yard", "warning", t0 + 60, "H₂S ≥ 8 ppm"),
                _exp("gas.so2.level", "slag-yard", "warning", t0 + 60, "SO₂ ≥ 3 ppm"),
            ),
            forbidden=(Forbidden("gas.", "", normal.format("gas"), before_s=t0),),
            baseline_until_s=t0,
            build=_build_slag_quench,
        ),
        Scenario(
            name="sensor-faults",
            title="Sensor and gateway faults",
            description=(
                "maintenance-bay.co reads 1.5 ppm low from the start (calibration drift "
                "−0.5 ppm/day, three days accumulated); tapping-floor.lel flagged bad "
                "T−10…T−7 min; slag-yard.co spikes to 2,500–4,000 ppm (outside its 0–2,000 ppm "
                "span) for 2 s at T−8, T−6 and T−4 min; f1.offgas.temp drops out for 60–120 s "
                "three times (from T−12…T−11, T−6…T−5 and T+8…T+9 min); at T0 the work-area "
                "gateway goes offline (status offline, no readings) for 2–10 min, then online; "
                "f1.sidewall.t02 sticks at its T0 value for 20 min."
            ),
            t0_s=t0,
            duration_s=t0 + 25 * MINUTE,
            site=SITE,
            furnace=FURNACE,
            permits=(),
            expectations=(
                _exp("health.stale", "F1", "warning", t0 - 11 * MINUTE + 60, "offgas.temp gap"),
                _exp("health.quality", "tapping-floor", "warning", t0 - 9 * MINUTE, "bad LEL"),
                _exp("health.gateway", "work-areas", "warning", t0 + 30, "gateway offline"),
                _exp("health.stale.critical", "tapping-floor", "critical", t0 + 60, "gas silent"),
                _exp("health.stuck.tc", "F1", "warning", t0 + 12 * MINUTE, "sidewall t02 stuck"),
            ),
            forbidden=(
                Forbidden("gas.co", "maintenance-bay", "a low calibration drift is no gas alert"),
                Forbidden("gas.co", "slag-yard", "an out-of-range spike is a fault, not gas"),
                Forbidden("gas.lel", "tapping-floor", "a bad-quality reading is not evidence"),
            ),
            baseline_until_s=0,
            build=_build_sensor_faults,
        ),
    )


SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType({s.name: s for s in _scenarios()})


def scenario(name: str) -> Scenario:
    """The scenario of this name; raise ScenarioError naming the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


def describe(scenarios: Sequence[Scenario]) -> list[str]:
    """Human-readable lines listing scenarios: name, title, T0, duration, expected alerts."""
    lines: list[str] = []
    for s in scenarios:
        lines.append(
            f"{s.name}: {s.title}; T0 at {s.t0_s} s, {s.duration_s} s played "
            f"({s.rel(0)} … {s.rel(s.duration_s)})"
        )
        lines.extend(
            f"    expect {e.rule} {e.severity} on {e.asset} by {e.by_s} s ({s.rel(e.by_s)})"
            for e in s.expectations
        )
        lines.extend(
            f"    forbid {f.rule_prefix}* on {f.asset or 'any asset'}"
            + ("" if f.before_s is None else f" before {s.rel(f.before_s)}")
            for f in s.forbidden
        )
        lines.extend(
            f"    permit {p.kind} on {p.asset} ({', '.join(p.areas)}) from {s.rel(p.open_s)}"
            for p in s.permits
        )
    return lines
