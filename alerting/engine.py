"""The rule engine: committed readings in, condition events out, on event time.

Owns the streaming evaluation of a rule pack (`alerting.pack`) over readings: per sensor (and
per derived cooling-circuit signal) the state of every rule instance — delays, deadbands,
rate windows, baselines, exposure windows, health timers — and the plant state (furnace
energised / hot) that gates process rules. It emits `ConditionEvent`s (activate at a
severity, clear, suppress, unsuppress); turning those into ISA-18.2 alarm states and journal
entries is `alerting.lifecycle` and the store's job.

Pure: no I/O, no clock. Time is the readings' own timestamps (event time); the wall clock is
never read. Each sensor's readings are evaluated once, in time order: a reading at or before
the last one evaluated for its sensor (a redelivery, a late sample) is skipped, so a batch
delivered twice never raises anything twice. Every per-sensor rule is a sequential state
machine with a vectorised fast path that is exactly equivalent (a chunk that cannot change
anything is skipped whole), so the result does not depend on how readings were cut into
batches: replaying the same readings gives the same events, bit for bit.

Two things are evaluated per batch rather than per reading, and say so here: the plant state
that gates rules (`when`) is taken from the batch's latest furnace power and thermocouple
readings before the batch's rules run, and stale sensors are found against the site's latest
event time. Both are exact in replay (readings in time order); live, a reading from one
gateway can be evaluated against a plant state another gateway reported a batch later.

Derived signals pair readings with equal timestamps (one scan of the gateway): panel ΔT =
return - supply temperature, imbalance = (supply - return) / supply flow in %.
"""

from __future__ import annotations

import math
import pickle
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from alerting.compliance import Compliance, Permit
from alerting.exposure import ExposureWindow
from alerting.pack import Pack, Priority, Rule, RuleKind, Severity, When

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_STATE_VERSION: Final = 1
_US: Final = 1_000_000
_BAD: Final = 2  # quality code of a bad reading (ingest.contract.Quality.BAD)
_PROCESS_KINDS: Final = frozenset(
    {RuleKind.THRESHOLD, RuleKind.RATE, RuleKind.DEVIATION, RuleKind.EXPOSURE}
)
_DERIVED_PAIRS: Final = {
    "panel_dt": ("cw_supply_temp", "cw_return_temp"),
    "cw_imbalance": ("cw_supply_flow", "cw_return_flow"),
}
_PAIR_HORIZON_US: Final = 120 * _US  # unmatched halves of a pair older than this are dropped


class EngineError(RuntimeError):
    """Raised when saved engine state cannot be restored (other version or corrupt)."""


class EventKind(StrEnum):
    """What happened to a rule instance's condition."""

    ACTIVATE = "activate"  # became active, or changed severity while active
    CLEAR = "clear"
    SUPPRESS = "suppress"  # suppressed by design: plant state, or the sensor's bad quality
    UNSUPPRESS = "unsuppress"


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """A registered sensor as the engine needs it."""

    key: int
    site: str
    gateway: str
    id: str
    kind: str
    unit: str
    period_s: float
    asset: str
    min_value: float = -math.inf
    max_value: float = math.inf


@dataclass(frozen=True, slots=True)
class ConditionEvent:
    """A change of one rule instance's condition, at an event time."""

    at_us: int
    site: str
    asset: str
    rule_id: str
    subject: str
    title: str
    kind: EventKind
    severity: Severity | None = None
    priority: Priority = Priority.LOW
    latch: bool = False
    value: float | None = None
    limit: float | None = None
    reason: str = ""
    escalated_by: tuple[str, ...] = ()

    @property
    def instance(self) -> tuple[str, str, str]:
        """(site, rule id, subject): the alert this event belongs to."""
        return self.site, self.rule_id, self.subject


# -- the level machine: warning/critical levels with deadband, on-delay and off-delay ----------


