"""The plant model: the value of every simulated sensor at each integer tick of plant time.

Owns the normal-operation signal of a fleet: per sensor an AR(1) excursion (autocorrelated,
slow for thermocouples), a slow sinusoidal drift and white measurement noise, around a centre
drawn once per sensor from its catalogue band; plus the couplings a plant engineer expects:

- electrode currents follow their furnace's power; off-gas temperature follows it with a lag;
- a cooling panel's return temperature is its supply temperature plus the panel's own ΔT
  (an AR process kept within 3-8 °C [A]);
- a panel's return flow is its supply flow less a tiny loss (0.1-0.3 %) plus meter noise.

One tick is one second of plant time; a sensor with period p reports at tick k when
k % p == 0. All sensors are updated every tick with a fixed number of draws from one seeded
generator, so the value of sensor s at tick k depends only on the seed, the sensors and k —
not on which ticks were asked for, nor on any clock. Values are clipped to the physical range
and rounded to `DECIMALS`.

Pure: numpy only. No clock, no global random, no I/O. It knows nothing of MQTT or timestamps;
mapping tick k to a wall-clock timestamp is the publisher's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ingest.registry import Site
from simulator.catalogue import KINDS, Kind
from simulator.fleet import Fleet

DECIMALS: Final = 3
PANEL_DT_RANGE_C: Final = (3.0, 8.0)  # cooling panel ΔT, return - supply [A: DOMAIN.md §2]
PANEL_DT_CENTRE_C: Final = (4.0, 7.0)  # each panel's own mean ΔT lies here [A]
PANEL_DT_WANDER_C: Final = 0.4  # 1 sigma of a panel's ΔT excursion [A]
PANEL_DT_TAU_S: Final = 900.0
PANEL_FLOW_LOSS: Final = (0.001, 0.003)  # return = supply * (1 - loss) [A]
OFFGAS_TEMP_GAIN_C_PER_MW: Final = 8.0  # off-gas temperature per MW above the mean [A]
OFFGAS_TEMP_LAG_S: Final = 120.0
DRIFT_PERIOD_S: Final = (6 * 3600.0, 48 * 3600.0)  # slow drift: hours to days
_MAX_CYCLE: Final = 100_000  # due-pattern cycle (lcm of periods) cached up to this length

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class GatewayReadings:
    """The readings one gateway reports at one tick, as parallel lists."""

    site: str
    gateway: str
    sensor_ids: list[str]
    units: list[str]
    values: list[float]
    qualities: list[str] | None = None  # per reading good|uncertain|bad; None = all good

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A gateway announcing itself offline or online at a tick (published on its status topic)."""

    site: str
    gateway: str
    online: bool


@dataclass(frozen=True, slots=True)
class _Slot:
    site: str
    gateway: str
    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class _Due:
    slot: _Slot
    index: IntArray
    sensor_ids: list[str]
    units: list[str]


