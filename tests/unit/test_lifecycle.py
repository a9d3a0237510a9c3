"""ISA-18.2 alarm lifecycle: the transition table, refused operator actions and invariants."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from alerting.lifecycle import (
    ENGINE_EVENTS,
    Acknowledge,
    Activate,
    AlertState,
    Clear,
    Comment,
    Event,
    LifecycleError,
    RemoveFromService,
    Reset,
    ReturnToService,
    Shelve,
    ShelveExpired,
    State,
    Suppress,
    Transition,
    Unshelve,
    Unsuppress,
    annunciated,
    apply,
    expire_shelves,
    needs_attention,
)
from alerting.pack import Priority, Severity

T0 = 1_795_000_000_000_000
HOUR_US = 3_600_000_000
W, C = Severity.WARNING, Severity.CRITICAL


def warn(latch: bool = False) -> Activate:
    return Activate(at_us=T0, severity=W, priority=Priority.MEDIUM, latch=latch, value=1, limit=0)


def crit(latch: bool = False) -> Activate:
    return Activate(at_us=T0, severity=C, priority=Priority.HIGH, latch=latch, value=60, limit=50)


CLEAR = Clear(at_us=T0, value=-10, limit=0)
ACK = Acknowledge(at_us=T0, actor="ani", comment="seen")
RESET = Reset(at_us=T0, actor="ani", reason="checked on site")
SHELVE = Shelve(at_us=T0, actor="ani", reason="sensor under repair", until_us=T0 + HOUR_US)
UNSHELVE = Unshelve(at_us=T0, actor="ani", reason="repaired")
EXPIRED = ShelveExpired(at_us=T0 + HOUR_US)
SUPPRESS = Suppress(at_us=T0, reason="furnace off")
UNSUPPRESS = Unsuppress(at_us=T0, reason="furnace energised")
OOS = RemoveFromService(at_us=T0, actor="ani", reason="sensor removed", authorised_by="budi")
RTS = ReturnToService(at_us=T0, actor="ani", reason="sensor refitted")
NOTE = Comment(at_us=T0, actor="ani", text="crew informed")


def run(*events: Event, start: AlertState | None = None) -> AlertState:
    state = AlertState() if start is None else start
    for event in events:
        state = apply(state, event).after
    return state


# Named starting points, each reached through events only.
STARTS: dict[str, Sequence[Event]] = {
    "normal": (),
    "unack": (warn(),),
    "ack": (warn(), ACK),
    "unack_crit": (crit(),),
    "rtn_unack": (warn(), CLEAR),
    "latched_unack": (crit(latch=True), CLEAR),
    "latched_ack": (crit(latch=True), ACK, CLEAR),
    "ack_latching": (crit(latch=True), ACK),
    "shelved_active": (warn(), SHELVE),
    "shelved_clear": (SHELVE,),
    "shelved_latched": (crit(latch=True), ACK, CLEAR, SHELVE),
    "suppressed_active": (warn(), SUPPRESS),
    "suppressed_clear": (SUPPRESS,),
    "suppressed_shelved": (warn(), SHELVE, SUPPRESS),
    "oos_active": (warn(), OOS),
    "oos_clear": (OOS,),
}

TABLE: list[tuple[str, Event, State]] = [
    ("normal", warn(), State.UNACK),
    ("normal", crit(latch=True), State.UNACK),
    ("normal", CLEAR, State.NORMAL),
    ("unack", warn(), State.UNACK),
    ("unack", crit(), State.UNACK),
    ("unack", ACK, State.ACK),
    ("unack", CLEAR, State.RTN_UNACK),
    ("ack", warn(), State.ACK),
    ("ack", crit(), State.UNACK),
    ("ack", CLEAR, State.NORMAL),
    ("ack_latching", CLEAR, State.LATCHED),
    ("ack_latching", warn(), State.ACK),
    ("unack_crit", CLEAR, State.RTN_UNACK),
    ("rtn_unack", ACK, State.NORMAL),
    ("rtn_unack", warn(), State.UNACK),
    ("latched_unack", ACK, State.LATCHED),
    ("latched_unack", RESET, State.NORMAL),
    ("latched_unack", warn(), State.UNACK),
    ("latched_ack", RESET, State.NORMAL),
    ("latched_ack", warn(), State.ACK),
    ("latched_ack", crit(), State.ACK),
    ("latched_ack", CLEAR, State.LATCHED),
    ("normal", SHELVE, State.SHELVED),
    ("unack", SHELVE, State.SHELVED),
    ("latched_ack", SHELVE, State.SHELVED),
    ("shelved_active", UNSHELVE, State.UNACK),
    ("shelved_active", EXPIRED, State.UNACK),
    ("shelved_active", CLEAR, State.SHELVED),
    ("shelved_clear", UNSHELVE, State.NORMAL),
    ("shelved_clear", warn(), State.SHELVED),
    ("shelved_latched", EXPIRED, State.LATCHED),
    ("unack", SUPPRESS, State.SUPPRESSED),
    ("suppressed_active", UNSUPPRESS, State.UNACK),
    ("suppressed_clear", UNSUPPRESS, State.NORMAL),
    ("suppressed_clear", SHELVE, State.SUPPRESSED),
    ("suppressed_shelved", UNSUPPRESS, State.SHELVED),
    ("suppressed_shelved", UNSHELVE, State.SUPPRESSED),
    ("ack", OOS, State.OUT_OF_SERVICE),
    ("shelved_active", OOS, State.OUT_OF_SERVICE),
    ("oos_active", SUPPRESS, State.OUT_OF_SERVICE),
    ("oos_active", RTS, State.UNACK),
    ("oos_clear", RTS, State.NORMAL),
    ("oos_active", CLEAR, State.OUT_OF_SERVICE),
    ("ack", NOTE, State.ACK),
]


@pytest.mark.parametrize(
    ("start", "event", "expected"),
    TABLE,
    ids=[f"{s}-{type(e).__name__}-{x}" for s, e, x in TABLE],
)
def test_transition_table(start: str, event: Event, expected: State) -> None:
    """Each (state, event) row of the documented table leads to its next state."""
    before = run(*STARTS[start])
    transition = apply(before, event)
    assert transition.after.state is expected
    assert transition.before == before
    assert transition.event == event


REFUSED: list[tuple[str, Event, str]] = [
    ("normal", ACK, "not annunciated"),
    ("ack", ACK, "already acknowledged"),
    ("latched_ack", ACK, "already acknowledged"),
    ("shelved_active", ACK, "not annunciated"),
    ("suppressed_active", ACK, "not annunciated"),
    ("normal", RESET, "not latched"),
    ("rtn_unack", RESET, "not latched"),
    ("ack_latching", RESET, "still active"),
    ("shelved_latched", RESET, "bring it back first"),
    ("unack", Shelve(at_us=T0, actor="ani", reason=" ", until_us=T0 + 1), "needs a reason"),
    ("unack", Shelve(at_us=T0, actor="ani", reason="x", until_us=T0), "is not after"),
    ("unack", Shelve(at_us=T0, actor="ani", reason="x", until_us=T0 + 25 * HOUR_US), "at most"),
    ("oos_active", SHELVE, "out of service"),
    ("normal", UNSHELVE, "not shelved"),
    ("suppressed_active", UNSHELVE, "not shelved"),
    ("oos_clear", OOS, "already out of service"),
    ("ack", RemoveFromService(at_us=T0, actor="ani", reason="", authorised_by="b"), "reason"),
    ("ack", RemoveFromService(at_us=T0, actor="ani", reason="r", authorised_by=""), "authorised"),
    ("ack", RTS, "not out of service"),
    ("ack", Comment(at_us=T0, actor="ani", text=""), "needs text"),
    ("unack", Acknowledge(at_us=T0, actor=""), "who takes it"),
]


@pytest.mark.parametrize(
    ("start", "event", "message"),
    REFUSED,
    ids=[f"{s}-{type(e).__name__}-{m}" for s, e, m in REFUSED],
)
def test_forbidden_operator_actions_are_refused(start: str, event: Event, message: str) -> None:
    """An operator action the state does not allow raises LifecycleError naming why."""
    with pytest.raises(LifecycleError, match=message):
        apply(run(*STARTS[start]), event)


def test_shelve_duration_is_bounded_by_the_max_argument() -> None:
    """A shelf of exactly max_shelve_s is accepted; one microsecond more is refused."""
    limit = Shelve(at_us=T0, actor="ani", reason="x", until_us=T0 + 600_000_000)
    assert apply(AlertState(), limit, max_shelve_s=600).after.state is State.SHELVED
    over = Shelve(at_us=T0, actor="ani", reason="x", until_us=T0 + 600_000_001)
    with pytest.raises(LifecycleError, match="at most 600 s"):
        apply(AlertState(), over, max_shelve_s=600)


def test_activate_at_the_same_level_changes_nothing() -> None:
    """A repeated Activate at the same level is a transition with changed=False."""
    before = run(warn(), ACK)
    transition = apply(before, Activate(at_us=T0 + 5, severity=W, priority=Priority.MEDIUM))
    assert not transition.changed
    assert transition.after == before


def test_first_activation_counts_and_records_the_time() -> None:
    """normal + Activate sets the condition, level, priority, activations and last change."""
    after = apply(AlertState(), Activate(at_us=T0 + 7, severity=C, priority=Priority.URGENT)).after
    assert (after.state, after.condition_active, after.severity, after.priority) == (
        State.UNACK,
        True,
        C,
        Priority.URGENT,
    )
    assert (after.activations, after.last_change_us, after.acked) == (1, T0 + 7, False)


def test_escalation_is_not_a_new_activation() -> None:
    """warning -> critical re-annunciates but does not count as another activation."""
    after = run(warn(), ACK, crit())
    assert (after.state, after.severity, after.activations) == (State.UNACK, C, 1)


def test_latch_holds_critical_through_a_drop_to_warning() -> None:
    """critical -> warning while latched keeps critical and its priority until Reset."""
    after = run(crit(latch=True), warn())
    assert (after.severity, after.priority, after.latched) == (C, Priority.HIGH, True)


def test_drop_to_warning_without_latch_lowers_the_level() -> None:
    """critical -> warning without a latch lowers severity and priority, keeping the ack."""
    after = run(crit(), ACK, warn())
    assert (after.state, after.severity, after.priority) == (State.ACK, W, Priority.MEDIUM)


def test_latched_reactivation_stays_latching() -> None:
    """A latched alert that re-activates keeps its latch and returns to latched on Clear."""
    after = run(crit(latch=True), CLEAR, warn())
    assert after.latched
    assert after.activations == 2
    assert run(CLEAR, start=after).state is State.LATCHED


def test_reset_acknowledges_and_clears_the_latch() -> None:
    """Reset of an unacknowledged latched alert leaves it normal, acked and unlatched."""
    after = run(crit(latch=True), CLEAR, RESET)
    assert (after.state, after.latched, after.acked, after.severity) == (
        State.NORMAL,
        False,
        True,
        None,
    )


def test_shelve_records_reason_and_expiry_and_unshelve_clears_them() -> None:
    """Shelve stores its reason and until; Unshelve removes both."""
    shelved = run(warn(), SHELVE)
    assert (shelved.shelved_until_us, shelved.shelve_reason) == (
        T0 + HOUR_US,
        "sensor under repair",
    )
    back = run(UNSHELVE, start=shelved)
    assert (back.shelved_until_us, back.shelve_reason) == (None, "")


def test_reshelving_renews_the_shelf() -> None:
    """Shelving a shelved alert replaces its expiry and reason."""
    renew = Shelve(at_us=T0 + 10, actor="ani", reason="still broken", until_us=T0 + 2 * HOUR_US)
    after = run(SHELVE, renew)
    assert (after.shelved_until_us, after.shelve_reason) == (T0 + 2 * HOUR_US, "still broken")


def test_shelve_expired_before_its_time_changes_nothing() -> None:
    """ShelveExpired earlier than the shelf's end is a no-op, not an error."""
    before = run(SHELVE)
    transition = apply(before, ShelveExpired(at_us=T0 + HOUR_US - 1))
    assert not transition.changed