class _Levels:
    """Levels normalised so that exceeding means measure >= limit (low rules are negated)."""

    __slots__ = ("active", "below", "db", "limits", "off_us", "on_us", "since")

    def __init__(self, limits: Sequence[float], on_s: Sequence[float], db: float, off_s: float):
        self.limits = list(limits)  # index 0 warning, 1 critical; inf when absent
        self.on_us = [int(s * _US) for s in on_s]
        self.db = db
        self.off_us = int(off_s * _US)
        self.active = 0  # 0 normal, 1 warning, 2 critical
        self.since = [-1, -1]  # when each level's condition started to hold
        self.below = -1  # when the active level stopped holding (off-delay)

    def quiet(self, m_max: float) -> bool:
        """True when a chunk whose largest measure is m_max cannot change anything."""
        return (
            self.active == 0
            and self.since[0] < 0
            and self.since[1] < 0
            and not m_max >= min(self.limits)
        )

    def step(self, t: int, m: float) -> int | None:
        """Feed one measure; return the new level (0 = clear) when it changes."""
        for i in (0, 1):
            lim = self.limits[i]
            ok = m > lim - self.db if self.active > i else m >= lim
            if ok:
                if self.since[i] < 0:
                    self.since[i] = t
            else:
                self.since[i] = -1
        want = 0
        for i in (1, 0):
            s = self.since[i]
            if s >= 0 and (self.active > i or t - s >= self.on_us[i]):
                want = i + 1
                break
        if want > self.active:
            self.active, self.below = want, -1
            return want
        if want < self.active:
            if self.below < 0:
                self.below = t
            if t - self.below >= self.off_us:
                self.active, self.below = want, -1
                return want
            return None
        self.below = -1
        return None


# -- rule instances ------------------------------------------------------------------------


class _Inst:
    """One rule applied to one subject (sensor or derived signal)."""

    __slots__ = (
        "base",
        "base_t",
        "exp",
        "exp_bucket",
        "exp_last",
        "first_t",
        "levels",
        "permits",
        "rule_id",
        "sign",
        "suppressed",
    )

    def __init__(self, rule: Rule, sign: float, permits: tuple[Permit, ...]) -> None:
        self.rule_id = rule.id
        self.sign = sign
        self.permits = permits
        limits = [math.inf, math.inf]
        on = [0.0, 0.0]
        for lv in rule.levels:
            i = 0 if lv.severity is Severity.WARNING else 1
            limits[i] = sign * lv.level
            on[i] = lv.on_delay_s
        self.levels = _Levels(limits, on, rule.deadband, rule.off_delay_s)
        self.suppressed: set[str] = set()
        self.base = math.nan  # deviation: the baseline
        self.base_t = -1
        self.first_t = -1
        self.exp: ExposureWindow | None = None
        self.exp_bucket = -1
        self.exp_last = -1


class _Subject:
    """A sensor or derived signal: its last reading, health timers and rule instances."""

    __slots__ = (
        "asset",
        "furnace",
        "gateway",
        "hist_t",
        "hist_v",
        "id",
        "key",
        "kind",
        "last_t",
        "last_v",
        "period_s",
        "process",
        "quality",
        "site",
        "stale",
        "stale_min",
        "stale_on",
        "stuck",
        "stuck_buckets",
    )

    def __init__(self, info: SensorInfo, furnace: str) -> None:
        self.key = info.key
        self.site = info.site
        self.gateway = info.gateway
        self.id = info.id
        self.kind = info.kind
        self.asset = info.asset
        self.period_s = info.period_s
        self.furnace = furnace
        self.last_t = -1
        self.last_v = math.nan
        self.process: list[_Inst] = []
        self.quality: list[_Inst] = []
        self.stuck: list[_Inst] = []
        self.stale: list[tuple[str, int]] = []  # (rule id, silence limit us)
        self.stale_on: dict[str, bool] = {}
        self.stale_min = 0  # shortest silence limit of its stale rules, us
        self.hist_t: IntArray = np.empty(0, dtype=np.int64)  # rate windows look back here
        self.hist_v: FloatArray = np.empty(0, dtype=np.float64)
        self.stuck_buckets: deque[tuple[int, float, float]] = deque()


@dataclass(slots=True)
class _Plant:
    energised: bool = False
    hot: bool = False


