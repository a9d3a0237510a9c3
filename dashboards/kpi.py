"""Alarm-management KPIs (ISA-18.2 / EEMUA 191, DOMAIN.md §4) and the periodic compliance
summary an inspector (wasdal) reads, both computed from the alert journal.

Owns the definitions below and the queries that read what they need. Reads only: it never
writes, and never changes the caller's connection (its search_path must already name the
service's schema). Results are plain JSON values: ints, floats, ISO-8601 UTC strings, None
where there is nothing to measure (a median of no acknowledgements is None, never NaN).

Definitions (every threshold carries its source: [S: ...] published, [A] an assumption):

- **Alarm**: an annunciation. A journal entry by the engine whose `to_state` is `unack` and
  whose `from_state` is neither `unack` nor `ack`: a new activation, a re-activation after a
  clear, or an active condition shown again when suppression by design or a shelf ends. A
  level change while active (warning -> critical) is not a new alarm, nor is a re-activation
  a latch keeps acknowledged. Entries of `advisory` priority (anomaly advisories) are not
  alarms; they are counted apart. An operator's own unshelve or return to service that shows
  an active alarm again is not counted: the operator caused it and is looking at it [A].
- **Condition interval**: from an engine `activate` of an alert whose condition was not
  active to its next `clear` (or the end of the period): what stale alarms and exceedance
  durations are measured on.
- **Acknowledgement**: the first `acknowledge` or `reset` (a reset acknowledges a latched
  alarm, `alerting.lifecycle.Reset`) of that alert after the alarm and before its next alarm,
  taken before the end of the period: the report says what the journal held at `end`.

The core (everything without `conn`) is pure numpy over arrays of event times in integer
microseconds; the two coroutines at the bottom are the only I/O.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, LiteralString

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.rows import dict_row

from alerting.pack import Pack, PackError, Rule, RuleKind, Severity, parse_pack

_US: Final = 1_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# --- thresholds ---------------------------------------------------------------------------------

#: Alarm rate per operator position, mean per hour: about 6 acceptable, 12 the most manageable
#: [S: DOMAIN.md §4, ISA-18.2 / EEMUA 191 via secondary sources].
RATE_ACCEPTABLE_PER_H: Final = 6.0
RATE_MANAGEABLE_PER_H: Final = 12.0
#: ... which is 1 alarm per 10 minutes [S: DOMAIN.md §4].
RATE_TARGET_PER_10MIN: Final = 1.0
#: Fixed windows of the per-10-minute rate, aligned to the Unix epoch [A: alignment].
RATE_WINDOW_S: Final = 600
#: A flood starts above 10 alarms in the trailing 10 minutes and ends below 5
#: [S: DOMAIN.md §4]; time in flood should be under 1 % [S: DOMAIN.md §4].
FLOOD_WINDOW_S: Final = 600
FLOOD_START_ABOVE: Final = 10
FLOOD_END_BELOW: Final = 5
FLOOD_TARGET_PCT: Final = 1.0
#: Alarms this long before the period are read too, so a flood running at its start is seen
#: [A: a flood sustained for an hour before the period and started earlier still is missed].
FLOOD_LOOKBACK_S: Final = 3600
#: Chattering: 3 or more activations of one alarm within 60 s (a window [t, t + 60 s))
#: [S: DOMAIN.md §4 "3+ activations of one alarm in a minute"]; target none [S: DOMAIN.md §4].
CHATTER_WINDOW_S: Final = 60
CHATTER_MIN_ALARMS: Final = 3
#: Fleeting: an alarm whose condition clears less than 5 s after it is annunciated [A: the
#: secondary sources of DOMAIN.md §4 name fleeting alarms but give no duration]; target none.
FLEETING_BELOW_S: Final = 5.0
#: Stale: an alarm's condition active longer than 24 h; fewer than 5 a day [S: DOMAIN.md §4].
STALE_AFTER_S: Final = 86_400
STALE_TARGET_PER_DAY: Final = 5
#: Top-10 most frequent alarms: 1-5 % of the load [S: DOMAIN.md §4]. ISA-18.2 states it for
#: the ten together; each contributor above 5 % is flagged as well [A: reading of DOMAIN].
TOP_N: Final = 10
TOP_TARGET_PCT_MAX: Final = 5.0
#: Priority split of alarms: about 80 % low, 15 % medium, 5 % high (urgent counted with
#: high) [S: DOMAIN.md §4].
PRIORITY_TARGET_PCT: Final = {"low": 80.0, "medium": 15.0, "high": 5.0}
#: Time to acknowledge critical alerts: the default service level [A: 15 minutes, a site's
#: own procedure should set it].
ACK_SLA_S: Final = 900.0
#: A lesser alarm raised this long before the period and escalated to critical within it is
#: still found [A: one day; an alarm left standing longer is a stale alarm in its own right].
ESCALATION_LOOKBACK_S: Final = 86_400
#: Sensors received below this share of their expected readings are listed [A].
AVAILABILITY_MIN_PCT: Final = 95.0
#: Gas kinds whose limits are Permenaker No. 5/2018 chemical limits (NAB/PSD/KTD): the work-area
#: detectors (`area_*`) except oxygen and flammables, whose limits are detector practice and
#: fire risk, not exposure limits [S: DOMAIN.md §3 table; A: the exclusion].
GAS_KIND_PREFIX: Final = "area_"
NOT_EXPOSURE_LIMIT_KINDS: Final = frozenset({"area_o2", "area_lel"})

_PRIORITIES: Final = ("low", "medium", "high", "urgent")
_ACK_ACTIONS: Final = ("acknowledge", "reset")  # alerting.store.action_name of the lifecycle's


class KpiError(ValueError):
    """Raised when a report is asked for a period that is not valid (naive, empty, reversed)."""


# --- the journal as arrays ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alarms:
    """Alarms in event-time order, column by column; times in microseconds since the epoch.

    `ack_us` and `clear_us` are -1 where the alarm was not acknowledged (or its condition did
    not clear) before its next alarm and before the end of the period."""

    seq: npt.NDArray[np.int64]
    alert_id: npt.NDArray[np.int64]
    at_us: npt.NDArray[np.int64]
    ack_us: npt.NDArray[np.int64]
    clear_us: npt.NDArray[np.int64]
    asset: tuple[str, ...]
    rule_id: tuple[str, ...]
    subject: tuple[str, ...]
    priority: tuple[str, ...]
    severity: tuple[str | None, ...]

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Alarms:
        """Columns from query rows (keys as in the fields, times already in microseconds)."""

        def ints(key: str) -> npt.NDArray[np.int64]:
            return np.fromiter(
                (-1 if r[key] is None else r[key] for r in rows), dtype=np.int64, count=len(rows)
            )

        return cls(
            seq=ints("seq"),
            alert_id=ints("alert_id"),
            at_us=ints("at_us"),
            ack_us=ints("ack_us"),
            clear_us=ints("clear_us"),
            asset=tuple(r["asset"] for r in rows),
            rule_id=tuple(r["rule_id"] for r in rows),
            subject=tuple(r["subject"] for r in rows),
            priority=tuple(r["priority"] for r in rows),
            severity=tuple(r["severity"] for r in rows),
        )

    def __len__(self) -> int:
        return len(self.seq)

    def select(self, mask: npt.NDArray[np.bool_]) -> Alarms:
        """The alarms where `mask` holds, in the same order."""
        idx = np.flatnonzero(mask)
        return Alarms(
            seq=self.seq[idx],
            alert_id=self.alert_id[idx],
            at_us=self.at_us[idx],
            ack_us=self.ack_us[idx],
            clear_us=self.clear_us[idx],
            asset=tuple(self.asset[i] for i in idx),
            rule_id=tuple(self.rule_id[i] for i in idx),
            subject=tuple(self.subject[i] for i in idx),
            priority=tuple(self.priority[i] for i in idx),
            severity=tuple(self.severity[i] for i in idx),
        )

    def where_priority(self, priorities: Iterable[str]) -> npt.NDArray[np.bool_]:
        """Mask of the alarms of these priorities."""
        want = frozenset(priorities)
        return np.fromiter((p in want for p in self.priority), dtype=np.bool_, count=len(self))


# --- pure KPIs ----------------------------------------------------------------------------------


def iso(us: int) -> str:
    """Microseconds since the epoch as an ISO-8601 UTC string."""
    return (_EPOCH + timedelta(microseconds=int(us))).isoformat()


def _us(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 3) if whole > 0 else None


def rate(at_us: npt.NDArray[np.int64], start_us: int, end_us: int) -> dict[str, Any]:
    """Alarm rate over [start, end) of alarms at `at_us` (all within it): mean per hour, mean
    and max per fixed 10-min window (aligned to the epoch; windows cut by the period's edges
    count what falls inside)."""
    period_s = (end_us - start_us) / _US
    n = len(at_us)
    per_h = n / (period_s / 3600)
    width = RATE_WINDOW_S * _US
    busiest: dict[str, Any] = {"max": 0, "max_window_start": None}
    if n:
        bins = at_us // width
        first = start_us // width
        counts = np.bincount(bins - first)
        top = int(np.argmax(counts))
        busiest = {"max": int(counts[top]), "max_window_start": iso((first + top) * width)}
    if per_h <= RATE_ACCEPTABLE_PER_H:
        verdict = "acceptable"
    elif per_h <= RATE_MANAGEABLE_PER_H:
        verdict = "manageable"
    else:
        verdict = "over-demanding"
    per_10min = n / (period_s / RATE_WINDOW_S)
    return {
        "per_hour": {
            "mean": round(per_h, 3),
            "target_acceptable": RATE_ACCEPTABLE_PER_H,
            "target_max_manageable": RATE_MANAGEABLE_PER_H,
            "verdict": verdict,
        },
        "per_10min": {
            "mean": round(per_10min, 3),
            **busiest,
            "target": RATE_TARGET_PER_10MIN,
            "verdict": "acceptable" if per_10min <= RATE_TARGET_PER_10MIN else "above target",
        },
    }


def floods(at_us: npt.NDArray[np.int64], start_us: int, end_us: int) -> dict[str, Any]:
    """Floods among alarms at `at_us` (sorted; may begin before `start` for context).

    The trailing count at t is the number of alarms in (t - 10 min, t]. A flood starts at the
    first moment it exceeds 10 (the 11th alarm) and ends at the first moment after that it is
    below 5 (when enough alarms have aged out of the window). A flood's `alarms` counts those
    in its trailing window at the start and those during it, none counted twice across
    floods. Floods ending at or before `start` are left out; `time_in_flood` is clipped to the
    period; a flood still running at `end` is cut there (`ongoing_at_end`).
    """
    width = FLOOD_WINDOW_S * _US
    period_us = end_us - start_us
    out_floods: list[dict[str, Any]] = []
    in_flood_us = 0
    if len(at_us):
        # The count changes only when an alarm enters (t) or leaves (t + window) the window.
        times = np.unique(np.concatenate([at_us, at_us + width]))
        count = np.searchsorted(at_us, times, "right") - np.searchsorted(
            at_us + width, times, "right"
        )
        idx = np.arange(len(times))
        last_hi = np.maximum.accumulate(np.where(count > FLOOD_START_ABOVE, idx, -1))
        last_lo = np.maximum.accumulate(np.where(count < FLOOD_END_BELOW, idx, -1))
        flooded = last_hi > last_lo  # hysteresis: the latest crossing decides
        edges = np.diff(np.concatenate([[False], flooded, [False]]).astype(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        counted_to = np.iinfo(np.int64).min
        for s, e in zip(starts, ends, strict=True):
            t0, t1 = int(times[s]), int(times[e]) if e < len(times) else end_us
            if t1 <= start_us or t0 >= end_us:
                continue
            lo = max(t0 - width, counted_to)
            n = int(np.count_nonzero((at_us > lo) & (at_us < t1)))
            counted_to = t1 - 1
            in_flood_us += max(0, min(t1, end_us) - max(t0, start_us))
            out_floods.append(
                {
                    "start": iso(t0),
                    "end": iso(min(t1, end_us)),
                    "duration_s": round((min(t1, end_us) - t0) / _US, 3),
                    "alarms": n,
                    "peak_10min": int(count[s:e].max()),
                    "ongoing_at_end": t1 > end_us,
                }
            )
    pct = _pct(in_flood_us, period_us)
    return {
        "window_s": FLOOD_WINDOW_S,
        "start_above": FLOOD_START_ABOVE,
        "end_below": FLOOD_END_BELOW,
        "count": len(out_floods),
        "episodes": out_floods,
        "time_in_flood_s": round(in_flood_us / _US, 3),
        "time_in_flood_pct": pct,
        "target_pct": FLOOD_TARGET_PCT,
        "verdict": "ok" if (pct or 0.0) < FLOOD_TARGET_PCT else "above target",
    }


def _alert_label(a: Alarms, i: int) -> dict[str, Any]:
    return {
        "alert_id": int(a.alert_id[i]),
        "asset": a.asset[i],
        "rule_id": a.rule_id[i],
        "subject": a.subject[i],
    }


def chattering(a: Alarms) -> dict[str, Any]:
    """Alerts with 3 or more alarms within any 60 s, with their most alarms in one window."""
    order = np.lexsort((a.at_us, a.alert_id))
    ids, at = a.alert_id[order], a.at_us[order]
    width = CHATTER_WINDOW_S * _US
    found: list[dict[str, Any]] = []
    bounds = np.flatnonzero(np.diff(ids)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(ids)], strict=True):
        t = at[lo:hi]
        if len(t) < CHATTER_MIN_ALARMS:
            continue
        in_window = np.searchsorted(t, t + width, "left") - np.arange(len(t))
        most = int(in_window.max())
        if most >= CHATTER_MIN_ALARMS:
            found.append(
                {**_alert_label(a, int(order[lo])), "alarms": int(hi - lo), "max_in_window": most}
            )
    found.sort(key=lambda f: (-f["max_in_window"], -f["alarms"], f["alert_id"]))
    return {
        "window_s": CHATTER_WINDOW_S,
        "min_alarms": CHATTER_MIN_ALARMS,
        "count": len(found),
        "alerts": found,
        "target": 0,
        "verdict": "ok" if not found else "above target",
    }


def fleeting(a: Alarms) -> dict[str, Any]:
    """Alarms whose condition cleared less than 5 s [A] after they were annunciated."""
    mask = (a.clear_us >= 0) & (a.clear_us - a.at_us < FLEETING_BELOW_S * _US)
    per_alert: Counter[int] = Counter()
    first: dict[int, int] = {}
    for i in np.flatnonzero(mask):
        per_alert[int(a.alert_id[i])] += 1
        first.setdefault(int(a.alert_id[i]), int(i))
    alerts = [{**_alert_label(a, first[aid]), "fleeting": n} for aid, n in per_alert.most_common()]
    n = int(np.count_nonzero(mask))
    return {
        "below_s": FLEETING_BELOW_S,
        "assumption": "[A] fleeting = condition cleared within 5 s of the annunciation",
        "count": n,
        "alerts": alerts,
        "target": 0,
        "verdict": "ok" if n == 0 else "above target",
    }


def top_contributors(a: Alarms) -> dict[str, Any]:
    """The 10 most frequent (rule, subject) pairs with their share of the alarm load."""
    counts = Counter(zip(a.rule_id, a.subject, a.asset, strict=True))
    total = len(a)
    top = counts.most_common(TOP_N)
    listed = [
        {
            "rule_id": r,
            "subject": s,
            "asset": asset,
            "alarms": n,
            "pct": _pct(n, total),
            "above_target": (_pct(n, total) or 0.0) > TOP_TARGET_PCT_MAX,
        }
        for (r, s, asset), n in top
    ]
    share = _pct(sum(n for _, n in top), total)
    return {
        "top_n": TOP_N,
        "target_pct_max": TOP_TARGET_PCT_MAX,
        "top_share_pct": share,
        "verdict": "ok" if (share or 0.0) <= TOP_TARGET_PCT_MAX else "above target",
        "contributors": listed,
    }


def priority_split(a: Alarms) -> dict[str, Any]:
    """Alarms per priority, and the low/medium/high shares (urgent counted with high)."""
    counts = Counter(a.priority)
    by = {p: counts.get(p, 0) for p in _PRIORITIES}
    total = len(a)
    return {
        "counts": by,
        "pct": {
            "low": _pct(by["low"], total),
            "medium": _pct(by["medium"], total),
            "high": _pct(by["high"] + by["urgent"], total),
        },
        "target_pct": dict(PRIORITY_TARGET_PCT),
    }


def spread(values_s: npt.NDArray[np.float64]) -> dict[str, float | None]:
    """Median, 90th percentile (linear interpolation) and maximum, in seconds; None if empty."""
    if not len(values_s):
        return {"median_s": None, "p90_s": None, "max_s": None}
    return {
        "median_s": round(float(np.median(values_s)), 3),
        "p90_s": round(float(np.percentile(values_s, 90)), 3),
        "max_s": round(float(values_s.max()), 3),
    }


def time_to_ack(a: Alarms) -> dict[str, Any]:
    """Time from each alarm to its acknowledgement, overall and per priority."""

    def one(sel: Alarms) -> dict[str, Any]:
        acked = sel.ack_us >= 0
        delays = np.maximum(sel.ack_us[acked] - sel.at_us[acked], 0) / _US
        return {
            "alarms": len(sel),
            "acknowledged": int(np.count_nonzero(acked)),
            "unacknowledged": int(np.count_nonzero(~acked)),
            **spread(delays.astype(np.float64)),
        }

    return {
        **one(a),
        "by_priority": {p: one(a.select(a.where_priority([p]))) for p in _PRIORITIES},
    }


@dataclass(frozen=True, slots=True)
class Interval:
    """One condition interval (or critical episode) of an alert; `until_us` -1 while open."""

    alert_id: int
    asset: str
    rule_id: str
    subject: str
    since_us: int
    until_us: int


def stale(intervals: Sequence[Interval], start_us: int, end_us: int) -> dict[str, Any]:
    """Alarms whose condition stayed active longer than 24 h during the period.

    Days are consecutive 24-h spans from `start` (pass a local midnight for local days);
    each day counts the alarms that were stale at some moment of it."""
    after = STALE_AFTER_S * _US
    day = 86_400 * _US
    n_days = max(1, -(-(end_us - start_us) // day))
    per_day = np.zeros(n_days, dtype=np.int64)
    listed: list[dict[str, Any]] = []
    for iv in intervals:
        until = end_us if iv.until_us < 0 else min(iv.until_us, end_us)
        stale_from = max(iv.since_us + after, start_us)
        if stale_from >= until:
            continue
        first, last = (stale_from - start_us) // day, (until - 1 - start_us) // day
        per_day[first : last + 1] += 1
        listed.append(
            {
                "alert_id": iv.alert_id,
                "asset": iv.asset,
                "rule_id": iv.rule_id,
                "subject": iv.subject,
                "active_since": iso(iv.since_us),
                "cleared_at": None if iv.until_us < 0 or iv.until_us > end_us else iso(iv.until_us),
                "active_h": round((until - iv.since_us) / _US / 3600, 3),
            }
        )
    worst = int(per_day.max())
    return {
        "after_h": STALE_AFTER_S / 3600,
        "count": len(listed),
        "per_day": [
            {"day_start": iso(start_us + i * day), "stale": int(v)} for i, v in enumerate(per_day)
        ],
        "max_per_day": worst,
        "mean_per_day": round(float(per_day.mean()), 3),
        "target_per_day": STALE_TARGET_PER_DAY,
        "verdict": "ok" if worst < STALE_TARGET_PER_DAY else "above target",
        "alerts": listed,
    }


def exposure_class(rule: Rule) -> str | None:
    """Which Permenaker 5/2018 limit a rule's critical level stands for: "NAB" (8-h TWA),
    "PSD" (15-min STEL), "KTD" (ceiling: a high threshold on a toxic-gas detector), or None.

    [S: DOMAIN.md §3] for the meaning of each limit. Hot-work interlocks (permit rules) and
    oxygen/flammable detectors are not exposure limits [A]."""
    if rule.level(Severity.CRITICAL) is None or not rule.sensors.kinds:
        return None
    gas = all(
        k.startswith(GAS_KIND_PREFIX) and k not in NOT_EXPOSURE_LIMIT_KINDS
        for k in rule.sensors.kinds
    )
    if not gas:
        return None
    if rule.kind is RuleKind.EXPOSURE:
        return {"twa_8h": "NAB", "stel_15min": "PSD"}.get(rule.measure)
    if rule.kind is RuleKind.THRESHOLD and rule.direction == "high" and not rule.requires_permit:
        return "KTD"
    return None


def exceedances(
    episodes: Sequence[Interval], classes: Mapping[str, str], start_us: int, end_us: int
) -> dict[str, Any]:
    """Critical episodes of exposure-limit rules per asset and limit class, with their
    durations clipped to the period (an episode open at `end` counts up to `end`)."""
    by_asset: dict[str, dict[str, dict[str, float]]] = defaultdict(
        lambda: {c: {"count": 0, "duration_s": 0.0} for c in ("NAB", "PSD", "KTD")}
    )
    events: list[dict[str, Any]] = []
    for ep in episodes:
        cls = classes.get(ep.rule_id)
        if cls is None:
            continue
        until = end_us if ep.until_us < 0 else min(ep.until_us, end_us)
        dur = max(0, until - max(ep.since_us, start_us)) / _US
        slot = by_asset[ep.asset][cls]
        slot["count"] += 1
        slot["duration_s"] = round(slot["duration_s"] + dur, 3)
        events.append(
            {
                "asset": ep.asset,
                "class": cls,
                "alert_id": ep.alert_id,
                "rule_id": ep.rule_id,
                "subject": ep.subject,
                "start": iso(ep.since_us),
                "end": None if ep.until_us < 0 or ep.until_us > end_us else iso(ep.until_us),
                "duration_in_period_s": round(dur, 3),
            }
        )
    return {
        "by_asset": [
            {
                "asset": asset,
                **{
                    c: {"count": int(v["count"]), "duration_s": v["duration_s"]}
                    for c, v in slots.items()
                },
            }
            for asset, slots in sorted(by_asset.items())
        ],
        "events": events,
    }


# --- queries ------------------------------------------------------------------------------------

# Alarms from `lo` (no upper bound, so each one's next alarm is known), with the first
# acknowledgement and the first clear of the same alert after it and before its next alarm.
_ALARMS_SQL: Final = """
WITH a AS (
    SELECT seq, at, alert_id, asset, rule_id, subject, priority, severity,
           lead(seq) OVER (PARTITION BY alert_id ORDER BY seq) AS next_seq
    FROM alert_journal
    WHERE site_id = %(site)s AND actor = 'engine' AND to_state = 'unack'
      AND from_state NOT IN ('unack', 'ack') AND at >= %(lo)s
      AND (%(asset)s::text IS NULL OR asset = %(asset)s)
)
SELECT a.seq, a.alert_id, a.asset, a.rule_id, a.subject, a.priority, a.severity,
       (extract(epoch FROM a.at) * 1000000)::bigint AS at_us,
       (extract(epoch FROM ack.at) * 1000000)::bigint AS ack_us,
       (extract(epoch FROM clr.at) * 1000000)::bigint AS clear_us