def test_shelve_expired_on_an_unshelved_alert_changes_nothing() -> None:
    """ShelveExpired on an alert that is not shelved is a no-op, not an error."""
    assert not apply(run(warn()), EXPIRED).changed


def test_remove_from_service_clears_a_shelf() -> None:
    """Removal from service drops the shelf, so return to service does not bring it back."""
    after = run(warn(), SHELVE, OOS, RTS)
    assert (after.state, after.shelved_until_us) == (State.UNACK, None)


def test_comment_is_journaled_without_change() -> None:
    """A Comment yields an unchanged transition that carries the event for the journal."""
    before = run(warn())
    transition = apply(before, NOTE)
    assert (transition.changed, transition.after, transition.event.reason) == (
        False,
        before,
        "crew informed",
    )


def test_transition_note_names_the_state_change_and_actor() -> None:
    """The note says from which state to which and who acted."""
    note = apply(run(warn()), ACK).note
    assert note.startswith("unack -> ack")
    assert "ani" in note


def test_inconsistent_state_is_refused_at_construction() -> None:
    """An AlertState whose state disagrees with its fields raises LifecycleError."""
    with pytest.raises(LifecycleError, match="inconsistent"):
        AlertState(state=State.ACK)


@pytest.mark.parametrize(
    ("state", "shown", "attention"),
    [
        (State.NORMAL, False, False),
        (State.UNACK, True, True),
        (State.ACK, True, False),
        (State.RTN_UNACK, True, True),
        (State.LATCHED, True, True),
        (State.SHELVED, False, False),
        (State.SUPPRESSED, False, False),
        (State.OUT_OF_SERVICE, False, False),
    ],
)
def test_annunciated_and_needs_attention(state: State, shown: bool, attention: bool) -> None:
    """Annunciated: unack, ack, rtn_unack, latched; needing attention: all of those but ack."""
    assert (annunciated(state), needs_attention(state)) == (shown, attention)


