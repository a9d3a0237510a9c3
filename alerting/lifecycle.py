"""The ISA-18.2 alarm lifecycle of one alert: states, events and the pure transition function.

One alert is one (site, rule id, sensor or signal) instance. Its `AlertState` is a frozen
value; `apply(state, event)` returns a `Transition` (before, after, event, changed, note) that
the caller journals whether or not anything changed: who (`event.actor`), when
(`event.at_us`) and why (`event.reason`). Operator actions that the current state does not
allow raise `LifecycleError` with a message for the operator; engine events (`Activate`,
`Clear`, `Suppress`, `Unsuppress`, `ShelveExpired`) never raise.

Pure: no clock reads, no I/O, no storage. Time comes in with each event (`at_us`, microseconds
since the Unix epoch) and as `now_us` for `expire_shelves`. It must not know about rules,
readings or the database: the engine decides when a condition is active, this module decides
what that means for annunciation.

Model
    Underneath, an alert tracks the process condition (`condition_active`, `severity`,
    `priority`), whether it is latching (`latched`: set by an `Activate` with ``latch=True``,
    cleared only by `Reset`) and whether its current activation has been acknowledged
    (`acked`; True when nothing awaits acknowledgement, so True in normal). Three overlays
    hide it from annunciation, in this precedence::

        out_of_service  >  suppressed (by design)  >  shelved

    The displayed `state` is the highest overlay that applies, else the state the condition
    implies:

        ====================================  =============
        condition_active, latched, acked      implied state
        ====================================  =============
        active, -, not acked                  unack
        active, -, acked                      ack
        clear, latched, -                     latched
        clear, not latched, not acked         rtn_unack
        clear, not latched, acked             normal
        ====================================  =============

    The condition keeps being tracked under an overlay (Activate and Clear update it). When
    the last overlay lifts (Unshelve, ShelveExpired, Unsuppress, ReturnToService) the alert
    resumes: active -> unack (re-annunciated, even if it was acknowledged before); clear and
    latched -> latched (acknowledgement kept); clear and not latched -> normal (an activation
    that came and went while hidden is not annunciated afterwards: that is what hiding means).

Transition table (no overlay unless stated; "-" = refused with `LifecycleError`)::

    state          event                          next state          notes
    -------------  -----------------------------  ------------------  -------------------------
    normal         Activate                       unack               activations += 1
    unack          Activate (same level)          unack               changed=False
    unack          Activate (warning->critical)   unack               escalation
    ack            Activate (same level)          ack                 changed=False
    ack            Activate (warning->critical)   unack               escalation: re-ack needed
    ack            Activate (critical->warning)   ack                 severity and priority drop
                                                                      unless latched: a latch
                                                                      holds critical to Reset
    unack          Clear                          rtn_unack/latched   latched if latching
    ack            Clear                          normal/latched      latched if latching
    rtn_unack      Activate                       unack               activations += 1
    latched        Activate                       ack or unack        activations += 1; ack if
                                                                      already acknowledged and
                                                                      not above the held level
    normal/rtn_unack/latched  Clear               unchanged           changed=False
    unack          Acknowledge                    ack
    rtn_unack      Acknowledge                    normal
    latched        Acknowledge (not acked)        latched             acked=True
    latched        Acknowledge (acked)            -                   already acknowledged
    normal/ack     Acknowledge                    -                   nothing to acknowledge
    latched        Reset                          normal              acknowledges and resets
    other          Reset                          -                   not latched, still
                                                                      active, or hidden
    any but OOS    Shelve                         shelved*            reason required;
                                                                      at_us < until_us <=
                                                                      at_us + max_shelve_s;
                                                                      re-shelving renews
    out_of_service Shelve                         -
    shelved        Unshelve / ShelveExpired       implied*            resume (above)
    not shelved    Unshelve                       -
    not shelved    ShelveExpired                  unchanged           changed=False; also
                                                                      before until_us
    any            Suppress                       suppressed*         tracking continues;
                                                                      again: changed=False
    not suppressed Unsuppress                     unchanged           changed=False
    suppressed     Unsuppress                     implied*            resume (above)
    any but OOS    RemoveFromService              out_of_service      reason and authorised_by
                                                                      required; clears a shelf
    out_of_service RemoveFromService              -
    out_of_service ReturnToService                implied*            resume (above)
    other          ReturnToService                -
    any            Comment                        unchanged           changed=False; journaled;
                                                                      text required

    * subject to precedence: e.g. Shelve while suppressed keeps the state `suppressed` with
      the shelf underneath; Unsuppress then shows `shelved`.

Decisions
    - Acknowledge and Reset act on what the operator sees: they are refused while an overlay
      hides the alert. Unshelve needs only a shelf, even one under suppression.
    - Every operator action needs a non-empty `actor`; Shelve and RemoveFromService need a
      reason, RemoveFromService also `authorised_by` (any non-empty name).
    - Shelving is allowed in any state but out_of_service, including latched; the latch
      survives the shelf. Removal from service clears a shelf, so the two never coexist.
    - A new activation (condition clear -> active) needs acknowledgement, except that a latched
      alert that was acknowledged and re-activates at or below its held level stays
      acknowledged: the latch kept it on display, so the operator already knows.
    - `activations` counts clear -> active transitions only (for chattering KPIs); an
      escalation of an active alert is not a new activation.
    - `changed` is True when any field changed; `last_change_us` is then set to `at_us`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, TypeAlias, TypeVar, assert_never

from alerting.pack import Priority, Severity

K = TypeVar("K", bound=Hashable)

ENGINE = "engine"  #: the actor of events raised by the rule engine or its clock


class LifecycleError(ValueError):
    """Raised when an operator action is not allowed in the alert's state, or a state is bad."""


