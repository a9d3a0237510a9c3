"""Batching: turns received MQTT messages into one unit of work for the database.

Pure: no I/O and no clock reads; times come in as arguments. A `Batch` collects, in arrival
order, the accepted readings as columns, the rejects, the gateway status changes and the
acknowledgement references of every message it holds. It is committed as one transaction and
only then are its messages acknowledged, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ingest.contract import (
    ContractError,
    DecodeLimits,
    Readings,
    Reason,
    SensorIndex,
    decode_readings,
    decode_status,
    parse_topic,
)

#: Per-reading entries kept in one reject row; the count is kept in full.
MAX_ERRORS_PER_REJECT = 100
#: A batch is committed once it holds this much payload, whatever it decoded to.
MAX_BATCH_PAYLOAD_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RejectRecord:
    """A message, or part of one, that could not be stored as readings."""

    received_at_us: int
    topic: str
    site: str | None
    gateway: str | None
    reason: str
    reasons: tuple[str, ...]
    detail: str
    errors: tuple[dict[str, Any], ...]
    accepted_readings: int
    rejected_readings: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """A gateway status change, applied in arrival order."""

    received_at_us: int
    site: str
    gateway: str
    online: bool
    ts_us: int | None


@dataclass(slots=True)
class GatewaySeen:
    """Highest sequence number and last arrival of a gateway's readings within a batch."""

    max_seq: int
    last_received_us: int