def _lcm(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


class Plant:
    """Deterministic, vectorised sensor values for a fleet, tick by tick in increasing order."""

    def __init__(self, sites: Fleet | Sequence[Site], seed: int) -> None:
        site_list = sites.sites() if isinstance(sites, Fleet) else list(sites)
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        slots: list[_Slot] = []
        ids: list[str] = []
        units: list[str] = []
        kinds: list[Kind | None] = []
        periods: list[int] = []
        lo: list[float] = []
        hi: list[float] = []
        for site in site_list:
            for g in site.gateways:
                start = len(ids)
                for s in g.sensors:
                    ids.append(s.id)
                    units.append(s.unit)
                    kinds.append(KINDS.get(s.kind))
                    periods.append(max(1, round(s.period_s)))
                    lo.append(s.min_value)
                    hi.append(s.max_value)
                slots.append(_Slot(site.id, g.id, start, len(ids)))
        n = len(ids)
        self._slots = slots
        self._ids = ids
        self._units = units
        self._period: IntArray = np.array(periods, dtype=np.int64)
        self._lo: FloatArray = np.array(lo, dtype=np.float64)
        self._hi: FloatArray = np.array(hi, dtype=np.float64)

        def col(attr: str, default: float) -> FloatArray:
            return np.array(
                [default if k is None else float(getattr(k, attr)) for k in kinds],
                dtype=np.float64,
            )

        # Sensors of a kind the catalogue does not know sit mid-range with 1 % noise.
        mid = (self._lo + self._hi) / 2
        baseline = np.where([k is None for k in kinds], mid, col("baseline", 0.0))
        spread = col("spread", 0.0)
        noise = np.where(
            [k is None for k in kinds], (self._hi - self._lo) / 100, col("noise_sd", 0)
        )
        wander = col("wander_sd", 0.0)
        tau = col("wander_tau_s", 1.0)
        drift = col("drift_amp", 0.0)

        centre = baseline + spread * rng.uniform(-1.0, 1.0, n)

        # Pairings found by asset within a site: a panel's circuit, a furnace's sensors.
        ret_t, sup_t, ret_f, sup_f, drv, src, gain, lag_s = [], [], [], [], [], [], [], []
        offset = 0
        for site in site_list:
            by_kind_asset: dict[tuple[str, str], list[int]] = {}
            pos = offset
            for _, s in site.sensors():
                by_kind_asset.setdefault((s.kind, s.asset), []).append(pos)
                pos += 1
            for (kname, asset), members in by_kind_asset.items():
                if kname == "cw_return_temp":
                    partner = by_kind_asset.get(("cw_supply_temp", asset), [])
                    if len(partner) == 1 and len(members) == 1:
                        ret_t.append(members[0])
                        sup_t.append(partner[0])
                elif kname == "cw_return_flow":
                    partner = by_kind_asset.get(("cw_supply_flow", asset), [])
                    if len(partner) == 1 and len(members) == 1:
                        ret_f.append(members[0])
                        sup_f.append(partner[0])
                elif kname in ("electrode_current", "offgas_temp"):
                    power = by_kind_asset.get(("furnace_power", asset), [])
                    if len(power) == 1:
                        for m in members:
                            drv.append(m)
                            src.append(power[0])
                            if kname == "electrode_current":
                                gain.append(float(centre[m] / max(centre[power[0]], 1.0)))
                                lag_s.append(0.0)
                            else:
                                gain.append(OFFGAS_TEMP_GAIN_C_PER_MW)
                                lag_s.append(OFFGAS_TEMP_LAG_S)
            offset = pos

        # A paired return temperature models the panel's ΔT, clipped later to 3-8 °C.
        self._ret_t: IntArray = np.array(ret_t, dtype=np.int64)
        self._sup_t: IntArray = np.array(sup_t, dtype=np.int64)
        if ret_t:
            centre[self._ret_t] = rng.uniform(*PANEL_DT_CENTRE_C, len(ret_t))
            wander[self._ret_t] = PANEL_DT_WANDER_C
            tau[self._ret_t] = PANEL_DT_TAU_S
            drift[self._ret_t] = 0.2
        # A paired return flow models the loss fraction; its meter noise is added apart.
        self._ret_f: IntArray = np.array(ret_f, dtype=np.int64)
        self._sup_f: IntArray = np.array(sup_f, dtype=np.int64)
        self._ret_f_noise: FloatArray = noise[self._ret_f].copy()
        if ret_f:
            centre[self._ret_f] = rng.uniform(*PANEL_FLOW_LOSS, len(ret_f))
            wander[self._ret_f] = 0.0003
            drift[self._ret_f] = 0.0
            noise[self._ret_f] = 0.0

        self._drv: IntArray = np.array(drv, dtype=np.int64)
        self._src: IntArray = np.array(src, dtype=np.int64)
        self._gain: FloatArray = np.array(gain, dtype=np.float64)
        self._alpha: FloatArray = np.array(
            [1.0 if t <= 0 else 1.0 - math.exp(-1.0 / t) for t in lag_s], dtype=np.float64
        )
        self._lag: FloatArray = centre[self._src].copy()

        self._centre = centre
        self._noise = noise
        self._drift = drift
        self._omega: FloatArray = 2 * np.pi / rng.uniform(*DRIFT_PERIOD_S, n)
        self._phase: FloatArray = rng.uniform(0.0, 2 * np.pi, n)
        self._phi: FloatArray = np.exp(-1.0 / np.maximum(tau, 1e-9))
        self._innov: FloatArray = wander * np.sqrt(1.0 - self._phi**2)
        self._ar: FloatArray = wander * rng.standard_normal(n)  # start in the stationary state
        self._n = n
        self._next_tick = 0

        self._cycle = _lcm(sorted(set(periods))) if periods else 1
        self._due_cache: dict[int, list[_Due]] = {}
        self._due_counts: IntArray | None = None

    # -- introspection ----------------------------------------------------------------------

    @property
    def next_tick(self) -> int:
        """The smallest tick `readings` can still be asked for."""
        return self._next_tick

    @property
    def sensor_count(self) -> int:
        """Number of simulated sensors."""
        return self._n

    def gateways(self) -> list[tuple[str, str]]:
        """Every (site, gateway) pair, in the order readings are returned."""
        return [(s.site, s.gateway) for s in self._slots]

    def sensors(self) -> list[tuple[str, str, str]]:
        """Every (site, gateway, sensor id), in the order of the arrays `values` returns."""
        return [
            (s.site, s.gateway, self._ids[i]) for s in self._slots for i in range(s.start, s.stop)
        ]

    @property
    def limits(self) -> tuple[FloatArray, FloatArray]:
        """Each sensor's physical range (low, high), in the order of `values` (copies)."""
        return self._lo.copy(), self._hi.copy()

    def readings_due(self, k: int) -> int:
        """How many readings are due at tick k (pure: no state is used or changed)."""
        return int(np.count_nonzero(k % self._period == 0))

    def ticks_for(self, count: int) -> int:
        """The number of ticks, from tick 0, needed to produce at least `count` readings."""
        if count <= 0 or self._n == 0:
            return 0
        if self._cycle > _MAX_CYCLE:
            ticks, total = 0, 0
            while total < count:
                total += self.readings_due(ticks)
                ticks += 1
            return ticks
        if self._due_counts is None:
            self._due_counts = np.cumsum(
                [self.readings_due(r) for r in range(self._cycle)], dtype=np.int64
            )
        per_cycle = int(self._due_counts[-1])
        cycles, rest = divmod(count - 1, per_cycle)
        r = int(np.searchsorted(self._due_counts, rest + 1))
        return cycles * self._cycle + r + 1

    # -- stepping ---------------------------------------------------------------------------

    def _step(self) -> FloatArray:
        rng = self._rng
        eps = rng.standard_normal(self._n)
        white = rng.standard_normal(self._n)
        t = float(self._next_tick)
        self._ar = self._phi * self._ar + self._innov * eps
        v = self._centre + self._drift * np.sin(self._omega * t + self._phase) + self._ar
        v += self._noise * white
        if self._drv.size:
            self._lag += self._alpha * (v[self._src] - self._lag)
            v[self._drv] += self._gain * (self._lag - self._centre[self._src])
        if self._ret_t.size:
            v[self._ret_t] = v[self._sup_t] + np.clip(v[self._ret_t], *PANEL_DT_RANGE_C)
        if self._ret_f.size:
            loss = np.clip(v[self._ret_f], 0.0, 0.01)
            v[self._ret_f] = v[self._sup_f] * (1.0 - loss) + self._ret_f_noise * white[self._ret_f]
        self._next_tick += 1
        return v

    def _due(self, k: int) -> list[_Due]:
        key = k % self._cycle
        cached = self._due_cache.get(key) if self._cycle <= _MAX_CYCLE else None
        if cached is not None:
            return cached
        due_mask = k % self._period == 0
        out: list[_Due] = []
        for slot in self._slots:
            idx = np.flatnonzero(due_mask[slot.start : slot.stop]).astype(np.int64) + slot.start
            if idx.size:
                pos = idx.tolist()
                out.append(
                    _Due(slot, idx, [self._ids[i] for i in pos], [self._units[i] for i in pos])
                )
        if self._cycle <= _MAX_CYCLE:
            self._due_cache[key] = out
        return out

    def values(self, k: int) -> FloatArray:
        """Advance to tick k and return every sensor's value there (clipped, rounded).

        Ticks between `next_tick` and k are stepped through silently; asking for a tick
        already passed raises ValueError, because the model only moves forward.
        """
        if k < self._next_tick:
            raise ValueError(f"tick {k} is in the past: the plant is at tick {self._next_tick}")
        while self._next_tick < k:
            self._step()
        v = np.clip(self._step(), self._lo, self._hi)
        return np.clip(np.round(v, DECIMALS), self._lo, self._hi)

    def readings(self, k: int) -> list[GatewayReadings]:
        """The readings due at tick k, per gateway with at least one due (see `values`)."""
        return self.pack(k, self.values(k))

    def pack(self, k: int, v: FloatArray) -> list[GatewayReadings]:
        """Group the values `v` (one per sensor) into the readings due at tick k, per gateway.

        Pure: the plant does not move. A layer over the plant (`simulator.scenario`) uses it
        to publish values it has changed.
        """
        return [
            GatewayReadings(
                site=d.slot.site,
                gateway=d.slot.gateway,
                sensor_ids=d.sensor_ids,
                units=d.units,
                values=v[d.index].tolist(),
            )
            for d in self._due(k)
        ]

    def status_changes(self, k: int) -> list[StatusChange]:
        """Gateways going offline or online at tick k: never, in normal operation."""
        return []