FROM a
LEFT JOIN LATERAL (
    SELECT j.at FROM alert_journal j
    WHERE j.alert_id = a.alert_id AND j.seq > a.seq
      AND (a.next_seq IS NULL OR j.seq < a.next_seq)
      AND j.action = ANY(%(ack_actions)s) AND j.at < %(end)s
    ORDER BY j.seq LIMIT 1
) ack ON true
LEFT JOIN LATERAL (
    SELECT j.at FROM alert_journal j
    WHERE j.alert_id = a.alert_id AND j.seq > a.seq
      AND (a.next_seq IS NULL OR j.seq < a.next_seq)
      AND j.actor = 'engine' AND j.action = 'clear' AND j.at < %(end)s
    ORDER BY j.seq LIMIT 1
) clr ON true
WHERE a.at < %(end)s
ORDER BY a.at, a.seq
"""

# Condition intervals (activate from inactive -> next clear) that were active longer than
# `after` seconds at some moment of [start, end). The activate/clear entries of an alert,
# keeping only the first activate of a run, alternate start, clear, start, clear...
_STALE_SQL: Final = """
WITH e AS (
    SELECT alert_id, seq, at, action, asset, rule_id, subject, priority,
           lag(action) OVER (PARTITION BY alert_id ORDER BY seq) AS prev_action
    FROM alert_journal
    WHERE site_id = %(site)s AND actor = 'engine' AND action IN ('activate', 'clear')
      AND at < %(end)s AND (%(asset)s::text IS NULL OR asset = %(asset)s)
), b AS (
    SELECT *, lead(at) OVER (PARTITION BY alert_id ORDER BY seq) AS until
    FROM e WHERE action = 'clear' OR prev_action IS DISTINCT FROM 'activate'
)
SELECT alert_id, asset, rule_id, subject,
       (extract(epoch FROM at) * 1000000)::bigint AS since_us,
       (extract(epoch FROM until) * 1000000)::bigint AS until_us