@dataclass(slots=True)
class Batch:
    """Messages to commit together. `refs` holds the acknowledgement handles in arrival order."""

    started_mono_s: float
    #: Position in the stream of batches; acknowledgements are released in this order.
    number: int = 0
    refs: list[object] = field(default_factory=list)
    sensor_keys: list[int] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    qualities: list[int] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)
    statuses: list[StatusRecord] = field(default_factory=list)
    #: Readings refused as outside their sensor's physical range, as (key, ts_us, value):
    #: not stored as readings (they are in `rejects`), but alerting sees them as bad quality.
    faults: list[tuple[int, int, float]] = field(default_factory=list)
    gateways: dict[tuple[str, str], GatewaySeen] = field(default_factory=dict)
    rejected_readings: dict[str, int] = field(default_factory=dict)
    rejected_messages: dict[str, int] = field(default_factory=dict)
    #: The messages as received, kept until commit so a batch the database refuses can be
    #: retried one message at a time.
    raw: list[tuple[object, str, bytes, int]] = field(default_factory=list)
    payload_bytes: int = 0

    @property
    def rows(self) -> int:
        """Accepted readings held."""
        return len(self.values)

    @property
    def messages(self) -> int:
        """Messages held (each will be acknowledged)."""
        return len(self.refs)

    def add_message(
        self,
        ref: object,
        topic: str,
        payload: bytes,
        *,
        received_at_us: int,
        index: SensorIndex,
        limits: DecodeLimits,
    ) -> None:
        """Decode one message into the batch; whatever is wrong with it becomes a reject.

        Decoding happens before the batch is touched: if it raises, the batch is unchanged
        and the caller can still record the message with `add_internal_error`.
        """
        site: str | None = None
        gateway: str | None = None
        outcome: Readings | StatusRecord | RejectRecord
        ts_problem: RejectRecord | None = None
        try:
            t = parse_topic(topic)
            site, gateway = t.site, t.gateway
            if t.channel == "status":
                st = decode_status(t, payload, limits, now_us=received_at_us)
                if (t.site, t.gateway) not in index:
                    raise ContractError(
                        Reason.UNKNOWN_GATEWAY,
                        f"gateway {t.gateway!r} of site {t.site!r} is not in the registry",
                    )
                outcome = StatusRecord(received_at_us, st.site, st.gateway, st.online, st.ts_us)
                if st.ts_error is not None:
                    ts_problem = _message_reject(
                        received_at_us,
                        topic,
                        site,
                        gateway,
                        Reason.BAD_TIMESTAMP,
                        f"state {'online' if st.online else 'offline'} applied without its "
                        f"time: {st.ts_error}",
                        payload,
                    )
            else:
                outcome = decode_readings(
                    t, payload, index=index, now_us=received_at_us, limits=limits
                )
        except ContractError as exc:
            outcome = _message_reject(
                received_at_us, topic, site, gateway, exc.reason, str(exc), payload
            )
        self._note(ref, topic, payload, received_at_us)
        if isinstance(outcome, StatusRecord):
            self.statuses.append(outcome)
            if ts_problem is not None:
                self._add_reject(ts_problem)
        elif isinstance(outcome, RejectRecord):
            self._add_reject(outcome)
        else:
            self._add_readings(outcome, topic, payload, received_at_us)

    def _note(self, ref: object, topic: str, payload: bytes, received_at_us: int) -> None:
        self.refs.append(ref)
        self.raw.append((ref, topic, payload, received_at_us))
        self.payload_bytes += len(payload)

    def _add_reject(self, reject: RejectRecord) -> None:
        self.rejected_messages[reject.reason] = self.rejected_messages.get(reject.reason, 0) + 1
        self.rejects.append(reject)

    def _add_readings(self, r: Readings, topic: str, payload: bytes, received_at_us: int) -> None:
        self.sensor_keys.extend(r.sensor_keys)
        self.ts_us.extend(r.ts_us)
        self.values.extend(r.values)
        self.qualities.extend(r.qualities)
        seen = self.gateways.get((r.site, r.gateway))
        if seen is None:
            self.gateways[(r.site, r.gateway)] = GatewaySeen(r.seq, received_at_us)
        else:
            seen.max_seq = max(seen.max_seq, r.seq)
            seen.last_received_us = received_at_us
        if not r.errors:
            return
        reasons: list[str] = []
        for e in r.errors:
            if e.sample is not None:
                self.faults.append(e.sample)
            if e.reason not in reasons:
                reasons.append(e.reason.value)
            self.rejected_readings[e.reason] = self.rejected_readings.get(e.reason, 0) + 1
        first = r.errors[0]
        more = f" (and {len(r.errors) - 1} more)" if len(r.errors) > 1 else ""
        self.rejects.append(
            RejectRecord(
                received_at_us=received_at_us,
                topic=topic,
                site=r.site,
                gateway=r.gateway,
                reason=first.reason.value,
                reasons=tuple(reasons),
                detail=f"reading {first.index}: {first.message}{more}",
                # The payload is kept whole; the per-reading list is capped so that one
                # message of junk cannot make a huge row.
                errors=tuple(
                    {"index": e.index, "reason": e.reason.value, "message": e.message}
                    for e in r.errors[:MAX_ERRORS_PER_REJECT]
                ),
                accepted_readings=len(r),
                rejected_readings=len(r.errors),
                payload=payload,
            )
        )

    def add_internal_error(
        self, ref: object, topic: str, payload: bytes, *, received_at_us: int, message: str
    ) -> None:
        """Record a message that could not be processed, so it is kept and acknowledged."""
        self._note(ref, topic, payload, received_at_us)
        self._add_reject(
            _message_reject(received_at_us, topic, None, None, "internal_error", message, payload)
        )

    def is_due(self, *, now_mono_s: float, max_rows: int, max_delay_s: float) -> bool:
        """True when the batch should be committed: full (readings, messages or payload
        bytes), or its first message has waited long enough."""
        if not self.refs:
            return False
        return (
            self.rows >= max_rows
            or self.messages >= max_rows
            or self.payload_bytes >= MAX_BATCH_PAYLOAD_BYTES
            or now_mono_s - self.started_mono_s >= max_delay_s
        )


def _message_reject(  # noqa: PLR0917 - mirrors RejectRecord, called twice
    received_at_us: int,
    topic: str,
    site: str | None,
    gateway: str | None,
    reason: str,
    detail: str,
    payload: bytes,
) -> RejectRecord:
    return RejectRecord(
        received_at_us=received_at_us,
        topic=topic,
        site=site,
        gateway=gateway,
        reason=str(reason),
        reasons=(str(reason),),
        detail=detail,
        errors=(),
        accepted_readings=0,
        rejected_readings=0,
        payload=payload,
    )


T = TypeVar("T")


class AckSequencer(Generic[T]):
    """Releases committed batches in the order they were formed, whatever order their
    concurrent commits finish in, so PUBACKs always go out in arrival order."""

    def __init__(self) -> None:
        self._next = 0
        self._done: dict[int, T] = {}

    def committed(self, number: int, item: T) -> list[T]:
        """Record batch `number` as committed; return the items now releasable, in order."""
        if number < self._next or number in self._done:
            raise ValueError(f"batch {number} was already committed")
        self._done[number] = item
        out: list[T] = []
        while self._next in self._done:
            out.append(self._done.pop(self._next))
            self._next += 1
        return out

    @property
    def waiting(self) -> int:
        """Committed batches held back behind an earlier one still in flight."""
        return len(self._done)