def test_expire_shelves_returns_only_due_shelves() -> None:
    """expire_shelves applies ShelveExpired to shelves ending at or before now, keyed."""
    later = Shelve(at_us=T0, actor="ani", reason="x", until_us=T0 + 2 * HOUR_US)
    states = {
        "due": run(warn(), SHELVE),
        "exact": run(SHELVE),
        "later": run(later),
        "plain": run(warn()),
    }
    result = expire_shelves(states, T0 + HOUR_US)
    assert [(k, t.after.state) for k, t in result] == [
        ("due", State.UNACK),
        ("exact", State.NORMAL),
    ]
    assert all(t.event == ShelveExpired(at_us=T0 + HOUR_US) for _, t in result)


# --- invariants ---------------------------------------------------------------------------

activates = st.builds(
    Activate,
    at_us=st.just(T0),
    severity=st.sampled_from(Severity),
    priority=st.sampled_from(Priority),
    latch=st.booleans(),
    value=st.floats(allow_nan=False),
    limit=st.floats(allow_nan=False),
)
engine_events = st.one_of(
    activates,
    st.just(CLEAR),
    st.just(SUPPRESS),
    st.just(UNSUPPRESS),
    st.just(ShelveExpired(at_us=T0)),
)
operator_events = st.sampled_from([ACK, RESET, SHELVE, UNSHELVE, OOS, RTS, NOTE, EXPIRED])