class State(StrEnum):
    """ISA-18.2 alarm states, as displayed."""

    NORMAL = "normal"
    UNACK = "unack"  # active, unacknowledged
    ACK = "ack"  # active, acknowledged
    RTN_UNACK = "rtn_unack"  # returned to normal, unacknowledged
    LATCHED = "latched"  # condition cleared; a latching alert waits for Reset
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"  # by design: plant state or bad sensor quality
    OUT_OF_SERVICE = "out_of_service"


_SEVERITY_RANK = {Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertState:
    """The lifecycle state of one alert; the defaults are a fresh alert in normal.

    `state` must be the one the other fields imply (see the module docstring); construction
    of an inconsistent state raises `LifecycleError`.
    """

    state: State = State.NORMAL
    condition_active: bool = False
    severity: Severity | None = None  # active level, or the level a latch holds; else None
    priority: Priority = Priority.LOW  # of the active or last active level
    latched: bool = False  # latching and not yet reset
    shelved_until_us: int | None = None  # not None exactly while shelved
    shelve_reason: str = ""
    suppressed: bool = False
    out_of_service: bool = False
    acked: bool = True  # no activation awaits acknowledgement
    last_change_us: int = 0
    activations: int = 0

    def __post_init__(self) -> None:
        expected = _displayed(_fields(self))
        if self.state is not expected:
            raise LifecycleError(
                f"inconsistent alert state: {self.state} where the fields say {expected}"
            )
        if (self.severity is None) != (not self.condition_active and not self.latched):
            raise LifecycleError(
                "inconsistent alert state: severity must be set exactly while the condition is"
                " active or a latch holds it"
            )
        if self.out_of_service and self.shelved_until_us is not None:
            raise LifecycleError("inconsistent alert state: shelved while out of service")
        if self.activations < 0:
            raise LifecycleError("inconsistent alert state: negative activations")


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Activate:
    """Engine: the condition became active or changed level."""

    at_us: int
    severity: Severity
    priority: Priority
    latch: bool = False
    value: float = float("nan")
    limit: float = float("nan")
    actor: str = ENGINE
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Clear:
    """Engine: the condition returned to normal."""

    at_us: int
    value: float = float("nan")
    limit: float = float("nan")
    actor: str = ENGINE
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Suppress:
    """Engine: suppression by design starts (furnace off, sensor bad quality...)."""

    at_us: int
    reason: str
    actor: str = ENGINE


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsuppress:
    """Engine: suppression by design ends."""

    at_us: int
    reason: str = ""
    actor: str = ENGINE


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelveExpired:
    """Engine (clock-driven): a shelf's `until_us` has passed."""

    at_us: int
    actor: str = ENGINE
    reason: str = "shelve expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledge:
    """Operator: acknowledges the alert; `comment` is the journaled reason."""

    at_us: int
    actor: str
    comment: str = ""

    @property
    def reason(self) -> str:
        """The comment, journaled as the reason."""
        return self.comment


@dataclass(frozen=True, slots=True, kw_only=True)
class Shelve:
    """Operator: hides the alert until `until_us`, for a stated reason."""

    at_us: int
    actor: str
    reason: str
    until_us: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Unshelve:
    """Operator: ends a shelf early."""

    at_us: int
    actor: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset:
    """Operator: acknowledges and resets a latched alert whose condition has cleared."""

    at_us: int
    actor: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Comment:
    """Operator: a note on the alert; no state change, still journaled."""

    at_us: int
    actor: str
    text: str

    @property
    def reason(self) -> str:
        """The text, journaled as the reason."""
        return self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveFromService:
    """Operator: takes the alert out of service, with a reason and who authorised it."""

    at_us: int
    actor: str
    reason: str
    authorised_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReturnToService:
    """Operator: puts an out-of-service alert back in service."""

    at_us: int
    actor: str
    reason: str = ""


Event: TypeAlias = (
    Activate
    | Clear
    | Suppress
    | Unsuppress
    | ShelveExpired
    | Acknowledge
    | Shelve
    | Unshelve
    | Reset
    | Comment
    | RemoveFromService
    | ReturnToService
)

#: Events the engine raises; `apply` never refuses them.
ENGINE_EVENTS = (Activate, Clear, Suppress, Unsuppress, ShelveExpired)


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one event: journal it whether or not anything `changed`."""

    before: AlertState
    after: AlertState
    event: Event
    changed: bool
    note: str


# --- queries ------------------------------------------------------------------------------

_ANNUNCIATED = frozenset({State.UNACK, State.ACK, State.RTN_UNACK, State.LATCHED})
_NEEDS_ATTENTION = frozenset({State.UNACK, State.RTN_UNACK, State.LATCHED})


def annunciated(state: State) -> bool:
    """True for states shown to the operator: unack, ack, rtn_unack, latched."""
    return state in _ANNUNCIATED


def needs_attention(state: State) -> bool:
    """True when an operator action is due: an acknowledgement (unack, rtn_unack) or a Reset."""
    return state in _NEEDS_ATTENTION


# --- the transition function --------------------------------------------------------------


def apply(state: AlertState, event: Event, *, max_shelve_s: float = 86_400) -> Transition:
    """Apply one event to one alert; raise `LifecycleError` for a refused operator action."""
    match event:
        case Activate():
            return _activate(state, event)
        case Clear():
            return _clear(state, event)
        case Suppress():
            if state.suppressed:
                return _same(state, event, "already suppressed")
            return _to(state, event, "suppressed by design", suppressed=True)
        case Unsuppress():
            if not state.suppressed:
                return _same(state, event, "not suppressed")
            return _lift(state, event, "suppression ended", suppressed=False)
        case ShelveExpired():
            if state.shelved_until_us is None:
                return _same(state, event, "not shelved")
            if event.at_us < state.shelved_until_us:
                return _same(state, event, f"shelved until {state.shelved_until_us}")
            return _lift(state, event, "shelve expired", shelved_until_us=None, shelve_reason="")
        case Acknowledge():
            return _acknowledge(state, event)
        case Shelve():
            return _shelve(state, event, max_shelve_s)
        case Unshelve():
            _require_actor(event.actor)
            if state.shelved_until_us is None:
                raise LifecycleError(f"cannot unshelve: the alert is {state.state}, not shelved")
            return _lift(
                state, event, f"unshelved by {event.actor}", shelved_until_us=None, shelve_reason=""
            )
        case Reset():
            return _reset(state, event)
        case Comment():
            _require_actor(event.actor)
            if not event.text.strip():
                raise LifecycleError("a comment needs text")
            return _same(state, event, f"comment by {event.actor}")
        case RemoveFromService():
            _require_actor(event.actor)
            if state.out_of_service:
                raise LifecycleError("cannot remove from service: already out of service")
            if not event.reason.strip():
                raise LifecycleError("removing an alert from service needs a reason")
            if not event.authorised_by.strip():
                raise LifecycleError("removing an alert from service needs who authorised it")
            note = f"out of service by {event.actor}, authorised by {event.authorised_by}"
            if state.shelved_until_us is not None:
                note += "; shelf cleared"
            return _to(
                state, event, note, out_of_service=True, shelved_until_us=None, shelve_reason=""
            )
        case ReturnToService():
            _require_actor(event.actor)
            if not state.out_of_service:
                raise LifecycleError(
                    f"cannot return to service: the alert is {state.state}, not out of service"
                )
            return _lift(
                state, event, f"returned to service by {event.actor}", out_of_service=False
            )
        case _:
            assert_never(event)


def expire_shelves(states: Mapping[K, AlertState], now_us: int) -> list[tuple[K, Transition]]:
    """`ShelveExpired` at `now_us` for every alert whose shelf ends at or before `now_us`."""
    return [
        (key, apply(st, ShelveExpired(at_us=now_us)))
        for key, st in states.items()
        if st.shelved_until_us is not None and st.shelved_until_us <= now_us
    ]


# --- engine events ------------------------------------------------------------------------


def _activate(s: AlertState, ev: Activate) -> Transition:
    held = s.severity
    if s.latched and held is not None and _SEVERITY_RANK[ev.severity] < _SEVERITY_RANK[held]:
        severity, priority = held, s.priority  # a latch holds the higher level until Reset
    else:
        severity, priority = ev.severity, ev.priority
    escalated = held is not None and _SEVERITY_RANK[severity] > _SEVERITY_RANK[held]
    new_activation = not s.condition_active
    # A new activation needs acknowledgement, except that the latch kept an acknowledged alert
    # on display: re-activation at or below the held level is already known to the operator.
    acked = s.acked and not escalated and (s.latched or not new_activation)
    what = "escalated" if escalated else ("activated" if new_activation else "level")
    note = f"{what}: {severity} ({priority}), value {ev.value:g} vs limit {ev.limit:g}"
    return _to(
        s,
        ev,
        note,
        condition_active=True,
        severity=severity,
        priority=priority,
        latched=s.latched or ev.latch,
        acked=acked,
        activations=s.activations + (1 if new_activation else 0),
    )


def _clear(s: AlertState, ev: Clear) -> Transition:
    if not s.condition_active:
        return _same(s, ev, "already clear")
    note = f"cleared: value {ev.value:g} vs limit {ev.limit:g}"
    if s.latched:
        note += f"; latch holds {s.severity} until reset"
    return _to(
        s,
        ev,
        note,
        condition_active=False,
        severity=s.severity if s.latched else None,
    )


# --- operator actions ---------------------------------------------------------------------


def _acknowledge(s: AlertState, ev: Acknowledge) -> Transition:
    _require_actor(ev.actor)
    if not annunciated(s.state):
        raise LifecycleError(f"cannot acknowledge: the alert is {s.state}, not annunciated")
    if s.acked:
        raise LifecycleError(f"cannot acknowledge: the alert is {s.state}, already acknowledged")
    return _to(s, ev, f"acknowledged by {ev.actor}", acked=True)


def _shelve(s: AlertState, ev: Shelve, max_shelve_s: float) -> Transition:
    _require_actor(ev.actor)
    if s.out_of_service:
        raise LifecycleError("cannot shelve: the alert is out of service")
    if not ev.reason.strip():
        raise LifecycleError("shelving needs a reason")
    if ev.until_us <= ev.at_us:
        raise LifecycleError(f"cannot shelve: until {ev.until_us} is not after {ev.at_us}")
    max_us = round(max_shelve_s * 1_000_000)
    if ev.until_us - ev.at_us > max_us:
        raise LifecycleError(
            f"cannot shelve for {(ev.until_us - ev.at_us) / 1e6:g} s: at most {max_shelve_s:g} s"
        )
    what = "shelf renewed" if s.shelved_until_us is not None else "shelved"
    return _to(
        s,
        ev,
        f"{what} by {ev.actor} until {ev.until_us}",
        shelved_until_us=ev.until_us,
        shelve_reason=ev.reason,
    )


def _reset(s: AlertState, ev: Reset) -> Transition:
    _require_actor(ev.actor)
    if not s.latched:
        raise LifecycleError(f"cannot reset: the alert is {s.state} and not latched")
    if s.condition_active:
        raise LifecycleError("cannot reset: the condition is still active")
    if s.state is not State.LATCHED:
        raise LifecycleError(f"cannot reset: the alert is {s.state}; bring it back first")
    return _to(s, ev, f"reset by {ev.actor}", latched=False, acked=True, severity=None)


def _require_actor(actor: str) -> None:
    if not actor.strip():
        raise LifecycleError("an operator action needs the name of who takes it")


# --- building the next state --------------------------------------------------------------


def _displayed(f: Mapping[str, Any]) -> State:
    """The state shown for these field values: the highest overlay, else the implied one."""
    if f["out_of_service"]:
        return State.OUT_OF_SERVICE
    if f["suppressed"]:
        return State.SUPPRESSED
    if f["shelved_until_us"] is not None:
        return State.SHELVED
    if f["condition_active"]:
        return State.ACK if f["acked"] else State.UNACK
    if f["latched"]:
        return State.LATCHED
    return State.NORMAL if f["acked"] else State.RTN_UNACK


def _same(s: AlertState, ev: Event, note: str) -> Transition:
    return Transition(before=s, after=s, event=ev, changed=False, note=note)


def _to(s: AlertState, ev: Event, note: str, **changes: Any) -> Transition:
    """The state with `changes`, its displayed state derived; `changed` if any field moved."""
    draft = _derive(s, changes)
    if draft == s:
        return _same(s, ev, note)
    after = replace(draft, last_change_us=ev.at_us)
    if after.state is not s.state:
        note = f"{s.state} -> {after.state}: {note}"
    return Transition(before=s, after=after, event=ev, changed=True, note=note)


def _lift(s: AlertState, ev: Event, note: str, **changes: Any) -> Transition:
    """Like `_to` for an event that removes an overlay: resume if none remains."""
    new = {**_fields(s), **changes}
    if not (new["out_of_service"] or new["suppressed"]) and new["shelved_until_us"] is None:
        if new["condition_active"]:
            changes["acked"] = False  # re-annunciated
        elif not new["latched"]:
            changes["acked"] = True  # nothing left to show
    return _to(s, ev, note, **changes)


def _fields(s: AlertState) -> dict[str, Any]:
    return {f.name: getattr(s, f.name) for f in fields(AlertState)}


def _derive(s: AlertState, changes: Mapping[str, Any]) -> AlertState:
    new = {**_fields(s), **changes}
    new["state"] = _displayed(new)
    return AlertState(**new)
