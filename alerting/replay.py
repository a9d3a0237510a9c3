"""Replay: readings through a rule pack and the alarm lifecycle, in memory.

Owns what `tungku replay` computes: the engine (`alerting.engine`) over readings in event-time
order, each condition event through the lifecycle (`alerting.lifecycle`), and the journal
entries and hash chain (`alerting.journal`) the live service would have written for them.
Alert ids are numbered in order of first appearance. Pure: readings come in as arrays; the
same readings and pack give the same output, bit for bit, however they were chunked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from alerting import journal, lifecycle
from alerting.compliance import Compliance
from alerting.engine import ConditionEvent, Engine, EventKind, SensorInfo
from alerting.lifecycle import AlertState
from alerting.pack import Pack


@dataclass(slots=True)
class ReplayResult:
    """Journal entries (with hashes) and each alert's final state."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    states: dict[tuple[str, str, str], AlertState] = field(default_factory=dict)
    readings: int = 0

    @property
    def last_hash(self) -> bytes:
        """Hash of the last entry (empty when nothing happened)."""
        return bytes(self.entries[-1]["hash"]) if self.entries else b""


class Replayer:
    """Feed chunks of readings with `feed`; read `result`."""

    def __init__(
        self, pack: Pack, sensors: Iterable[SensorInfo], compliance: Compliance | None = None
    ) -> None:
        self.pack = pack
        self.engine = Engine(pack, sensors, compliance)
        self.result = ReplayResult()
        self._ids: dict[tuple[str, str, str], int] = {}
        self._head = (0, b"")

    def feed(
        self,
        keys: npt.ArrayLike,
        ts_us: npt.ArrayLike,
        values: npt.ArrayLike,
        qualities: npt.ArrayLike,
    ) -> None:
        """Evaluate one chunk of readings."""
        events = self.engine.process(keys, ts_us, values, qualities)  # type: ignore[arg-type]
        self.result.readings += int(np.size(keys))
        for ev in events:
            self._apply(ev)

    def _apply(self, ev: ConditionEvent) -> None:
        key = ev.instance
        alert_id = self._ids.setdefault(key, len(self._ids) + 1)
        before = self.result.states.get(key, AlertState())
        tr = lifecycle.apply(before, lifecycle_event(ev))
        if not tr.changed:
            return
        self.result.states[key] = tr.after
        sev = ev.severity or tr.after.severity or tr.before.severity
        detail: dict[str, Any] = {"note": tr.note} if tr.note else {}
        if ev.escalated_by:
            detail["escalated_by"] = list(ev.escalated_by)
        if ev.detail:
            detail.update(ev.detail)
        seq = self._head[0] + 1
        entry: dict[str, Any] = {
            "seq": seq,
            "at_us": ev.at_us,
            "alert_id": alert_id,
            "site_id": ev.site,
            "asset": ev.asset,
            "rule_id": ev.rule_id,
            "subject": ev.subject,
            "actor": "engine",
            "action": ev.kind.value,
            "from_state": tr.before.state.value,
            "to_state": tr.after.state.value,
            "severity": sev.value if sev else None,
            "priority": tr.after.priority.value,
            "value": _finite(ev.value),
            "limit": _finite(ev.limit),
            "reason": ev.reason,
            "pack_name": self.pack.name,
            "pack_version": self.pack.version,
            "detail": detail,
        }
        h = journal.entry_hash(self._head[1], entry)
        entry["prev_hash"] = self._head[1]
        entry["hash"] = h
        self._head = (seq, h)
        self.result.entries.append(entry)


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def lifecycle_event(ev: ConditionEvent) -> lifecycle.Event:
    """The lifecycle event for an engine condition event."""
    nan = math.nan
    match ev.kind:
        case EventKind.ACTIVATE:
            assert ev.severity is not None  # noqa: S101 - an activation always has a level
            return lifecycle.Activate(
                at_us=ev.at_us,
                severity=ev.severity,
                priority=ev.priority,
                latch=ev.latch,
                value=nan if ev.value is None else ev.value,
                limit=nan if ev.limit is None else ev.limit,
                reason=ev.reason,
            )
        case EventKind.CLEAR:
            return lifecycle.Clear(
                at_us=ev.at_us, value=nan if ev.value is None else ev.value, reason=ev.reason
            )
        case EventKind.SUPPRESS:
            return lifecycle.Suppress(at_us=ev.at_us, reason=ev.reason)
        case EventKind.UNSUPPRESS:
            return lifecycle.Unsuppress(at_us=ev.at_us, reason=ev.reason)