FROM b
WHERE action = 'activate' AND priority <> 'advisory'
  AND at + make_interval(secs => %(after_s)s) < %(end)s
  AND (until IS NULL OR (until > at + make_interval(secs => %(after_s)s) AND until > %(start)s))
ORDER BY at, alert_id
"""

# Critical episodes of the given rules overlapping [start, end): from an activate at critical
# after anything else (none, a clear, a warning) to the next entry that is not one.
_CRITICAL_SQL: Final = """
WITH e AS (
    SELECT alert_id, seq, at, asset, rule_id, subject,
           (action = 'activate' AND severity IS NOT DISTINCT FROM 'critical') AS crit
    FROM alert_journal
    WHERE site_id = %(site)s AND actor = 'engine' AND action IN ('activate', 'clear')
      AND rule_id = ANY(%(rules)s) AND at < %(end)s
), f AS (
    SELECT *, lag(crit) OVER (PARTITION BY alert_id ORDER BY seq) AS was_crit FROM e
), b AS (
    SELECT *, lead(at) OVER (PARTITION BY alert_id ORDER BY seq) AS until
    FROM f WHERE crit <> coalesce(was_crit, false)
)
SELECT alert_id, asset, rule_id, subject,
       (extract(epoch FROM at) * 1000000)::bigint AS since_us,
       (extract(epoch FROM until) * 1000000)::bigint AS until_us