class Engine:
    """Evaluates one pack over the readings of the sensors it is given."""

    def __init__(
        self, pack: Pack, sensors: Iterable[SensorInfo], compliance: Compliance | None = None
    ) -> None:
        self.pack = pack
        self.compliance = compliance or Compliance()
        self._furnace_re = re.compile(pack.plant.furnace_pattern)
        self._subjects: dict[int, _Subject] = {}
        self._by_rule: dict[str, Rule] = {r.id: r for r in pack.rules}
        self._plant: dict[tuple[str, str], _Plant] = {}
        self._tc_last: dict[int, float] = {}
        self._site_wm: dict[str, int] = {}
        self._pairs: dict[int, tuple[int, int, dict[int, float], dict[int, float]]] = {}
        self._gw_on: dict[tuple[str, str], bool] = {}
        self._gw_rules = [r for r in pack.rules if r.kind is RuleKind.GATEWAY]
        self._max_window_us: dict[int, int] = {}
        self.skipped = 0  # readings at or before their sensor's last evaluated one
        self.set_sensors(sensors)

    # -- setup ----------------------------------------------------------------------------

    def _furnace_of(self, asset: str) -> str:
        m = self._furnace_re.match(asset)
        return m.group(1) if m else ""

    def set_sensors(self, sensors: Iterable[SensorInfo]) -> None:
        """Add subjects for sensors not yet known (a registry reload); keeps existing state."""
        infos = [s for s in sensors if s.key not in self._subjects]
        for info in infos:
            self._add_subject(info)
        # Derived cooling-circuit signals: one per (site, asset) with both halves of a pair.
        by_asset: dict[tuple[str, str, str], SensorInfo] = {}
        for s in self._subjects.values():
            if s.key >= 0:
                by_asset[(s.site, s.asset, s.kind)] = SensorInfo(
                    s.key, s.site, s.gateway, s.id, s.kind, "", s.period_s, s.asset
                )
        known = {(s.site, s.id) for s in self._subjects.values() if s.key < 0}
        for derived, (a_kind, b_kind) in _DERIVED_PAIRS.items():
            for (site, asset, kind), a in sorted(by_asset.items()):
                if kind != a_kind:
                    continue
                b = by_asset.get((site, asset, b_kind))
                sid = f"{asset}.{derived}"
                if b is None or (site, sid) in known:
                    continue
                key = -(len(self._pairs) + 1)
                self._pairs[key] = (a.key, b.key, {}, {})
                self._add_subject(
                    SensorInfo(key, site, a.gateway, sid, derived, "", a.period_s, asset)
                )

    def _add_subject(self, info: SensorInfo) -> None:
        subj = _Subject(info, self._furnace_of(info.asset))
        max_w = 0.0
        for rule in self.pack.rules:
            if not rule.sensors.matches(info.kind, info.asset):
                continue
            if rule.kind is RuleKind.STALE:
                for lv in rule.levels:
                    limit = max(lv.level, lv.periods * info.period_s)
                    subj.stale.append((rule.id, int(limit * _US)))
                subj.stale_min = min(x[1] for x in subj.stale)
                continue
            if rule.kind is RuleKind.GATEWAY:
                continue
            sign = -1.0 if rule.direction == "low" or rule.kind is RuleKind.STUCK else 1.0
            permits = (
                tuple(self.compliance.permits_for(info.site, info.asset))
                if rule.requires_permit
                else ()
            )
            inst = _Inst(rule, sign, permits)
            if rule.kind is RuleKind.QUALITY:
                # Measure 1 for a bad reading, 0 for a good one: a level is "bad at all".
                inst.levels.limits = [0.5 if x < math.inf else x for x in inst.levels.limits]
                subj.quality.append(inst)
            elif rule.kind is RuleKind.STUCK:
                subj.stuck.append(inst)
            else:
                if rule.kind is RuleKind.EXPOSURE:
                    inst.exp = ExposureWindow(
                        max_hold_s=max(5 * info.period_s, 15.0), windows_s=(28_800.0, 900.0)
                    )
                if rule.kind is RuleKind.RATE:
                    max_w = max(max_w, rule.window_s)
                subj.process.append(inst)
        self._max_window_us[info.key] = int(max_w * _US)
        self._subjects[info.key] = subj

    def set_compliance(self, compliance: Compliance) -> None:
        """Replace the facility record snapshot (permits, findings, certificates, reports)."""
        self.compliance = compliance
        for subj in self._subjects.values():
            for inst in subj.process:
                rule = self._by_rule[inst.rule_id]
                if rule.requires_permit:
                    inst.permits = tuple(compliance.permits_for(subj.site, subj.asset))

    # -- evaluation -----------------------------------------------------------------------

    def process(
        self,
        keys: Sequence[int] | IntArray,
        ts_us: Sequence[int] | IntArray,
        values: Sequence[float] | FloatArray,
        qualities: Sequence[int] | IntArray,
        *,
        statuses: Iterable[tuple[str, str, bool, int]] = (),
    ) -> list[ConditionEvent]:
        """Evaluate a batch of committed readings (any order); return the condition events
        in event-time order. `statuses` are gateway (site, gateway, online, ts_us)."""
        out: list[ConditionEvent] = []
        for site, gw, online, t in statuses:
            self._gateway_status(site, gw, online, t, out)
        k = np.asarray(keys, dtype=np.int64)
        if k.size:
            t_arr = np.asarray(ts_us, dtype=np.int64)
            v_arr = np.asarray(values, dtype=np.float64)
            q_arr = np.asarray(qualities, dtype=np.int64)
            order = np.lexsort((t_arr, k))
            k, t_arr, v_arr, q_arr = k[order], t_arr[order], v_arr[order], q_arr[order]
            bounds = np.flatnonzero(np.diff(k)) + 1
            starts = np.concatenate(([0], bounds))
            ends = np.concatenate((bounds, [k.size]))
            chunks: list[tuple[_Subject, IntArray, FloatArray, IntArray]] = []
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                subj = self._subjects.get(int(k[a]))
                if subj is None:
                    continue
                tt, vv, qq = t_arr[a:b], v_arr[a:b], q_arr[a:b]
                if subj.last_t >= 0 and tt[0] <= subj.last_t:
                    fresh = tt > subj.last_t
                    self.skipped += int(fresh.size - np.count_nonzero(fresh))
                    tt, vv, qq = tt[fresh], vv[fresh], qq[fresh]
                    if not tt.size:
                        continue
                chunks.append((subj, tt, vv, qq))
            self._update_plant(chunks, out)
            chunks.extend(self._derive(chunks))
            for subj, tt, vv, qq in chunks:
                self._subject_chunk(subj, tt, vv, qq, out)
                wm = self._site_wm.get(subj.site, -1)
                if int(tt[-1]) > wm:
                    self._site_wm[subj.site] = int(tt[-1])
            self._check_stale(out)
        out.sort(key=lambda e: (e.at_us, e.site, e.rule_id, e.subject, _KIND_ORDER[e.kind]))
        return out

    def _gateway_status(
        self, site: str, gw: str, online: bool, t: int, out: list[ConditionEvent]
    ) -> None:
        was = self._gw_on.get((site, gw), True)
        self._gw_on[(site, gw)] = online
        if was == online:
            return
        for rule in self._gw_rules:
            lv = rule.levels[-1]
            if online:
                out.append(
                    ConditionEvent(
                        t, site, gw, rule.id, gw, rule.title, EventKind.CLEAR, reason="online"
                    )
                )
            else:
                out.append(
                    self._activate(
                        site, gw, rule, gw, t, lv.severity, 1.0, 1.0, "gateway reported offline"
                    )
                )

    def _update_plant(
        self, chunks: list[tuple[_Subject, IntArray, FloatArray, IntArray]], out: list[Any]
    ) -> None:
        pm = self.pack.plant
        touched: set[tuple[str, str]] = set()
        power: dict[tuple[str, str], float] = {}
        for subj, _tt, vv, qq in chunks:
            good = vv[qq != _BAD]
            if not good.size or not subj.furnace:
                continue
            if subj.kind == pm.power_kind:
                power[(subj.site, subj.furnace)] = float(good[-1])
                touched.add((subj.site, subj.furnace))
            elif subj.kind in pm.hot_kinds:
                self._tc_last[subj.key] = float(good[-1])
                touched.add((subj.site, subj.furnace))
        if not touched:
            return
        changed: list[tuple[str, str]] = []
        for site, furnace in touched:
            ps = self._plant.setdefault((site, furnace), _Plant())
            before = (ps.energised, ps.hot)
            if (site, furnace) in power:
                ps.energised = power[(site, furnace)] > pm.energised_above_mw
            tcs = [
                v
                for key, v in self._tc_last.items()
                if (s := self._subjects[key]).site == site and s.furnace == furnace
            ]
            ps.hot = ps.energised or (bool(tcs) and max(tcs) > pm.hot_above_c)
            if (ps.energised, ps.hot) != before:
                changed.append((site, furnace))
        if not changed:
            return
        t_now = max(int(tt[-1]) for _s, tt, _v, _q in chunks)
        sites = {s for s, _f in changed}
        for subj in self._subjects.values():
            if subj.site not in sites:
                continue
            for inst in subj.process:
                rule = self._by_rule[inst.rule_id]
                if rule.when is When.ALWAYS:
                    continue
                self._gate(subj, inst, rule, t_now, out)

    def _plant_ok(self, subj: _Subject, when: When) -> bool:
        if when is When.ALWAYS:
            return True
        if subj.furnace:
            states = [self._plant.get((subj.site, subj.furnace), _Plant())]
        else:  # a site-level asset (a cooling header, the oxygen line): any furnace counts
            states = [p for (s, _f), p in self._plant.items() if s == subj.site] or [_Plant()]
        match when:
            case When.ENERGISED:
                return any(p.energised for p in states)
            case When.HOT:
                return any(p.hot for p in states)
            case When.OFF:
                return not any(p.energised for p in states)
        return True

    def _gate(
        self, subj: _Subject, inst: _Inst, rule: Rule, t: int, out: list[ConditionEvent]
    ) -> None:
        """Record suppression by plant state for an active instance (or lift it)."""
        ok = self._plant_ok(subj, rule.when)
        why = f"plant state: rule applies while furnace is {rule.when.value}"
        if not ok and "plant" not in inst.suppressed and inst.levels.active:
            self._suppress(subj, inst, rule, "plant", why, t, out)
        elif ok and "plant" in inst.suppressed:
            self._unsuppress(subj, inst, rule, "plant", why, t, out)

    def _suppress(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        cause: str,
        why: str,
        t: int,
        out: list[ConditionEvent],
    ) -> None:
        if not inst.suppressed:
            out.append(
                ConditionEvent(
                    t, subj.site, subj.asset, rule.id, subj.id, rule.title, EventKind.SUPPRESS,
                    reason=why,
                )
            )  # fmt: skip
        inst.suppressed.add(cause)

    def _unsuppress(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        cause: str,
        why: str,
        t: int,
        out: list[ConditionEvent],
    ) -> None:
        inst.suppressed.discard(cause)
        if not inst.suppressed:
            out.append(
                ConditionEvent(
                    t, subj.site, subj.asset, rule.id, subj.id, rule.title, EventKind.UNSUPPRESS,
                    reason=f"{why}: no longer applies",
                )
            )  # fmt: skip

    def _derive(
        self, chunks: list[tuple[_Subject, IntArray, FloatArray, IntArray]]
    ) -> list[tuple[_Subject, IntArray, FloatArray, IntArray]]:
        if not self._pairs:
            return []
        by_key = {subj.key: (tt, vv, qq) for subj, tt, vv, qq in chunks}
        derived = []
        for key, (ka, kb, pend_a, pend_b) in self._pairs.items():
            ca, cb = by_key.get(ka), by_key.get(kb)
            if ca is None and cb is None:
                continue
            for c, pend in ((ca, pend_a), (cb, pend_b)):
                if c is not None:
                    good = c[2] != _BAD
                    pend.update(zip(c[0][good].tolist(), c[1][good].tolist(), strict=True))
            common = sorted(pend_a.keys() & pend_b.keys())
            subj = self._subjects[key]
            common = [t for t in common if t > subj.last_t]
            if common:
                a = np.array([pend_a.pop(t) for t in common])
                b = np.array([pend_b.pop(t) for t in common])
                if subj.kind == "panel_dt":
                    v = b - a
                else:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        v = np.where(a > 0, (a - b) / a * 100.0, 0.0)
                tt = np.array(common, dtype=np.int64)
                derived.append((subj, tt, v, np.zeros(tt.size, dtype=np.int64)))
            newest = max(max(pend_a, default=-1), max(pend_b, default=-1))
            for pend in (pend_a, pend_b):
                for t in [t for t in pend if t < newest - _PAIR_HORIZON_US]:
                    del pend[t]
        return derived

    def _subject_chunk(
        self,
        subj: _Subject,
        tt: IntArray,
        vv: FloatArray,
        qq: IntArray,
        out: list[ConditionEvent],
    ) -> None:
        # Health: silence before this chunk, then bad quality, then stuck.
        if (
            subj.stale
            and subj.last_t >= 0
            and (
                any(subj.stale_on.values())
                or int(tt[0]) - subj.last_t > subj.stale_min
                or (tt.size > 1 and int(np.diff(tt).max()) > subj.stale_min)
            )
        ):
            gaps_end = np.concatenate(([subj.last_t], tt[:-1]))
            gaps = tt - gaps_end
            for rule_id, limit in subj.stale:
                big = np.flatnonzero(gaps > limit)
                rule = self._by_rule[rule_id]
                for i in big.tolist():
                    start = int(gaps_end[i]) + limit
                    if not subj.stale_on.get(rule_id):
                        self._stale_on(subj, rule, start, limit, out)
                    self._stale_off(subj, rule, int(tt[i]), out)
                if subj.stale_on.get(rule_id):
                    self._stale_off(subj, rule, int(tt[0]), out)
        bad = qq == _BAD
        any_bad = bool(bad.any())
        if subj.quality:
            for inst in subj.quality:
                lv = inst.levels
                if not any_bad and lv.quiet(0.0):
                    continue
                rule = self._by_rule[inst.rule_id]
                for t, b, v in zip(tt.tolist(), bad.tolist(), vv.tolist(), strict=True):
                    changed = lv.step(t, 1.0 if b else 0.0)
                    if changed is not None:
                        self._quality_change(subj, inst, rule, changed, t, v, out)
        if subj.stuck:
            self._stuck(subj, tt, vv, bad, out)
        if any_bad:
            good = ~bad
            tt, vv = tt[good], vv[good]
        if tt.size and subj.process:
            quality_bad = any(i.levels.active for i in subj.quality)
            if not quality_bad:
                self._process(subj, tt, vv, out)
        subj.last_t = max(subj.last_t, int(tt[-1])) if tt.size else subj.last_t
        if tt.size:
            subj.last_v = float(vv[-1])

    def _quality_change(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        level: int,
        t: int,
        v: float,
        out: list[ConditionEvent],
    ) -> None:
        why = f"sensor {subj.id} reports bad quality"
        if level:
            sev = Severity.CRITICAL if level == 2 else Severity.WARNING
            out.append(self._activate(subj.site, subj.asset, rule, subj.id, t, sev, v, 0.0, why))
            for p in subj.process:
                self._suppress(subj, p, self._by_rule[p.rule_id], "quality", why, t, out)
        else:
            out.append(
                ConditionEvent(
                    t, subj.site, subj.asset, rule.id, subj.id, rule.title, EventKind.CLEAR,
                    value=v, reason="good readings again",
                )
            )  # fmt: skip
            for p in subj.process:
                self._unsuppress(subj, p, self._by_rule[p.rule_id], "quality", why, t, out)

    def _stuck(
        self, subj: _Subject, tt: IntArray, vv: FloatArray, bad: npt.NDArray[np.bool_], out: Any
    ) -> None:
        rule0 = self._by_rule[subj.stuck[0].rule_id]
        window_us = int(rule0.window_s * _US)
        bucket_us = max(window_us // 10, 1)
        n_buckets = 10
        good = ~bad
        t_good, v_good = tt[good], vv[good]
        if not t_good.size:
            return
        bids = t_good // bucket_us
        buckets = subj.stuck_buckets
        if int(bids[0]) == int(bids[-1]) and buckets and buckets[-1][0] == int(bids[0]):
            _, plo, phi = buckets[-1]  # the common case: still inside the current bucket
            buckets[-1] = (
                int(bids[0]),
                min(plo, float(v_good.min())),
                max(phi, float(v_good.max())),
            )
            return
        cuts = np.flatnonzero(np.diff(bids)) + 1
        starts_a = np.concatenate(([0], cuts))
        los = np.minimum.reduceat(v_good, starts_a).tolist()
        his = np.maximum.reduceat(v_good, starts_a).tolist()
        for bid, lo, hi in zip(bids[starts_a].tolist(), los, his, strict=True):
            if buckets and buckets[-1][0] == bid:
                _, plo, phi = buckets[-1]
                buckets[-1] = (bid, min(lo, plo), max(hi, phi))
                continue
            # A new bucket starts: the ones before it are complete; judge the window.
            if len(buckets) >= n_buckets and buckets[-1][0] - buckets[-n_buckets][0] == (
                n_buckets - 1
            ):
                last = list(buckets)[-n_buckets:]
                spread = max(x[2] for x in last) - min(x[1] for x in last)
                t_eval = (buckets[-1][0] + 1) * bucket_us
                for inst in subj.stuck:
                    rule = self._by_rule[inst.rule_id]
                    changed = inst.levels.step(t_eval, -spread)
                    if changed is not None:
                        self._emit_level(subj, inst, rule, changed, t_eval, spread, out)
            buckets.append((bid, lo, hi))
            while len(buckets) > n_buckets:
                buckets.popleft()

    def _process(self, subj: _Subject, tt: IntArray, vv: FloatArray, out: Any) -> None:
        # Rate windows need history from before this chunk.
        need = self._max_window_us.get(subj.key, 0)
        if need:
            all_t = np.concatenate((subj.hist_t, tt))
            all_v = np.concatenate((subj.hist_v, vv))
        else:
            all_t, all_v = tt, vv
        for inst in subj.process:
            rule = self._by_rule[inst.rule_id]
            match rule.kind:
                case RuleKind.THRESHOLD:
                    self._run(subj, inst, rule, tt, inst.sign * vv, vv, out)
                case RuleKind.RATE:
                    self._rate(subj, inst, rule, tt, vv, all_t, all_v, out)
                case RuleKind.DEVIATION:
                    self._deviation(subj, inst, rule, tt, vv, out)
                case RuleKind.EXPOSURE:
                    self._exposure(subj, inst, rule, tt, vv, out)
                case _:
                    pass
        if need:
            cutoff = int(tt[-1]) - need - int(subj.period_s * 2 * _US)
            i = max(0, int(np.searchsorted(all_t, cutoff, side="right")) - 1)
            subj.hist_t, subj.hist_v = all_t[i:], all_v[i:]

    def _run(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        tt: IntArray,
        m: FloatArray,
        raw: FloatArray,
        out: list[ConditionEvent],
    ) -> None:
        """Feed measures through the level machine; skip the chunk when it cannot matter."""
        if inst.permits:
            from alerting.compliance import permit_mask  # noqa: PLC0415

            mask = np.asarray(permit_mask(inst.permits, tt), dtype=bool)
            m = np.where(mask, m, -math.inf)
        elif rule.requires_permit:
            return
        lv = inst.levels
        if not m.size:
            return
        m_max = float(np.nanmax(m)) if not np.isnan(m).all() else -math.inf
        if lv.quiet(m_max):
            return
        for t, mm, v in zip(tt.tolist(), m.tolist(), raw.tolist(), strict=True):
            changed = lv.step(t, mm)
            if changed is not None:
                self._emit_level(subj, inst, rule, changed, t, v, out)

    def _rate(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        tt: IntArray,
        vv: FloatArray,
        all_t: IntArray,
        all_v: FloatArray,
        out: list[ConditionEvent],
    ) -> None:
        w = int(rule.window_s * _US)
        if rule.measure == "swing":
            lo = np.searchsorted(all_t, tt - w, side="right")
            hi = np.searchsorted(all_t, tt, side="right")
            m = np.array(
                [float(np.ptp(all_v[a:b])) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
            )
        else:
            idx = np.searchsorted(all_t, tt - w, side="right") - 1
            ok = idx >= 0
            idx = np.maximum(idx, 0)
            dt_s = (tt - all_t[idx]) / _US
            with np.errstate(divide="ignore", invalid="ignore"):
                m = np.where(ok & (dt_s > 0), (vv - all_v[idx]) / dt_s * rule.per_s, math.nan)
            if rule.measure == "fall":
                m = -m
        self._run(subj, inst, rule, tt, m, m, out)

    def _deviation(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        tt: IntArray,
        vv: FloatArray,
        out: list[ConditionEvent],
    ) -> None:
        tau_us = rule.baseline_s * _US
        warm_us = rule.warmup_s * _US
        lv = inst.levels
        base, base_t, first_t = inst.base, inst.base_t, inst.first_t
        for t, v in zip(tt.tolist(), vv.tolist(), strict=True):
            if first_t < 0:
                first_t, base, base_t = t, v, t
                continue
            d = v - base
            m = d if rule.measure == "rise" else -d if rule.measure == "fall" else abs(d)
            if t - first_t >= warm_us:
                changed = lv.step(t, m)
                if changed is not None:
                    self._emit_level(subj, inst, rule, changed, t, v, out, limit_base=base)
            # The baseline does not learn a fault: frozen while the condition holds.
            if not lv.active and lv.since[0] < 0 and lv.since[1] < 0:
                a = 1.0 - math.exp(-(t - base_t) / tau_us)
                base += a * (v - base)
            base_t = t
        inst.base, inst.base_t, inst.first_t = base, base_t, first_t

    def _exposure(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        tt: IntArray,
        vv: FloatArray,
        out: list[ConditionEvent],
    ) -> None:
        win = inst.exp
        if win is None:
            return
        window_s = 28_800.0 if rule.measure == "twa_8h" else 900.0
        bucket_us = 10 * _US
        bids = tt // bucket_us
        cuts = np.flatnonzero(np.diff(bids)) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = [*cuts.tolist(), int(bids.size)]
        for a, b in zip(starts, ends, strict=True):
            bid = int(bids[a])
            if inst.exp_bucket >= 0 and bid > inst.exp_bucket:
                # The previous bucket is complete: judge the window as of its last reading.
                mean = win.mean(window_s)
                t_eval = inst.exp_last
                if not math.isnan(mean):
                    lv = inst.levels
                    changed = lv.step(t_eval, mean)
                    if changed is not None:
                        self._emit_level(subj, inst, rule, changed, t_eval, mean, out)
            win.add(tt[a:b], vv[a:b])
            inst.exp_bucket = bid
            inst.exp_last = int(tt[b - 1])

    def _check_stale(self, out: list[ConditionEvent]) -> None:
        for subj in self._subjects.values():
            if not subj.stale or subj.last_t < 0 or subj.key < 0:
                continue
            wm = self._site_wm.get(subj.site, -1)
            for rule_id, limit in subj.stale:
                if not subj.stale_on.get(rule_id) and wm - subj.last_t > limit:
                    self._stale_on(subj, self._by_rule[rule_id], subj.last_t + limit, limit, out)

    def _stale_on(
        self, subj: _Subject, rule: Rule, t: int, limit: int, out: list[ConditionEvent]
    ) -> None:
        subj.stale_on[rule.id] = True
        lv = rule.levels[-1]
        why = f"no reading from {subj.id} for {limit / _US:g} s"
        out.append(self._activate(subj.site, subj.asset, rule, subj.id, t, lv.severity, 0, 0, why))

    def _stale_off(self, subj: _Subject, rule: Rule, t: int, out: list[ConditionEvent]) -> None:
        subj.stale_on[rule.id] = False
        out.append(
            ConditionEvent(
                t, subj.site, subj.asset, rule.id, subj.id, rule.title, EventKind.CLEAR,
                reason="readings again",
            )
        )  # fmt: skip

    def _emit_level(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        level: int,
        t: int,
        value: float,
        out: list[ConditionEvent],
        limit_base: float | None = None,
    ) -> None:
        if level == 0:
            out.append(
                ConditionEvent(
                    t, subj.site, subj.asset, rule.id, subj.id, rule.title, EventKind.CLEAR,
                    value=value, reason="returned to normal",
                )
            )  # fmt: skip
            return
        sev = Severity.WARNING if level == 1 else Severity.CRITICAL
        lvl = rule.level(sev)
        limit = lvl.level if lvl else math.nan
        if limit_base is not None:
            limit = limit_base + (-limit if rule.measure == "fall" else limit)
        why = _describe(rule, sev, value, limit)
        if rule.when is not When.ALWAYS and not self._plant_ok(subj, rule.when):
            self._suppress(
                subj, inst, rule, "plant",
                f"plant state: rule applies while furnace is {rule.when.value}", t, out,
            )  # fmt: skip
        out.append(self._activate(subj.site, subj.asset, rule, subj.id, t, sev, value, limit, why))

    def _activate(
        self,
        site: str,
        asset: str,
        rule: Rule,
        subject: str,
        t: int,
        sev: Severity,
        value: float,
        limit: float,
        why: str,
    ) -> ConditionEvent:
        lvl = rule.level(sev)
        priority = lvl.priority if lvl else Priority.MEDIUM
        escalated = tuple(self.compliance.escalation(site, asset, t))
        if escalated:
            priority = priority.raised()
        return ConditionEvent(
            t,
            site,
            asset,
            rule.id,
            subject,
            rule.title,
            EventKind.ACTIVATE,
            severity=sev,
            priority=priority,
            latch=lvl.latch if lvl else False,
            value=float(value),
            limit=float(limit),
            reason=why,
            escalated_by=escalated,
        )

    # -- state ----------------------------------------------------------------------------

    def watermarks(self) -> dict[int, int]:
        """Per sensor key, the time of the last reading evaluated."""
        return {k: s.last_t for k, s in self._subjects.items() if k >= 0 and s.last_t >= 0}

    def dump_state(self) -> bytes:
        """Everything needed to resume exactly where this engine is."""
        state = {
            "version": _STATE_VERSION,
            "pack": self.pack.sha256,
            "subjects": self._subjects,
            "plant": self._plant,
            "tc_last": self._tc_last,
            "site_wm": self._site_wm,
            "pairs": self._pairs,
            "gw_on": self._gw_on,
        }
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def load_state(self, blob: bytes) -> None:
        """Resume from `dump_state` output of an engine running the same pack.

        The blob is the service's own checkpoint, read from its own database (pickle is safe
        here for that reason only; it is never read from anywhere else).
        """
        try:
            state = pickle.loads(blob)  # noqa: S301 - our own checkpoint, see docstring
        except Exception as exc:  # any unpickling failure means: not restorable
            raise EngineError(f"saved engine state is unreadable: {exc!r}") from exc
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise EngineError("saved engine state is of another version")
        if state.get("pack") != self.pack.sha256:
            raise EngineError("saved engine state belongs to another rule pack")
        subjects: dict[int, _Subject] = state["subjects"]
        for key, subj in subjects.items():
            if key in self._subjects:
                self._subjects[key] = subj
        self._plant = state["plant"]
        self._tc_last = state["tc_last"]
        self._site_wm = state["site_wm"]
        self._pairs = state["pairs"]
        self._gw_on = state["gw_on"]
        self.set_compliance(self.compliance)


_KIND_ORDER: Final = {
    EventKind.SUPPRESS: 0,
    EventKind.ACTIVATE: 1,
    EventKind.CLEAR: 2,
    EventKind.UNSUPPRESS: 3,
}


def _describe(rule: Rule, sev: Severity, value: float, limit: float) -> str:
    match rule.kind:
        case RuleKind.RATE:
            return f"{rule.measure} {value:.4g} over {rule.window_s:g} s, {sev} limit {limit:g}"
        case RuleKind.DEVIATION:
            return f"value {value:.4g} is {rule.measure} beyond baseline: {sev} limit {limit:.4g}"
        case RuleKind.EXPOSURE:
            return f"{rule.measure} {value:.4g} reached the {sev} limit {limit:g}"
        case RuleKind.STUCK:
            return f"spread {value:.3g} over {rule.window_s:g} s is below {limit:g}: stuck"
        case _:
            word = "below" if rule.direction == "low" else "above"
            return f"value {value:.4g} {word} the {sev} limit {limit:g}"
