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
readings before the batch's rules run, and a silent sensor is found against its own
gateway's latest event time (gateways run at their own pace, and a replay plays each as fast
as it can, so another gateway's clock says nothing about this one). Silence is also found
when the sensor's next reading arrives after a gap, with the activation at last reading +
limit. A whole gateway falling silent is the gateway rule's job (status / last will). The
plant state is exact in replay (readings in time order); live, a reading from one gateway can
be evaluated against a plant state another gateway reported a batch later.

Derived signals pair readings with equal timestamps (one scan of the gateway): panel ΔT =
return - supply temperature, imbalance = (supply - return) / supply flow in %.
"""

from __future__ import annotations

import bisect
import math
import pickle
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from alerting.anomaly import AnomalyDetector, AnomalyError, Explained
from alerting.compliance import Compliance, Permit
from alerting.exposure import ExposureWindow
from alerting.pack import Level, Pack, Priority, Rule, RuleKind, Severity, When

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_STATE_VERSION: Final = 3
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
_STUCK_BUCKETS: Final = 10  # a stuck window is judged in tenths
_MAX_PLANT_CHANGES: Final = 1000  # furnace state changes remembered per furnace
_TWA_S: Final = 28_800.0  # NAB: 8-hour time-weighted average [S: Permenaker 5/2018]
_STEL_S: Final = 900.0  # PSD: 15-minute short-term average [S: Permenaker 5/2018]
#: An exposure average is judged once this share of its window is covered by readings [A].
_MIN_COVERAGE: Final = 0.5
_TWA_EVERY: Final = 6  # buckets between judgements of an 8-hour average


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
    #: Structured facts for the journal entry's detail (an advisory's explanation).
    detail: dict[str, Any] | None = None

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
            # Raised at the level; held until it falls past level - deadband (and at least
            # while it is at the level, so a zero deadband cannot flap at the level itself).
            ok = m >= lim or (self.active > i and m > lim - self.db)
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
        "act_t",
        "base",
        "base_t",
        "buckets",
        "clr_t",
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
        self.buckets: deque[tuple[int, float, float]] = deque()  # stuck: (bucket, min, max)
        self.act_t = -1  # event time of the last activation from normal
        self.clr_t = -1  # event time of the last clear

    def active_at(self, t: int) -> bool:
        """Was the condition active at event time t (as far as its last change tells)?"""
        a, c = self.act_t, self.clr_t
        return 0 <= a <= t and (c < a or c > t)


class _Subject:
    """A sensor or derived signal: its last reading, health timers and rule instances."""

    __slots__ = (
        "anomaly",
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
        "stale_lv",
        "stale_min",
        "stuck",
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
        self.anomaly: list[_Inst] = []
        #: Stale rules: (rule id, [(severity, silence limit us)] shortest first).
        self.stale: list[tuple[str, list[tuple[Severity, int]]]] = []
        self.stale_lv: dict[str, int] = {}  # levels of each stale rule now active
        self.stale_min = 0  # shortest silence limit of its stale rules, us
        self.hist_t: IntArray = np.empty(0, dtype=np.int64)  # rate windows look back here
        self.hist_v: FloatArray = np.empty(0, dtype=np.float64)


@dataclass(slots=True)
class _Plant:
    """A furnace's state, and its changes in event time (for looking up the state at t)."""

    energised: bool = False
    hot: bool = False
    #: (time, energised, hot) at each change, oldest first; bounded.
    changes: list[tuple[int, bool, bool]] = field(default_factory=list)

    def at(self, t: int) -> tuple[bool, bool]:
        """(energised, hot) at event time t, as far as the readings so far tell."""
        i = bisect.bisect_right(self.changes, (t, True, True)) - 1
        if i < 0:
            return (self.changes[0][1], self.changes[0][2]) if self.changes else (False, False)
        return self.changes[i][1], self.changes[i][2]


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
        self._tc_last: dict[tuple[str, str], dict[int, float]] = {}
        self._gw_wm: dict[tuple[str, str], int] = {}  # latest event time per gateway
        self._pairs: dict[int, tuple[int, int, dict[int, float], dict[int, float]]] = {}
        #: Per (site, gateway): time of the last status applied, and per gateway rule the
        #: offline state: None online, else (offline since, raised).
        self._gw_status_t: dict[tuple[str, str], int] = {}
        self._gw_off: dict[tuple[str, str, str], tuple[int, bool]] = {}
        self._gw_rules = [r for r in pack.rules if r.kind is RuleKind.GATEWAY]
        self._max_window_us: dict[int, int] = {}
        self.skipped = 0  # readings at or before their sensor's last evaluated one
        #: The anomaly detector (one state for all subjects with an anomaly rule), and the
        #: good readings evaluated but not yet scored by it (see `advise`).
        self._detector = AnomalyDetector()
        self._pending: list[tuple[_Subject, IntArray, FloatArray]] = []
        self.detector_note = ""  # why a saved detector state was not restored
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
                limits = sorted(
                    (int(max(lv.level, lv.periods * info.period_s) * _US), lv.severity)
                    for lv in rule.levels
                )
                subj.stale.append((rule.id, [(sev, lim) for lim, sev in limits]))
                subj.stale_min = min(lim for _r, lv in subj.stale for _s, lim in lv)
                continue
            if rule.kind is RuleKind.GATEWAY:
                continue
            if rule.kind is RuleKind.ANOMALY:
                subj.anomaly.append(_Inst(rule, 1.0, ()))
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
                    # A permit withdrawn or closed: an active interlock alert must be able to
                    # clear, so the instance is judged (as "no permit") on its next reading.

    # -- evaluation -----------------------------------------------------------------------

    def process(
        self,
        keys: Sequence[int] | IntArray,
        ts_us: Sequence[int] | IntArray,
        values: Sequence[float] | FloatArray,
        qualities: Sequence[int] | IntArray,
        *,
        statuses: Iterable[tuple[str, str, bool, int]] = (),
        advise: bool = True,
    ) -> list[ConditionEvent]:
        """Evaluate a batch of committed readings (any order); return the condition events
        in event-time order. `statuses` are gateway (site, gateway, online, ts_us).

        `advise` False: the safety rules only; the readings wait for `advise()`, which runs
        the anomaly rules (the worker commits safety transitions before advisories)."""
        out: list[ConditionEvent] = []
        for site, gw, online, t in statuses:
            self._gateway_status(site, gw, online, t, out)
        k = np.asarray(keys, dtype=np.int64)
        if k.size:
            t_arr = np.asarray(ts_us, dtype=np.int64)
            v_arr = np.asarray(values, dtype=np.float64)
            q_arr = np.asarray(qualities, dtype=np.int64)
            order = np.lexsort((t_arr, k))  # stable: the first of equal (key, ts) stays first
            k, t_arr, v_arr, q_arr = k[order], t_arr[order], v_arr[order], q_arr[order]
            if k.size > 1:
                # The same (sensor, time) twice in a batch: the first is what the database
                # kept (ON CONFLICT DO NOTHING); the rest are skipped like a redelivery.
                dup = (k[1:] == k[:-1]) & (t_arr[1:] == t_arr[:-1])
                if dup.any():
                    keep = np.concatenate(([True], ~dup))
                    self.skipped += int(dup.sum())
                    k, t_arr, v_arr, q_arr = k[keep], t_arr[keep], v_arr[keep], q_arr[keep]
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
            changes = self._update_plant(chunks)
            chunks.extend(self._derive(chunks))
            batch_bad = bool((q_arr == _BAD).any())
            for subj, tt, vv, qq in chunks:
                self._subject_chunk(subj, tt, vv, qq, out, batch_bad)
                gw_key = (subj.site, subj.gateway)
                if int(tt[-1]) > self._gw_wm.get(gw_key, -1):
                    self._gw_wm[gw_key] = int(tt[-1])
            self._apply_plant_changes(changes, out)
            self._check_stale(out)
        self._check_gateways(out)
        if advise:
            out.extend(self.advise())
        out.sort(key=lambda e: (e.at_us, e.site, e.rule_id, e.subject, _KIND_ORDER[e.kind]))
        return out

    def adopt_detector(self, other: Engine) -> None:
        """Take over another engine's anomaly detector (what it learnt per sensor does not
        depend on the rules), dropping readings this engine queued for its own."""
        self._detector = other._detector
        self._pending = []

    @property
    def pending_readings(self) -> int:
        """Readings evaluated by the safety rules and not yet scored by `advise`."""
        return sum(tt.size for _, tt, _ in self._pending)

    def advise(self) -> list[ConditionEvent]:
        """Score the readings evaluated since the last call with the anomaly detector and
        return the anomaly rules' events (advisories), in event-time order.

        Vectorised across every subject of the batch. Only good readings are scored; safety
        rules never wait for this, and nothing here changes their state."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        sizes = np.array([tt.size for _, tt, _ in pending], dtype=np.int64)
        keys = np.repeat(np.array([subj.key for subj, _, _ in pending], dtype=np.int64), sizes)
        ts = np.concatenate([tt for _, tt, _ in pending])
        vals = np.concatenate([vv for _, _, vv in pending])
        ex = self._detector.score_explained(keys, ts, vals)
        scores = np.nan_to_num(ex.scores)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        tops = np.maximum.reduceat(scores, starts).tolist()
        out: list[ConditionEvent] = []
        for (subj, tt, _vv), at, top in zip(pending, starts.tolist(), tops, strict=True):
            for inst in subj.anomaly:
                lv = inst.levels
                if lv.quiet(top):  # the common case: nothing near a level, nothing active
                    continue
                rule = self._by_rule[inst.rule_id]
                sc = scores[at : at + tt.size].tolist()
                for i, (t, m) in enumerate(zip(tt.tolist(), sc, strict=True)):
                    changed = lv.step(t, m)
                    if changed is not None:
                        self._emit_anomaly(subj, inst, rule, changed, t, ex, at + i, out)
        out.sort(key=lambda e: (e.at_us, e.site, e.rule_id, e.subject, _KIND_ORDER[e.kind]))
        return out

    def _emit_anomaly(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        level: int,
        t: int,
        ex: Explained,
        i: int,
        out: list[ConditionEvent],
    ) -> None:
        score = float(np.nan_to_num(ex.scores[i]))
        if level == 0:
            self._clear(subj, inst, rule, t, score, "readings as usual again", out)
            return
        sev, lvl, limit = self._raised(inst, rule, level, t)
        why = f"anomaly score {score:.2f} above {limit:g}"
        detail: dict[str, Any] | None = None
        e = ex.at(i)
        if e is not None:
            since = e.since_us
            why = e.describe(subj.id) + f", unusual since {_iso(since)}"
            detail = {
                "explanation": {
                    "signal": subj.id,
                    "value": _finite(e.value),
                    "expected": _finite(e.expected),
                    "usual_low": _finite(e.low),
                    "usual_high": _finite(e.high),
                    "spreads_off": _finite(e.spreads),
                    "score": _finite(e.score),
                    "found_by": e.table,
                    "since": _iso(since),
                }
            }
        # Advisory: the level's own priority (validated as advisory), never escalated.
        out.append(
            ConditionEvent(
                t, subj.site, subj.asset, rule.id, subj.id, rule.title, EventKind.ACTIVATE,
                severity=sev, priority=lvl.priority if lvl else Priority.ADVISORY,
                latch=lvl.latch if lvl else False, value=score, limit=limit, reason=why,
                detail=detail,
            )
        )  # fmt: skip

    def _gateway_status(
        self, site: str, gw: str, online: bool, t: int, out: list[ConditionEvent]
    ) -> None:
        # Statuses are applied in event-time order per gateway: an older one (a redelivered
        # "offline" from before the gateway came back) changes nothing.
        if t <= self._gw_status_t.get((site, gw), -1):
            self.skipped += 1
            return
        self._gw_status_t[(site, gw)] = t
        for rule in self._gw_rules:
            key = (site, gw, rule.id)
            state = self._gw_off.get(key)
            if online:
                if state is not None:
                    # Offline for longer than the on-delay, in event time: it is raised even
                    # when both statuses come in one batch (the result must not depend on
                    # batching), then cleared.
                    self._raise_gateway(site, gw, rule, t, out)
                    state = self._gw_off.pop(key)
                    if state[1]:
                        out.append(
                            ConditionEvent(
                                t, site, gw, rule.id, gw, rule.title, EventKind.CLEAR,
                                reason="gateway reported online",
                            )
                        )  # fmt: skip
            elif state is None:
                self._gw_off[key] = (t, False)
                self._raise_gateway(site, gw, rule, t, out)

    def _raise_gateway(
        self, site: str, gw: str, rule: Rule, now: int, out: list[ConditionEvent]
    ) -> None:
        """Raise an offline gateway once its on-delay has passed by event time `now`."""
        key = (site, gw, rule.id)
        since, raised = self._gw_off[key]
        lv = rule.levels[-1]
        due = since + int(lv.on_delay_s * _US)
        if raised or now < due:
            return
        self._gw_off[key] = (since, True)
        why = f"gateway reported offline at {since} us; silent for {lv.on_delay_s:g} s"
        out.append(self._activate(site, gw, rule, gw, due, lv.severity, 1.0, 0.0, why))

    def _check_gateways(self, out: list[ConditionEvent]) -> None:
        """Pending offline gateways whose on-delay the site's other gateways' clocks passed."""
        for (site, gw, rule_id), (_since, raised) in list(self._gw_off.items()):
            if raised:
                continue
            now = max((t for (s, g), t in self._gw_wm.items() if s == site and g != gw), default=-1)
            self._raise_gateway(site, gw, self._by_rule[rule_id], now, out)

    def _update_plant(
        self, chunks: list[tuple[_Subject, IntArray, FloatArray, IntArray]]
    ) -> list[tuple[int, str, str]]:
        """Follow each furnace's state through the batch's power and thermocouple readings,
        in time order, recording the time of every change (before the batch's rules run, so
        they can look the state up at each reading's time). Returns the changes."""
        pm = self.pack.plant
        rows: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
        for subj, tt, vv, qq in chunks:
            if not subj.furnace or (subj.kind != pm.power_kind and subj.kind not in pm.hot_kinds):
                continue
            good = qq != _BAD
            is_power = -1 if subj.kind == pm.power_kind else subj.key
            rows.setdefault((subj.site, subj.furnace), []).extend(
                zip(tt[good].tolist(), [is_power] * int(good.sum()), vv[good].tolist(), strict=True)
            )
        changes: list[tuple[int, str, str]] = []
        for (site, furnace), items in rows.items():
            ps = self._plant.setdefault((site, furnace), _Plant())
            tcs = self._tc_last.setdefault((site, furnace), {})
            items.sort()
            for t, who, v in items:
                if who == -1:
                    ps.energised = v > pm.energised_above_mw
                else:
                    tcs[who] = v
                hot = ps.energised or (bool(tcs) and max(tcs.values()) > pm.hot_above_c)
                ps.hot = hot
                last = ps.changes[-1] if ps.changes else None
                if last is None or (last[1], last[2]) != (ps.energised, ps.hot):
                    ps.changes.append((t, ps.energised, ps.hot))
                    if len(ps.changes) > _MAX_PLANT_CHANGES:
                        del ps.changes[0]
                    if last is not None:
                        changes.append((t, site, furnace))
        return sorted(changes)

    def _apply_plant_changes(
        self, changes: list[tuple[int, str, str]], out: list[ConditionEvent]
    ) -> None:
        """After the batch's rules ran: at each change of furnace state, record suppression
        for the instances active at that time whose rule no longer applies, or its end."""
        for t, site, furnace in changes:
            for subj in self._subjects.values():
                if subj.site != site or (subj.furnace and subj.furnace != furnace):
                    continue
                for inst in subj.process:
                    rule = self._by_rule[inst.rule_id]
                    if rule.when is not When.ALWAYS:
                        self._gate(subj, inst, rule, t, out)

    def _plant_ok(self, subj: _Subject, when: When, t: int) -> bool:
        """Does a rule with this `when` apply to the subject at event time t?"""
        if when is When.ALWAYS:
            return True
        if subj.furnace:
            states = [self._plant.get((subj.site, subj.furnace), _Plant()).at(t)]
        else:  # a site-level asset (a cooling header, the oxygen line): any furnace counts
            states = [p.at(t) for (s, _f), p in self._plant.items() if s == subj.site]
            states = states or [(False, False)]
        match when:
            case When.ENERGISED:
                return any(e for e, _h in states)
            case When.HOT:
                return any(h for _e, h in states)
            case When.OFF:
                return not any(e for e, _h in states)
        return True

    def _gate(
        self, subj: _Subject, inst: _Inst, rule: Rule, t: int, out: list[ConditionEvent]
    ) -> None:
        """Record suppression by plant state for an active instance (or lift it)."""
        ok = self._plant_ok(subj, rule.when, t)
        why = f"plant state: rule applies while furnace is {rule.when.value}"
        if not ok and "plant" not in inst.suppressed and inst.active_at(t):
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
        if cause not in inst.suppressed:
            return
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
            subj = self._subjects[key]
            if ca is not None and cb is not None and not pend_a and not pend_b:
                # The common case: both halves of each scan in this batch; pair vectorised.
                ga, gb = ca[2] != _BAD, cb[2] != _BAD
                ta, va, tb, vb = ca[0][ga], ca[1][ga], cb[0][gb], cb[1][gb]
                both, ia, ib = np.intersect1d(ta, tb, assume_unique=True, return_indices=True)
                if ia.size < ta.size:
                    rest = np.setdiff1d(np.arange(ta.size), ia)
                    pend_a.update(zip(ta[rest].tolist(), va[rest].tolist(), strict=True))
                if ib.size < tb.size:
                    rest = np.setdiff1d(np.arange(tb.size), ib)
                    pend_b.update(zip(tb[rest].tolist(), vb[rest].tolist(), strict=True))
                fresh = both > subj.last_t
                common_t, a, b = both[fresh], va[ia][fresh], vb[ib][fresh]
            else:
                for c, pend in ((ca, pend_a), (cb, pend_b)):
                    if c is not None:
                        good = c[2] != _BAD
                        pend.update(zip(c[0][good].tolist(), c[1][good].tolist(), strict=True))
                common = [t for t in sorted(pend_a.keys() & pend_b.keys()) if t > subj.last_t]
                common_t = np.array(common, dtype=np.int64)
                a = np.array([pend_a.pop(t) for t in common], dtype=np.float64)
                b = np.array([pend_b.pop(t) for t in common], dtype=np.float64)
            if common_t.size:
                if subj.kind == "panel_dt":
                    v = b - a
                else:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        v = np.where(a > 0, (a - b) / a * 100.0, 0.0)
                derived.append((subj, common_t, v, np.zeros(common_t.size, dtype=np.int64)))
            if pend_a or pend_b:
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
        batch_bad: bool = True,
    ) -> None:
        if subj.stale:
            self._gaps(subj, tt, out)
        # `batch_bad` False: the whole batch has no bad reading (the common case), so no
        # per-sensor check is needed.
        bad = qq == _BAD if batch_bad else None
        any_bad = bad is not None and bool(bad.any())
        for inst in subj.quality:
            lv = inst.levels
            if not any_bad and lv.quiet(0.0):
                continue
            rule = self._by_rule[inst.rule_id]
            flags = bad.tolist() if bad is not None else [False] * tt.size
            for t, b, v in zip(tt.tolist(), flags, vv.tolist(), strict=True):
                changed = lv.step(t, 1.0 if b else 0.0)
                if changed is not None:
                    self._quality_change(subj, inst, rule, changed, t, v, out)
        # A bad reading counts as a reading (the sensor is not silent) but is never judged:
        # process and stuck rules see the good readings only. While the quality alert is
        # active the process alerts are suppressed (recorded), never cleared by bad data.
        subj.last_t = max(subj.last_t, int(tt[-1]))
        if any_bad and bad is not None:
            good = ~bad
            tt, vv = tt[good], vv[good]
        if not tt.size:
            return
        for inst in subj.stuck:
            self._stuck(subj, inst, tt, vv, out)
        if subj.process:
            self._process(subj, tt, vv, out)
        if subj.anomaly:
            self._pending.append((subj, tt, vv))
        subj.last_v = float(vv[-1])

    def _gaps(self, subj: _Subject, tt: IntArray, out: list[ConditionEvent]) -> None:
        """Silences before and within this chunk: each raises its stale levels at
        last reading + limit and clears at the reading that ends it."""
        first = subj.last_t < 0
        active = any(subj.stale_lv.values())
        if not active:  # the common case, cheaply: no silence longer than the shortest limit
            if tt.size == 1:
                if first or int(tt[0]) - subj.last_t <= subj.stale_min:
                    return
            elif (first or int(tt[0]) - subj.last_t <= subj.stale_min) and int(
                np.diff(tt).max()
            ) <= subj.stale_min:
                return
        prev = tt[:-1] if first else np.concatenate(([subj.last_t], tt[:-1]))
        nxt = tt[1:] if first else tt
        if not prev.size:
            return
        gaps = nxt - prev
        if not active and int(gaps.max()) <= subj.stale_min:
            return
        for i in np.flatnonzero(gaps > subj.stale_min).tolist():
            for rule_id, levels in subj.stale:
                rule = self._by_rule[rule_id]
                for n, (sev, limit) in enumerate(levels, start=1):
                    if gaps[i] > limit and subj.stale_lv.get(rule_id, 0) < n:
                        self._stale_raise(subj, rule, n, sev, int(prev[i]) + limit, limit, out)
                if subj.stale_lv.get(rule_id, 0):
                    self._stale_clear(subj, rule, int(nxt[i]), out)
        for rule_id, _levels in subj.stale:
            if subj.stale_lv.get(rule_id, 0):
                self._stale_clear(subj, self._by_rule[rule_id], int(tt[0]), out)

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
        self, subj: _Subject, inst: _Inst, tt: IntArray, vv: FloatArray, out: list[ConditionEvent]
    ) -> None:
        """Spread (max - min) over the last window, judged each time a tenth of the window
        (a bucket) completes; a full window of buckets is needed."""
        rule = self._by_rule[inst.rule_id]
        bucket_us = max(int(rule.window_s * _US) // _STUCK_BUCKETS, 1)
        bids = tt // bucket_us
        buckets = inst.buckets
        b0 = int(bids[0])
        if b0 == int(bids[-1]) and buckets and buckets[-1][0] == b0:
            _, plo, phi = buckets[-1]  # the common case: still inside the current bucket
            if vv.size == 1:
                x = float(vv[0])
                if not plo <= x <= phi:
                    buckets[-1] = (b0, min(plo, x), max(phi, x))
            else:
                buckets[-1] = (b0, min(plo, float(vv.min())), max(phi, float(vv.max())))
            return
        cuts = np.flatnonzero(np.diff(bids)) + 1
        starts = np.concatenate(([0], cuts))
        los = np.minimum.reduceat(vv, starts).tolist()
        his = np.maximum.reduceat(vv, starts).tolist()
        for bid, lo, hi in zip(bids[starts].tolist(), los, his, strict=True):
            if buckets and buckets[-1][0] == bid:
                _, plo, phi = buckets[-1]
                buckets[-1] = (bid, min(lo, plo), max(hi, phi))
                continue
            # A new bucket starts: the ones before it are complete; judge the window.
            n = _STUCK_BUCKETS
            if len(buckets) >= n and buckets[-1][0] - buckets[-n][0] == n - 1:
                spread = max(x[2] for x in buckets) - min(x[1] for x in buckets)
                t_eval = (buckets[-1][0] + 1) * bucket_us
                if self._gate_ok(subj, inst, rule, t_eval):
                    changed = inst.levels.step(t_eval, -spread)
                    if changed is not None:
                        self._emit_level(subj, inst, rule, changed, t_eval, spread, out)
            buckets.append((bid, lo, hi))
            while len(buckets) > n:
                buckets.popleft()

    def _gate_ok(self, subj: _Subject, inst: _Inst, rule: Rule, t: int) -> bool:
        """Permit condition at t for rules that require one (True for the others)."""
        if not rule.requires_permit:
            return True
        return any(p.open_at(t) for p in inst.permits)

    def _permit_mask(self, inst: _Inst, rule: Rule, tt: IntArray) -> npt.NDArray[np.bool_] | None:
        """Per reading: is a permit open (None when the rule needs no permit)."""
        if not rule.requires_permit:
            return None
        mask = np.zeros(tt.shape, dtype=bool)
        for p in inst.permits:
            m = tt >= p.opened_us
            if p.closed_us is not None:
                m &= tt < p.closed_us
            mask |= m
        return mask

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
        mask = self._permit_mask(inst, rule, tt)
        if mask is not None:
            m = np.where(mask, m, -math.inf)
        lv = inst.levels
        if not m.size:
            return
        m_max = float(m[0]) if m.size == 1 else float(np.fmax.reduce(m))  # fmax skips NaN
        if lv.quiet(-math.inf if math.isnan(m_max) else m_max):
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
            # Against the reading a window ago; until there is a window of history, against
            # the oldest one, still divided by the whole window: a rate is never overstated
            # for lack of history, and a real jump shows at once.
            idx = np.maximum(np.searchsorted(all_t, tt - w, side="right") - 1, 0)
            span_s = np.maximum(tt - all_t[idx], w) / _US
            m = np.where(all_t[idx] < tt, (vv - all_v[idx]) / span_s * rule.per_s, math.nan)
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
        mask = self._permit_mask(inst, rule, tt)
        allowed = mask.tolist() if mask is not None else [True] * tt.size
        base, base_t, first_t = inst.base, inst.base_t, inst.first_t
        # The smoothing weight of each reading, elementwise (the same whatever the batching):
        # a = 1 - exp(-dt / tau), dt from the reading before.
        prev_t = np.concatenate(([base_t if first_t >= 0 else int(tt[0])], tt[:-1]))
        weights = (1.0 - np.exp(-(tt - prev_t) / tau_us)).tolist()
        lowest = min(lv.limits)
        sign = 1 if rule.measure == "rise" else -1 if rule.measure == "fall" else 0
        for t, v, a, ok in zip(tt.tolist(), vv.tolist(), weights, allowed, strict=True):
            if first_t < 0:
                first_t, base, base_t = t, v, t
                continue
            d = v - base
            m = d * sign if sign else abs(d)
            quiet = not lv.active and lv.since[0] < 0 and lv.since[1] < 0
            if t - first_t >= warm_us and not (quiet and m < lowest):
                changed = lv.step(t, m if ok else -math.inf)
                if changed is not None:
                    self._emit_level(subj, inst, rule, changed, t, v, out, limit_base=base)
                quiet = not lv.active and lv.since[0] < 0 and lv.since[1] < 0
            # The baseline does not learn a fault: frozen while the condition holds.
            if quiet:
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
        window_s = _TWA_S if rule.measure == "twa_8h" else _STEL_S
        bucket_us = int(win.bucket_s * _US)
        bids = tt // bucket_us
        cuts = np.flatnonzero(np.diff(bids)) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = [*cuts.tolist(), int(bids.size)]
        for a, b in zip(starts, ends, strict=True):
            bid = int(bids[a])
            # Judged when a bucket completes: the 15-min average every bucket (10 s), the
            # 8-hour one every sixth (a minute; it cannot move much in between).
            every = _TWA_EVERY if rule.measure == "twa_8h" else 1
            if inst.exp_bucket >= 0 and bid // every > inst.exp_bucket // every:
                # The previous bucket is complete: judge the window as of its last reading,
                # once at least half of the window is covered (a few seconds at 30 ppm are
                # not an 8-hour average). With less, the state holds: a gap never clears.
                t_eval = inst.exp_last
                if win.coverage(window_s) >= _MIN_COVERAGE:
                    mean = win.mean(window_s)
                    m = mean if self._gate_ok(subj, inst, rule, t_eval) else -math.inf
                    changed = inst.levels.step(t_eval, m)
                    if changed is not None:
                        self._emit_level(subj, inst, rule, changed, t_eval, mean, out)
            win.add(tt[a:b], vv[a:b])
            inst.exp_bucket = bid
            inst.exp_last = int(tt[b - 1])

    def _check_stale(self, out: list[ConditionEvent]) -> None:
        """Sensors silent for longer than a stale limit by their own gateway's clock."""
        for subj in self._subjects.values():
            if not subj.stale or subj.last_t < 0 or subj.key < 0:
                continue
            wm = self._gw_wm.get((subj.site, subj.gateway), -1)
            if wm - subj.last_t <= subj.stale_min:
                continue
            for rule_id, levels in subj.stale:
                for n, (sev, limit) in enumerate(levels, start=1):
                    if wm - subj.last_t > limit and subj.stale_lv.get(rule_id, 0) < n:
                        rule = self._by_rule[rule_id]
                        self._stale_raise(subj, rule, n, sev, subj.last_t + limit, limit, out)

    def _stale_raise(
        self,
        subj: _Subject,
        rule: Rule,
        n: int,
        sev: Severity,
        t: int,
        limit: int,
        out: list[ConditionEvent],
    ) -> None:
        subj.stale_lv[rule.id] = n
        why = f"no reading from {subj.id} for {limit / _US:g} s"
        out.append(self._activate(subj.site, subj.asset, rule, subj.id, t, sev, 0.0, 0.0, why))

    def _stale_clear(self, subj: _Subject, rule: Rule, t: int, out: list[ConditionEvent]) -> None:
        subj.stale_lv[rule.id] = 0
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
            self._clear(subj, inst, rule, t, value, "returned to normal", out)
            return
        sev, _lvl, limit = self._raised(inst, rule, level, t)
        if limit_base is not None:
            limit = limit_base + (-limit if rule.measure == "fall" else limit)
        why = _describe(rule, sev, value, limit)
        if rule.when is not When.ALWAYS and not self._plant_ok(subj, rule.when, t):
            self._suppress(
                subj, inst, rule, "plant",
                f"plant state: rule applies while furnace is {rule.when.value}", t, out,
            )  # fmt: skip
        out.append(self._activate(subj.site, subj.asset, rule, subj.id, t, sev, value, limit, why))

    def _clear(
        self,
        subj: _Subject,
        inst: _Inst,
        rule: Rule,
        t: int,
        value: float,
        why: str,
        out: list[ConditionEvent],
    ) -> None:
        """A level instance's condition ended at t."""
        inst.clr_t = t
        out.append(
            ConditionEvent(
                t, subj.site, subj.asset, rule.id, subj.id, rule.title, EventKind.CLEAR,
                value=value, reason=why,
            )
        )  # fmt: skip

    @staticmethod
    def _raised(
        inst: _Inst, rule: Rule, level: int, t: int
    ) -> tuple[Severity, Level | None, float]:
        """A level instance became active (or changed level) at t: its severity, level and
        limit; the activation time is kept for `active_at`."""
        if not inst.active_at(t):
            inst.act_t = t
        sev = Severity.WARNING if level == 1 else Severity.CRITICAL
        lvl = rule.level(sev)
        return sev, lvl, lvl.level if lvl else math.nan

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

    def conditions(self) -> dict[tuple[str, str, str], tuple[str, str, Severity, float]]:
        """Every condition active now: (site, rule id, subject) -> (asset, title, severity,
        value). What a new pack's engine, rebuilt from history, says is true at this point."""
        out: dict[tuple[str, str, str], tuple[str, str, Severity, float]] = {}
        sev = (Severity.WARNING, Severity.CRITICAL)
        for subj in self._subjects.values():
            for inst in (*subj.process, *subj.stuck, *subj.quality, *subj.anomaly):
                if inst.levels.active:
                    rule = self._by_rule[inst.rule_id]
                    out[(subj.site, rule.id, subj.id)] = (
                        subj.asset, rule.title, sev[inst.levels.active - 1], subj.last_v
                    )  # fmt: skip
            for rule_id, levels in subj.stale:
                n = subj.stale_lv.get(rule_id, 0)
                if n:
                    rule = self._by_rule[rule_id]
                    out[(subj.site, rule_id, subj.id)] = (
                        subj.asset,
                        rule.title,
                        levels[n - 1][0],
                        0.0,
                    )
        for (site, gw, rule_id), (_since, raised) in self._gw_off.items():
            if raised:
                rule = self._by_rule[rule_id]
                out[(site, rule_id, gw)] = (gw, rule.title, rule.levels[-1].severity, 1.0)
        return out

    def latest_us(self) -> int:
        """The latest event time the engine has seen (-1 before any reading)."""
        return max(self._gw_wm.values(), default=-1)

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
            "gw_wm": self._gw_wm,
            "pairs": self._pairs,
            "gw_status_t": self._gw_status_t,
            "gw_off": self._gw_off,
            "detector": self._detector.dump(),
            "pending": [(subj.key, tt, vv) for subj, tt, vv in self._pending],
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
        # The detector first: if its state is unusable (other parameters), only the detector
        # starts afresh (noted for the caller to log); the rules' state resumes as saved.
        self.detector_note = ""
        try:
            self._detector.load(state["detector"])
            pending = state["pending"]
        except (AnomalyError, KeyError) as exc:
            self._detector = AnomalyDetector()
            self.detector_note = f"anomaly detector state not restored, learning afresh: {exc}"
            pending = []
        subjects: dict[int, _Subject] = state["subjects"]
        for key, subj in subjects.items():
            if key in self._subjects:
                self._subjects[key] = subj
        self._plant = state["plant"]
        self._tc_last = state["tc_last"]
        self._gw_wm = state["gw_wm"]
        self._pairs = state["pairs"]
        self._gw_status_t = state["gw_status_t"]
        self._gw_off = state["gw_off"]
        self._pending = [
            (self._subjects[k], tt, vv) for k, tt, vv in pending if k in self._subjects
        ]
        self.set_compliance(self.compliance)


_KIND_ORDER: Final = {
    EventKind.SUPPRESS: 0,
    EventKind.ACTIVATE: 1,
    EventKind.CLEAR: 2,
    EventKind.UNSUPPRESS: 3,
}


def _iso(t_us: int) -> str:
    """An event time as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(t_us / _US, UTC).isoformat(timespec="seconds")


def _finite(x: float) -> float | None:
    """A number for the journal's JSON detail, to 4 significant digits; None when not
    finite or beyond 1e15 (jsonb keeps numbers as decimals: larger ones would not read back
    as the float that was hashed)."""
    return float(f"{x:.4g}") if math.isfinite(x) and abs(x) < 1e15 else None


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