FROM b WHERE crit AND (until IS NULL OR until > %(start)s)
ORDER BY at, alert_id
"""

# Critical annunciations and their acknowledgement. A critical moment is an alarm of critical
# severity or high/urgent priority, or else the first escalation of a lesser alarm to critical
# before its next alarm (an engine `activate` at critical that leaves the alert unacknowledged:
# the same level is never journaled twice, so from `unack`/`ack` it is an escalation). Its
# acknowledgement is the first after that moment and before the alarm's next alarm.
_CRITICAL_ACK_SQL: Final = """
WITH a AS (
    SELECT seq, at, alert_id,
           priority <> 'advisory'
               AND (severity = 'critical' OR priority IN ('high', 'urgent')) AS critical,
           lead(seq) OVER (PARTITION BY alert_id ORDER BY seq) AS next_seq
    FROM alert_journal
    WHERE site_id = %(site)s AND actor = 'engine' AND to_state = 'unack'
      AND from_state NOT IN ('unack', 'ack') AND at >= %(lo)s
), c AS (
    SELECT a.alert_id, a.next_seq,
           CASE WHEN a.critical THEN a.seq ELSE esc.seq END AS crit_seq,
           CASE WHEN a.critical THEN a.at ELSE esc.at END AS crit_at
    FROM a
    LEFT JOIN LATERAL (
        SELECT j.seq, j.at FROM alert_journal j
        WHERE NOT a.critical AND j.alert_id = a.alert_id AND j.seq > a.seq
          AND (a.next_seq IS NULL OR j.seq < a.next_seq)
          AND j.actor = 'engine' AND j.action = 'activate' AND j.severity = 'critical'
          AND j.to_state = 'unack' AND j.priority <> 'advisory'
        ORDER BY j.seq LIMIT 1
    ) esc ON true
)
SELECT (extract(epoch FROM c.crit_at) * 1000000)::bigint AS at_us,
       (extract(epoch FROM ack.at) * 1000000)::bigint AS ack_us