def hidden(state: AlertState) -> bool:
    return state.state in {State.SHELVED, State.SUPPRESSED, State.OUT_OF_SERVICE}


@given(st.lists(engine_events, max_size=40))
@example([warn(), SUPPRESS, UNSUPPRESS, CLEAR])
@example([warn(), SUPPRESS, CLEAR, UNSUPPRESS])
def test_engine_events_never_raise_and_end_consistent(events: list[Event]) -> None:
    """Any sequence of engine events applies and ends in the state its last condition implies."""
    state = AlertState()
    shown_unack = False  # an activation was annunciated and has not been hidden since
    for event in events:
        assert isinstance(event, ENGINE_EVENTS)
        state = apply(state, event).after
        if state.state is State.UNACK:
            shown_unack = True
        if hidden(state):
            shown_unack = False
    conditions = [e for e in events if isinstance(e, Activate | Clear)]
    assert state.condition_active == bool(conditions and isinstance(conditions[-1], Activate))
    if hidden(state):
        return
    if state.condition_active:
        assert state.state is State.UNACK  # no operator ever acknowledged
    elif state.latched:
        assert state.state is State.LATCHED
    elif shown_unack:
        assert state.state is State.RTN_UNACK  # an unacknowledged activation is never lost
    else:
        assert state.state is State.NORMAL


@given(st.lists(engine_events, max_size=20), st.lists(engine_events, max_size=20))
def test_shelve_then_expire_resumes_the_implied_state(
    before: list[Event], during: list[Event]
) -> None:
    """After a shelf expires the alert shows what its condition implies, not what it was."""
    state = run(*before, Unsuppress(at_us=T0))
    state = run(SHELVE, *during, Unsuppress(at_us=T0), EXPIRED, start=state)
    if state.condition_active:
        assert state.state is State.UNACK
    elif state.latched:
        assert state.state is State.LATCHED
    else:
        assert state.state is State.NORMAL


def checked(state: AlertState, event: Event) -> Transition | None:
    try:
        return apply(state, event)
    except LifecycleError:
        assert not isinstance(event, ENGINE_EVENTS)
        return None


@given(st.lists(st.one_of(engine_events, operator_events), max_size=60))
def test_latched_leaves_only_through_reset_or_reactivation(events: list[Event]) -> None:
    """The latch is only cleared by Reset; the latched state is left by Reset, re-activation
    or an overlay hiding it."""
    state = AlertState()
    for event in events:
        transition = checked(state, event)
        if transition is None:
            continue
        before, after = transition.before, transition.after
        if before.latched and not after.latched:
            assert isinstance(event, Reset)
        if before.state is State.LATCHED and after.state is not State.LATCHED:
            assert isinstance(event, Reset | Activate | Shelve | Suppress | RemoveFromService)
        assert transition.changed == (after != before)
        state = after