FROM c
LEFT JOIN LATERAL (
    SELECT j.at FROM alert_journal j
    WHERE j.alert_id = c.alert_id AND j.seq > c.crit_seq
      AND (c.next_seq IS NULL OR j.seq < c.next_seq)
      AND j.action = ANY(%(ack_actions)s) AND j.at < %(end)s
    ORDER BY j.seq LIMIT 1
) ack ON true
WHERE c.crit_seq IS NOT NULL AND c.crit_at >= %(start)s AND c.crit_at < %(end)s
ORDER BY c.crit_at
"""

_PACK_SQL: Final = """
SELECT sha256, name, version, effective, body FROM rule_packs
WHERE effective <= %(end)s ORDER BY effective DESC, loaded_at DESC LIMIT 1
"""

# Expected readings: the part of the period before the sensor's retirement over its period.
_AVAILABILITY_SQL: Final = """
SELECT s.id AS sensor, s.kind, s.asset, s.period_s,
       extract(epoch FROM least(%(end)s, coalesce(s.retired_at, %(end)s)) - %(start)s)::float8
           AS span_s,
       coalesce(r.n, 0)::bigint AS received
FROM sensors s
LEFT JOIN (
    SELECT m.sensor_key, sum(m.n) AS n FROM readings_1m m
    JOIN sensors k ON k.key = m.sensor_key AND k.site_id = %(site)s
    WHERE m.bucket >= %(start)s AND m.bucket < %(end)s
    GROUP BY m.sensor_key
) r ON r.sensor_key = s.key
WHERE s.site_id = %(site)s AND (s.retired_at IS NULL OR s.retired_at > %(start)s)
ORDER BY s.asset, s.id
"""

_FINDINGS_SQL: Final = """
SELECT id, asset, agency, description, corrective_action, opened_at, due_at
FROM findings
WHERE site_id = %(site)s AND opened_at < %(end)s AND (closed_at IS NULL OR closed_at > %(end)s)
ORDER BY opened_at, id
"""


def _period(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    if start.tzinfo is None or end.tzinfo is None:
        raise KpiError("start and end need a UTC offset (timezone-aware datetimes)")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise KpiError(f"the period is empty: end {end.isoformat()} is not after {start}")
    return start, end


async def _rows(
    conn: psycopg.AsyncConnection[Any], query: LiteralString, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _alarms(
    conn: psycopg.AsyncConnection[Any], site: str, lo: datetime, end: datetime, asset: str | None
) -> Alarms:
    rows = await _rows(
        conn,
        _ALARMS_SQL,
        {"site": site, "lo": lo, "end": end, "asset": asset, "ack_actions": list(_ACK_ACTIONS)},
    )
    return Alarms.from_rows(rows)


def _intervals(rows: Iterable[Mapping[str, Any]]) -> list[Interval]:
    return [
        Interval(
            alert_id=r["alert_id"],
            asset=r["asset"],
            rule_id=r["rule_id"],
            subject=r["subject"],
            since_us=r["since_us"],
            until_us=-1 if r["until_us"] is None else r["until_us"],
        )
        for r in rows
    ]


# --- the reports --------------------------------------------------------------------------------


async def alarm_kpis(
    conn: psycopg.AsyncConnection[Any],
    site: str,
    start: datetime,
    end: datetime,
    *,
    asset: str | None = None,
) -> dict[str, Any]:
    """ISA-18.2 alarm-management KPIs of one facility (or one asset of it) over [start, end).

    One operator position per facility is assumed [A]: the rates and floods are what one
    control-room operator of the site would have faced. Keys: `site`, `asset`, `start`,
    `end`, `period_h`, `operator_positions`, `alarms` (total, advisories, per_hour,
    per_10min), `floods`, `chattering`, `fleeting`, `stale`, `top_contributors`, `priority`,
    `time_to_ack`; each KPI carries its target and a verdict where DOMAIN.md §4 gives one.
    """
    start, end = _period(start, end)
    s_us, e_us = _us(start), _us(end)
    every = await _alarms(conn, site, start - timedelta(seconds=FLOOD_LOOKBACK_S), end, asset)
    advisory = every.where_priority(["advisory"])
    with_lookback = every.select(~advisory)  # floods running at `start` need what came before
    alarms = with_lookback.select(with_lookback.at_us >= s_us)
    advisories = int(np.count_nonzero(advisory & (every.at_us >= s_us)))
    stale_rows = await _rows(
        conn,
        _STALE_SQL,
        {"site": site, "start": start, "end": end, "asset": asset, "after_s": STALE_AFTER_S},
    )
    return {
        "site": site,
        "asset": asset,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "period_h": round((e_us - s_us) / _US / 3600, 6),
        "operator_positions": 1,
        "alarms": {
            "total": len(alarms),
            "advisories": advisories,
            **rate(alarms.at_us, s_us, e_us),
        },
        "floods": floods(with_lookback.at_us, s_us, e_us),
        "chattering": chattering(alarms),
        "fleeting": fleeting(alarms),
        "stale": stale(_intervals(stale_rows), s_us, e_us),
        "top_contributors": top_contributors(alarms),
        "priority": priority_split(alarms),
        "time_to_ack": time_to_ack(alarms),
    }


def _classes(pack: Pack) -> dict[str, str]:
    return {r.id: c for r in pack.rules if (c := exposure_class(r)) is not None}


async def compliance_summary(
    conn: psycopg.AsyncConnection[Any],
    site: str,
    start: datetime,
    end: datetime,
    *,
    ack_sla_s: float = ACK_SLA_S,
) -> dict[str, Any]:
    """The periodic compliance summary of one facility over [start, end).

    Keys: `site`, `start`, `end`; `pack` (the rule pack that classified the limits: the one
    with the latest `effective` at or before `end`, ties to the latest loaded; None when no
    pack was in force); `exceedances` (critical episodes of NAB / PSD / KTD rules per work
    area, see `exposure_class`; `classified` false with a `note` when no pack could be read);
    `ack_critical` (time to acknowledge alarms of critical severity or high/urgent priority,
    and escalations of lesser alarms to critical, timed from the escalation; how many took
    longer than `ack_sla_s` or are still waiting past it at `end`);
    `availability` (per sensor and asset: readings received over expected, at the minute
    resolution of the rollups, capped at 100 %; sensors below 95 % [A] listed; the registry
    keeps no registration time, so a sensor added during the period reads low); `findings`
    (open at `end`, age in days, overdue when due before `end`).
    """
    start, end = _period(start, end)
    s_us, e_us = _us(start), _us(end)

    pack_rows = await _rows(conn, _PACK_SQL, {"end": end})
    pack_info: dict[str, Any] | None = None
    exceed: dict[str, Any]
    if not pack_rows:
        exceed = {"classified": False, "note": f"no rule pack in force at {end.isoformat()}"}
    else:
        p = pack_rows[0]
        pack_info = {
            "name": p["name"],
            "version": p["version"],
            "sha256": p["sha256"],
            "effective": p["effective"].astimezone(UTC).isoformat(),
        }
        try:
            classes = _classes(parse_pack(p["body"], f"rule pack {p['sha256']}"))
        except PackError as exc:
            exceed = {"classified": False, "note": f"the stored pack does not parse: {exc}"}
        else:
            rows = await _rows(
                conn,
                _CRITICAL_SQL,
                {"site": site, "start": start, "end": end, "rules": sorted(classes)},
            )
            exceed = {
                "classified": True,
                "note": None,
                "rules": dict(sorted(classes.items())),
                **exceedances(_intervals(rows), classes, s_us, e_us),
            }

    crit_rows = await _rows(
        conn,
        _CRITICAL_ACK_SQL,
        {
            "site": site,
            "lo": start - timedelta(seconds=ESCALATION_LOOKBACK_S),
            "start": start,
            "end": end,
            "ack_actions": list(_ACK_ACTIONS),
        },
    )
    crit_at = np.fromiter((r["at_us"] for r in crit_rows), dtype=np.int64, count=len(crit_rows))
    ack_us = np.fromiter(
        (-1 if r["ack_us"] is None else r["ack_us"] for r in crit_rows),
        dtype=np.int64,
        count=len(crit_rows),
    )
    sla_us = round(ack_sla_s * _US)
    acked = ack_us >= 0
    late = int(
        np.count_nonzero(acked & (ack_us - crit_at > sla_us))
        + np.count_nonzero(~acked & (e_us - crit_at > sla_us))
    )
    delays = (np.maximum(ack_us[acked] - crit_at[acked], 0) / _US).astype(np.float64)
    ack_critical = {
        "sla_s": ack_sla_s,
        "sla_source": "[A] default 15 min unless the site's procedure sets another",
        "alarms": len(crit_rows),
        "acknowledged": int(np.count_nonzero(acked)),
        "unacknowledged": int(np.count_nonzero(~acked)),
        **spread(delays),
        "beyond_sla": late,
    }

    sensors: list[dict[str, Any]] = []
    assets: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in await _rows(conn, _AVAILABILITY_SQL, {"site": site, "start": start, "end": end}):
        expected = max(0.0, r["span_s"]) / r["period_s"]
        received = int(r["received"])
        got = min(float(received), expected)
        pct = 100.0 if expected <= 0 else round(100.0 * got / expected, 3)
        sensors.append(
            {
                "sensor": r["sensor"],
                "kind": r["kind"],
                "asset": r["asset"],
                "period_s": r["period_s"],
                "expected": round(expected, 3),
                "received": received,
                "availability_pct": pct,
                "below_threshold": pct < AVAILABILITY_MIN_PCT,
            }
        )
        slot = assets[r["asset"]]
        slot[0] += got
        slot[1] += expected
        slot[2] += 1
    availability = {
        "threshold_pct": AVAILABILITY_MIN_PCT,
        "sensors": sensors,
        "assets": [
            {
                "asset": a,
                "sensors": int(n),
                "availability_pct": 100.0 if exp <= 0 else round(100.0 * got / exp, 3),
            }
            for a, (got, exp, n) in sorted(assets.items())
        ],
        "below_threshold": [s["sensor"] for s in sensors if s["below_threshold"]],
    }

    found = []
    for f in await _rows(conn, _FINDINGS_SQL, {"site": site, "end": end}):
        due = f["due_at"]
        found.append(
            {
                "id": f["id"],
                "asset": f["asset"],
                "agency": f["agency"],
                "description": f["description"],
                "corrective_action": f["corrective_action"],
                "opened_at": f["opened_at"].astimezone(UTC).isoformat(),
                "due_at": None if due is None else due.astimezone(UTC).isoformat(),
                "age_days": round((end - f["opened_at"]).total_seconds() / 86_400, 3),
                "overdue": due is not None and due < end,
            }
        )
    return {
        "site": site,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "pack": pack_info,
        "exceedances": exceed,
        "ack_critical": ack_critical,
        "availability": availability,
        "findings": {
            "open": len(found),
            "overdue": sum(1 for f in found if f["overdue"]),
            "list": found,
        },
    }
