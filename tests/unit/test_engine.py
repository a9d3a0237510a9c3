"""The streaming rule engine (`alerting.engine`): levels, delays and deadbands on event time,
rate/deviation/exposure/health rules, plant state, permits, escalation, chunking invariance,
redelivery and checkpoints.

Packs are built inline with `parse_pack`; times are seconds after `T0` in the helpers and
microseconds in the events.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.compliance import Compliance, Finding, Permit, Report
from alerting.engine import ConditionEvent, Engine, EngineError, EventKind, SensorInfo
from alerting.pack import Pack, Priority, Severity, default_pack_path, load_pack, parse_pack
from alerting.replay import Replayer

US = 1_000_000
T0 = 1_800_000_000 * US  # a multiple of every bucket width the engine uses (6 s, 10 s, 60 s)
HEAD = '[pack]\nname = "test"\nversion = "1"\neffective = 2026-01-01\n\n'
DEFAULT = load_pack(default_pack_path())

Row = tuple[int, float, float] | tuple[int, float, float, int]
Brief = tuple[float, str, str, str | None]


# -- helpers ---------------------------------------------------------------------------------


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(float(value)) if isinstance(value, float) else str(value)


def rule(
    rule_id: str,
    kind: str,
    kinds: Sequence[str] | None = None,
    *,
    warning: dict[str, object] | None = None,
    critical: dict[str, object] | None = None,
    **keys: object,
) -> str:
    """One [[rule]] table in TOML; levels get a priority and an [A] source by default."""
    lines = ["[[rule]]", f'id = "{rule_id}"', f'kind = "{kind}"', f'title = "{rule_id}"']
    if kinds is not None:
        lines.append(f"sensors = {{ kinds = {_toml(list(kinds))} }}")
    lines += [f"{k} = {_toml(v)}" for k, v in keys.items()]
    for name, lv in (("warning", warning), ("critical", critical)):
        if lv is None:
            continue
        full: dict[str, object] = {
            "priority": "medium" if name == "warning" else "high",
            "source": "[A] test",
        }
        full.update(lv)
        lines.append(f"[rule.{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in full.items()]
    return "\n".join(lines) + "\n\n"


def make_pack(*rules: str) -> Pack:
    """A pack of these rules with the default plant model."""
    return parse_pack(HEAD + "".join(rules))


def only(*rule_ids: str) -> Pack:
    """The shipped default pack narrowed to these rules."""
    rules = tuple(r for r in DEFAULT.rules if r.id in rule_ids)
    assert len(rules) == len(rule_ids)
    return replace(DEFAULT, rules=rules)


def sensor(
    key: int,
    kind: str,
    asset: str = "A1",
    period_s: float = 1.0,
    site: str = "s1",
    gateway: str = "g1",
) -> SensorInfo:
    """A registered sensor; its id is `<asset>.<kind>.<key>`."""
    return SensorInfo(key, site, gateway, f"{asset}.{kind}.{key}", kind, "u", period_s, asset)


def feed(engine: Engine, rows: Sequence[Row]) -> list[ConditionEvent]:
    """Process rows of (key, t seconds after T0, value[, quality]) as one batch."""
    keys = [r[0] for r in rows]
    ts = [T0 + round(r[1] * US) for r in rows]
    values = [r[2] for r in rows]
    qualities = [r[3] if len(r) > 3 else 0 for r in rows]
    return engine.process(keys, ts, values, qualities)


def brief(events: Sequence[ConditionEvent]) -> list[Brief]:
    """(seconds after T0, rule id, kind, severity) of each event."""
    return [
        ((e.at_us - T0) / US, e.rule_id, e.kind.value, e.severity.value if e.severity else None)
        for e in events
    ]


def series(
    key: int,
    values: Sequence[float] | npt.NDArray[np.float64],
    start: float = 0.0,
    step: float = 1.0,
) -> list[Row]:
    """Rows of one sensor sampled every `step` seconds from `start`."""
    return [(key, start + i * step, float(v)) for i, v in enumerate(values)]


def run_chunks(engine: Engine, rows: Sequence[Row], cuts: Sequence[int]) -> list[ConditionEvent]:
    """Feed rows cut at these indices, one batch per piece; return all events in order."""
    out: list[ConditionEvent] = []
    bounds = [0, *sorted(set(cuts)), len(rows)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            out += feed(engine, rows[a:b])
    return out


def start(pack: Pack, sensors: list[SensorInfo], rows: list[Row]) -> tuple[Engine, list[Row]]:
    """An engine that has seen the rows at the first timestamp; the rest of the rows."""
    engine = Engine(pack, sensors)
    n = sum(1 for r in rows if r[1] == rows[0][1])
    assert feed(engine, rows[:n]) == []
    return engine, rows[n:]


W = "warning"
C = "critical"
ACT, CLR, SUP, UNS = "activate", "clear", "suppress", "unsuppress"

CO_RULE = rule(
    "co",
    "threshold",
    ["area_co"],
    direction="high",
    deadband=2.0,
    off_delay_s=5.0,
    warning={"level": 25.0, "on_delay_s": 3.0},
    critical={"level": 50.0, "on_delay_s": 0.0},
)


# -- 1. threshold levels, deadband, on-delay and off-delay -----------------------------------


THRESHOLD_CASES = [
    pytest.param(
        {"deadband": 2.0, "off_delay_s": 5.0, "warning": {"level": 25.0, "on_delay_s": 3.0}},
        series(0, [10, 10, 30, 30, 30, 30, 30, 10, 10, 10, 10, 10, 10, 10]),
        [(5.0, "r", ACT, W), (12.0, "r", CLR, None)],
        id="on-delay 3 s from the first sample over, off-delay 5 s from the first under",
    ),
    pytest.param(
        {"warning": {"level": 25.0, "on_delay_s": 3.0}},
        [(0, 0.0, 30.0), (0, 2.5, 30.0), (0, 4.0, 30.0)],
        [(4.0, "r", ACT, W)],
        id="on-delay counts event time: fires at the first sample 3 s after, not at 3 s",
    ),
    pytest.param(
        {"warning": {"level": 25.0, "on_delay_s": 3.0}},
        series(0, [30, 30, 10, 30, 30, 30, 30]),
        [(6.0, "r", ACT, W)],
        id="a dip below the level restarts the on-delay",
    ),
    pytest.param(
        {"off_delay_s": 5.0, "warning": {"level": 25.0}},
        series(0, [30, 10, 10, 30, 10, 10, 10, 10, 10, 10]),
        [(0.0, "r", ACT, W), (9.0, "r", CLR, None)],
        id="off-delay: a short dip does not clear; the delay restarts after it",
    ),
    pytest.param(
        {"deadband": 2.0, "warning": {"level": 25.0}},
        series(0, [30, 24, 23.5, 23, 24, 25]),
        [(0.0, "r", ACT, W), (3.0, "r", CLR, None), (5.0, "r", ACT, W)],
        id="deadband: holds above level-deadband, clears at it; re-arms at the level itself",
    ),
    pytest.param(
        {
            "deadband": 2.0,
            "off_delay_s": 5.0,
            "warning": {"level": 25.0},
            "critical": {"level": 50.0},
        },
        series(0, [60, 45, 45, 45, 45, 45, 45, 10, 10, 10, 10, 10, 10]),
        [(0.0, "r", ACT, C), (6.0, "r", ACT, W), (12.0, "r", CLR, None)],
        id="critical de-escalates to warning after the off-delay, then clears",
    ),
    pytest.param(
        {"warning": {"level": 25.0}, "critical": {"level": 50.0, "on_delay_s": 2.0}},
        series(0, [30, 60, 60, 60]),
        [(0.0, "r", ACT, W), (3.0, "r", ACT, C)],
        id="warning escalates to critical after the critical's own on-delay",
    ),
    pytest.param(
        {"warning": {"level": 25.0, "on_delay_s": 5.0}, "critical": {"level": 50.0}},
        series(0, [60, 10]),
        [(0.0, "r", ACT, C), (1.0, "r", CLR, None)],
        id="a critical without on-delay fires at once even while the warning's runs",
    ),
]


@pytest.mark.parametrize(("keys", "rows", "expected"), THRESHOLD_CASES)
def test_threshold_sequences(keys: dict[str, Any], rows: list[Row], expected: list[Brief]) -> None:
    """A high threshold raises, escalates, de-escalates and clears at exact event times."""
    engine = Engine(
        make_pack(rule("r", "threshold", ["k"], direction="high", **keys)), [sensor(0, "k")]
    )
    assert brief(feed(engine, rows)) == expected


def test_low_direction_oxygen_deficiency() -> None:
    """A low rule (O2 deficiency) mirrors delays, escalation and the deadband above the level."""
    o2 = rule(
        "o2",
        "threshold",
        ["area_o2"],
        direction="low",
        deadband=0.3,
        off_delay_s=10.0,
        warning={"level": 19.5, "on_delay_s": 5.0},
        critical={"level": 18.0, "on_delay_s": 2.0},
    )
    engine = Engine(make_pack(o2), [sensor(0, "area_o2")])
    rows = (
        [(0, 0.0, 20.9)]
        + [(0, float(t), 19.0) for t in range(1, 9)]
        + [(0, 9.0, 17.5), (0, 10.0, 17.5), (0, 11.0, 17.5), (0, 12.0, 18.2)]
        + [(0, float(t), 18.4) for t in range(13, 24)]
        + [(0, 24.0, 19.7)]
        + [(0, float(t), 19.9) for t in range(25, 36)]
    )
    events = feed(engine, rows)
    assert brief(events) == [
        (6.0, "o2", ACT, W),
        (11.0, "o2", ACT, C),
        (23.0, "o2", ACT, W),
        (35.0, "o2", CLR, None),
    ]
    assert (events[0].value, events[0].limit) == (19.0, 19.5)
    assert events[0].reason.startswith("value 19 below")


def test_event_fields_carry_priority_latch_and_site() -> None:
    """An activation carries the level's priority, latch, limit and the sensor's site/asset."""
    engine = Engine(make_pack(CO_RULE), [sensor(0, "area_co", asset="AREA-1", site="x")])
    (ev,) = feed(engine, [(0, 0.0, 60.0)])
    assert ev.instance == ("x", "co", "AREA-1.area_co.0")
    assert (ev.asset, ev.severity, ev.priority, ev.latch) == (
        "AREA-1",
        Severity.CRITICAL,
        Priority.HIGH,
        True,
    )
    assert (ev.value, ev.limit, ev.escalated_by) == (60.0, 50.0, ())


# -- 2. properties: constant signals, deadband, up-crossings ---------------------------------


def _single_level(direction: str, level: float, deadband: float, on_s: float, off_s: float) -> Pack:
    return make_pack(
        rule(
            "r",
            "threshold",
            ["k"],
            direction=direction,
            deadband=deadband,
            off_delay_s=off_s,
            warning={"level": level, "on_delay_s": on_s},
        )
    )


levels = st.floats(-100, 100, allow_nan=False)
delays = st.sampled_from([0.0, 1.0, 2.5, 5.0])


@settings(max_examples=80, deadline=None)
@given(
    direction=st.sampled_from(["high", "low"]),
    level=levels,
    const=st.floats(-200, 200, allow_nan=False),
    deadband=st.floats(0, 5),
    on_s=delays,
    off_s=delays,
    n=st.integers(20, 60),
)
def test_constant_signal_alerts_only_past_the_level(
    direction: str, level: float, const: float, deadband: float, on_s: float, off_s: float, n: int
) -> None:
    """A constant signal never alerts, unless it is past the level: then once, never cleared."""
    engine = Engine(_single_level(direction, level, deadband, on_s, off_s), [sensor(0, "k")])
    events = feed(engine, series(0, [const] * n))
    past = const >= level if direction == "high" else const <= level
    assert [e.kind for e in events] == ([EventKind.ACTIVATE] if past else [])


@settings(max_examples=80, deadline=None)
@given(
    direction=st.sampled_from(["high", "low"]),
    level=levels,
    deadband=st.floats(0.1, 5),
    on_s=delays,
    off_s=delays,
    band=st.lists(st.floats(-0.99, 3.0), min_size=1, max_size=80),
)
def test_signal_inside_the_deadband_never_flaps(
    direction: str, level: float, deadband: float, on_s: float, off_s: float, band: list[float]
) -> None:
    """After activation, a signal that stays within the deadband of its level never clears."""
    sign = 1.0 if direction == "high" else -1.0
    engine = Engine(_single_level(direction, level, deadband, on_s, off_s), [sensor(0, "k")])
    values = [level + sign * deadband] * 10 + [level + sign * f * deadband for f in band]
    events = feed(engine, series(0, values))
    assert [e.kind for e in events] == [EventKind.ACTIVATE]


@settings(max_examples=80, deadline=None)
@given(
    direction=st.sampled_from(["high", "low"]),
    deadband=st.floats(0, 3),
    on_s=delays,
    off_s=delays,
    offsets=st.lists(st.floats(-5, 5), min_size=1, max_size=120),
)
def test_activations_never_exceed_up_crossings(
    direction: str, deadband: float, on_s: float, off_s: float, offsets: list[float]
) -> None:
    """Each activation needs its own crossing of the level from the normal side."""
    level = 10.0
    values = [level + o for o in offsets]
    engine = Engine(_single_level(direction, level, deadband, on_s, off_s), [sensor(0, "k")])
    past = [v >= level if direction == "high" else v <= level for v in values]
    crossings = sum(1 for i, p in enumerate(past) if p and (i == 0 or not past[i - 1]))
    events = feed(engine, series(0, values))
    activations = sum(1 for e in events if e.kind is EventKind.ACTIVATE)
    assert activations <= crossings
    kinds = [e.kind for e in events]
    assert all(a != b for a, b in itertools.pairwise(kinds))  # activate, clear, activate, ...


def test_value_exactly_at_the_level_with_no_deadband_does_not_chatter() -> None:
    """A constant reading exactly at the level of a rule without deadband activates once."""
    engine = Engine(_single_level("high", 0.0, 0.0, 0.0, 0.0), [sensor(0, "k")])
    assert brief(feed(engine, series(0, [0.0] * 4))) == [(0.0, "r", ACT, W)]


# -- 3. chunking invariance and determinism --------------------------------------------------


def _wave(n: int, seed: int, base: float, amp: float, noise: float) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return base + amp * np.sin(t / 23.0) * np.sin(t / 97.0) + rng.normal(0.0, noise, n)


def _merge(*rows: list[Row]) -> list[Row]:
    return sorted((r for rs in rows for r in rs), key=lambda r: (r[1], r[0]))


def scenario_threshold() -> tuple[Pack, list[SensorInfo], list[Row]]:
    """CO wandering across both levels of a rule with delays and a deadband."""
    return make_pack(CO_RULE), [sensor(0, "area_co")], series(0, _wave(600, 1, 30, 40, 3))


def scenario_rate() -> tuple[Pack, list[SensorInfo], list[Row]]:
    """Rise, fall and swing rules over a noisy signal with steps and a spike."""
    pack = make_pack(
        rule("rise", "rate", ["p"], measure="rise", window_s=10.0, per_s=10.0,
             deadband=0.3, off_delay_s=3.0, warning={"level": 1.0}, critical={"level": 2.0}),
        rule("fall", "rate", ["p"], measure="fall", window_s=10.0, per_s=10.0,
             deadband=0.3, off_delay_s=3.0, critical={"level": 2.0}),
        rule("swing", "rate", ["p"], measure="swing", window_s=5.0, deadband=0.5,
             warning={"level": 2.5, "on_delay_s": 1.0}),
    )  # fmt: skip
    v = _wave(500, 2, 12, 4, 0.2)
    v[200:210] -= np.linspace(0, 5, 10)
    v[210:] -= 5
    v[300] += 4
    return pack, [sensor(0, "p")], series(0, v)


def scenario_deviation() -> tuple[Pack, list[SensorInfo], list[Row]]:
    """A baseline rule (rise and abs) over a signal with steps after the warm-up."""
    pack = make_pack(
        rule("dev", "deviation", ["f"], measure="abs", baseline_s=120.0, warmup_s=30.0,
             deadband=0.5, off_delay_s=5.0, warning={"level": 3.0, "on_delay_s": 2.0},
             critical={"level": 6.0}),
        rule("devr", "deviation", ["f"], measure="fall", baseline_s=60.0, warmup_s=10.0,
             warning={"level": 2.0}),
    )  # fmt: skip
    v = _wave(600, 3, 50, 1, 0.3)
    v[100:180] += 4
    v[300:330] -= 8
    return pack, [sensor(0, "f")], series(0, v)


def scenario_exposure() -> tuple[Pack, list[SensorInfo], list[Row]]:
    """TWA and STEL rules over an irregularly sampled gas with a plume."""
    pack = make_pack(
        rule("twa", "exposure", ["area_h2s"], measure="twa_8h", deadband=0.05,
             off_delay_s=30.0, warning={"level": 0.5}, critical={"level": 1.0}),
        rule("stel", "exposure", ["area_h2s"], measure="stel_15min", deadband=0.25,
             off_delay_s=30.0, warning={"level": 2.5}, critical={"level": 5.0}),
    )  # fmt: skip
    rng = np.random.default_rng(4)
    # 4.5 h: an 8-h average is judged once half its window is covered.
    t = np.cumsum(rng.uniform(1.0, 9.0, 3300))
    v = np.clip(
        0.3 + 30.0 * np.exp(-(((t - 15_000) / 300) ** 2)) + rng.normal(0, 0.05, t.size), 0, None
    )
    return (
        pack,
        [sensor(0, "area_h2s", period_s=5.0)],
        [(0, float(a), float(b)) for a, b in zip(t, v, strict=True)],
    )


def scenario_health() -> tuple[Pack, list[SensorInfo], list[Row]]:
    """Stale and stuck rules over two sensors: one goes silent twice, one freezes."""
    pack = make_pack(
        rule("stale", "stale", ["g"], warning={"level": 5.0, "periods": 3.0}),
        rule("stuck", "stuck", ["g"], window_s=60.0, warning={"level": 0.01}),
    )
    a = _wave(700, 5, 10, 1, 0.2)
    a[250:450] = 10.2
    rows_a = [r for r in series(0, a) if not (100 <= r[1] < 130 or 500 <= r[1] < 507)]
    rows_b = series(1, _wave(700, 6, 20, 1, 0.2))
    return pack, [sensor(0, "g"), sensor(1, "g")], _merge(rows_a, rows_b)


def scenario_derived() -> tuple[Pack, list[SensorInfo], list[Row]]:
    """Panel ΔT and flow imbalance derived from supply/return pairs on one asset."""
    pack = make_pack(
        rule("dt", "threshold", ["panel_dt"], direction="high", deadband=1.0, off_delay_s=5.0,
             warning={"level": 10.0, "on_delay_s": 3.0}, critical={"level": 15.0}),
        rule("imb", "threshold", ["cw_imbalance"], direction="high", deadband=0.5,
             warning={"level": 2.0, "on_delay_s": 5.0}),
        rule("dtr", "rate", ["panel_dt"], measure="rise", window_s=30.0, per_s=60.0,
             warning={"level": 5.0}),
    )  # fmt: skip
    sensors = [
        sensor(0, "cw_supply_temp", "P1"),
        sensor(1, "cw_return_temp", "P1"),
        sensor(2, "cw_supply_flow", "P1"),
        sensor(3, "cw_return_flow", "P1"),
    ]
    n = 400
    sup_t = _wave(n, 7, 30, 1, 0.1)
    dt = _wave(n, 8, 6, 2, 0.2)
    dt[150:250] += 8
    sup_f = _wave(n, 9, 60, 3, 0.2)
    ret_f = sup_f * (1 - np.where((np.arange(n) > 200) & (np.arange(n) < 320), 0.04, 0.002))
    return (
        pack,
        sensors,
        _merge(series(0, sup_t), series(1, sup_t + dt), series(2, sup_f), series(3, ret_f)),
    )


SCENARIOS = {
    "threshold": scenario_threshold,
    "rate": scenario_rate,
    "deviation": scenario_deviation,
    "exposure": scenario_exposure,
    "health": scenario_health,
    "derived": scenario_derived,
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_raise_something(name: str) -> None:
    """Each invariance scenario exercises its rules: it raises and clears at least once."""
    pack, sensors, rows = SCENARIOS[name]()
    engine, rows = start(pack, sensors, rows)
    events = feed(engine, rows)
    kinds = {e.kind for e in events}
    assert {EventKind.ACTIVATE, EventKind.CLEAR} <= kinds
    assert {e.rule_id for e in events} == {r.id for r in pack.rules}
    assert [e.at_us for e in events] == sorted(e.at_us for e in events)


@pytest.mark.parametrize("name", SCENARIOS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_chunking_does_not_change_events(name: str, data: st.DataObject) -> None:
    """The same readings in one call or cut into random batches give identical events."""
    pack, sensors, rows = SCENARIOS[name]()
    engine, rest = start(pack, sensors, rows)
    whole = feed(engine, rest)
    cuts = data.draw(st.lists(st.integers(1, len(rest) - 1), max_size=12), label="cuts")
    engine, rest = start(pack, sensors, rows)
    assert run_chunks(engine, rest, cuts) == whole


@pytest.mark.parametrize("name", SCENARIOS)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_order_within_a_batch_does_not_matter(name: str, seed: int) -> None:
    """Readings of several sensors in any order within a call give the events of sorted ones."""
    pack, sensors, rows = SCENARIOS[name]()
    engine, rest = start(pack, sensors, rows)
    expected = feed(engine, rest)
    engine, rest = start(pack, sensors, rows)
    shuffled = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))]
    assert feed(engine, shuffled) == expected


def test_duplicate_timestamp_inside_a_batch_is_skipped_like_across_batches() -> None:
    """A second reading at an already-seen timestamp is ignored, in the same batch or the next."""
    pack = make_pack(rule("r", "threshold", ["k"], direction="high", warning={"level": 25.0}))
    rows: list[Row] = [(0, 0.0, 30.0), (0, 0.0, 10.0)]
    one = feed(Engine(pack, [sensor(0, "k")]), rows)
    two = run_chunks(Engine(pack, [sensor(0, "k")]), rows, [1])
    assert one == two


# -- 4. redelivery ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_redelivered_batch_raises_nothing(name: str) -> None:
    """A batch delivered twice raises nothing the second time, and its readings count skipped."""
    pack, sensors, all_rows = SCENARIOS[name]()
    engine, rows = start(pack, sensors, all_rows)
    half = len(rows) // 2
    first = feed(engine, rows[:half])
    assert feed(engine, rows[:half]) == []
    assert engine.skipped == half
    # An overlapping batch: the old part is skipped, the new part gives the uninterrupted events.
    rest = feed(engine, rows[:half] + rows[half:])
    assert engine.skipped == 2 * half
    engine, rows = start(pack, sensors, all_rows)
    assert first + rest == feed(engine, rows)


def test_redelivered_bad_batch_is_skipped() -> None:
    """A redelivered batch of bad readings is skipped like any other."""
    pack = make_pack(rule("q", "quality", ["k"], warning={}))
    engine = Engine(pack, [sensor(0, "k")])
    rows: list[Row] = [(0, float(t), 0.0, 2) for t in range(5)]
    feed(engine, rows)
    assert feed(engine, rows) == []
    assert engine.skipped == 5


# -- 5. rate rules ---------------------------------------------------------------------------


def test_rise_per_hour_over_a_window() -> None:
    """A rise rule compares with the sample a window back and scales to the unit per hour."""
    pack = make_pack(
        rule("tc", "rate", ["hearth_tc"], measure="rise", window_s=600.0, per_s=3600.0,
             deadband=2.0, warning={"level": 20.0}, critical={"level": 50.0}),
    )  # fmt: skip
    engine = Engine(pack, [sensor(0, "hearth_tc", "F1", period_s=10.0)])
    # 300 °C, then +60 °C/h from t = 705 s (between samples); samples every 10 s.
    rows = [(0, float(t), 300.0 + max(0.0, t - 705) * 60 / 3600) for t in range(0, 1300, 10)]
    events = feed(engine, rows)
    assert brief(events) == [(910.0, "tc", ACT, W), (1210.0, "tc", ACT, C)]
    assert events[0].value == pytest.approx(20.5)
    assert events[1].value == pytest.approx(50.5)


O2_DROP = only("o2line.drop")


@pytest.mark.parametrize(
    ("drop_bar_per_s", "expected"),
    [
        pytest.param(0.3, [(107.0, "o2line.drop", ACT, C)], id="3 bar in 10 s fires"),
        pytest.param(0.1, [], id="1 bar in 10 s does not"),
        pytest.param(0.19, [], id="1.9 bar in 10 s does not"),
    ],
)
def test_oxygen_line_drop(drop_bar_per_s: float, expected: list[Brief]) -> None:
    """The O2 line rule fires on a drop of more than 2 bar in 10 s, not on a slower decline."""
    engine = Engine(O2_DROP, [sensor(0, "o2_line_pressure", "O2")])
    rows = [(0, float(t), 14.0 - drop_bar_per_s * max(0, t - 100)) for t in range(140)]
    rows = [(k, t, max(v, 2.0)) for k, t, v in rows]
    assert brief(feed(engine, rows))[:1] == expected


def test_swing_within_five_seconds() -> None:
    """A swing rule fires on max - min within its window and clears when the spike leaves it."""
    pack = make_pack(
        rule("sw", "rate", ["freeboard_pressure"], measure="swing", window_s=5.0,
             critical={"level": 100.0}),
    )  # fmt: skip
    engine = Engine(pack, [sensor(0, "freeboard_pressure", "F1")])
    values = [-10.0] * 100
    values[50] = 95.0  # a swing of 105 Pa
    values[80] = 85.0  # 95 Pa: below the level
    assert brief(feed(engine, series(0, values))) == [(50.0, "sw", ACT, C), (55.0, "sw", CLR, None)]


# -- 6. deviation from the own baseline ------------------------------------------------------


DEV = rule(
    "dev",
    "deviation",
    ["f"],
    measure="rise",
    baseline_s=600.0,
    warmup_s=100.0,
    deadband=0.5,
    warning={"level": 3.0},
)


def test_deviation_step_fires_and_baseline_does_not_learn_the_fault() -> None:
    """A step of +4 over the baseline fires and stays active however long it lasts."""
    engine = Engine(make_pack(DEV), [sensor(0, "f")])
    values = [10.0] * 200 + [14.0] * 3000 + [10.0] * 5
    events = feed(engine, series(0, values))
    assert brief(events) == [(200.0, "dev", ACT, W), (3200.0, "dev", CLR, None)]
    assert events[0].limit == pytest.approx(13.0)


def test_deviation_warmup_suppresses_early_evaluation() -> None:
    """No deviation is judged before the warm-up has passed; after it a step fires."""
    engine = Engine(make_pack(DEV), [sensor(0, "f")])
    values = [10.0] * 10 + [20.0] * 40 + [10.0] * 200 + [14.0] * 5
    assert brief(feed(engine, series(0, values))) == [(250.0, "dev", ACT, W)]


def test_deviation_fall_limit_is_below_baseline() -> None:
    """A fall rule fires on a drop below the baseline and reports baseline - level as limit."""
    pack = make_pack(
        rule("f", "deviation", ["f"], measure="fall", baseline_s=600.0, warmup_s=10.0,
             warning={"level": 3.0}),
    )  # fmt: skip
    events = feed(Engine(pack, [sensor(0, "f")]), series(0, [10.0] * 20 + [6.0]))
    assert brief(events) == [(20.0, "f", ACT, W)]
    assert events[0].limit == pytest.approx(7.0)


# -- 7. exposure through the engine ----------------------------------------------------------


CO_TWA = only("gas.co.twa")


def test_steady_co_raises_the_twa_rule_at_critical() -> None:
    """CO steady at 30 ppm raises the NAB (25 ppm) TWA rule at critical, value 30 ppm, as
    soon as half of the 8-h window is covered (4 h), not after a few seconds."""
    engine = Engine(CO_TWA, [sensor(0, "area_co", "AREA-1", period_s=2.0)])
    events = feed(engine, series(0, [30.0] * 7300, step=2.0))
    assert len(events) == 1
    (ev,) = events
    assert (ev.rule_id, ev.kind, ev.severity) == (
        "gas.co.twa",
        EventKind.ACTIVATE,
        Severity.CRITICAL,
    )
    assert ev.value == pytest.approx(30.0)
    assert ev.limit == 25.0
    # An 8-h average is judged each minute: the first judgement with 4 h covered is at the
    # last reading of the minute after 4 h (14,458 s).
    assert ev.at_us == T0 + 14_458 * US


@pytest.mark.parametrize(
    ("high_hold_s", "expected"),
    [
        pytest.param(1, [], id="40 ppm held 1 s in 10: TWA 4 ppm, no alert"),
        pytest.param(9, [(C, 36.0)], id="40 ppm held 9 s in 10: TWA -> 36 ppm, critical"),
    ],
)
def test_twa_is_time_weighted_on_event_time(
    high_hold_s: int, expected: list[tuple[str, float]]
) -> None:
    """With irregular sampling the TWA weights each value by how long it held, not by count."""
    engine = Engine(CO_TWA, [sensor(0, "area_co", "AREA-1", period_s=5.0)])
    warm = series(0, [0.0] * 300, step=2.0)  # 10 min clean air first
    rows = list(warm)
    for k in range(60, 60 + 2000):
        rows.append((0, k * 10.0, 40.0))
        rows.append((0, k * 10.0 + high_hold_s, 0.0))
    events = feed(engine, rows)
    if not expected:
        assert events == []
        return
    # The arithmetic mean of the samples is 20 ppm in both cases: only time weights tell them
    # apart (12.5 warning, 25 critical). Judged first with 4 h covered, both levels are past.
    assert [(e.kind, e.severity) for e in events] == [(EventKind.ACTIVATE, Severity.CRITICAL)]
    assert events[0].value == pytest.approx(36.0 * (14_400 - 600) / 14_400, rel=0.01)


# -- 8. health: stale, stuck, quality, gateway -----------------------------------------------


STALE = rule("stale", "stale", ["g"], warning={"level": 5.0, "periods": 3.0})


@pytest.mark.parametrize(
    ("period_s", "limit_s"),
    [pytest.param(1.0, 5.0, id="level dominates"), pytest.param(2.0, 6.0, id="periods dominate")],
)
def test_stale_against_gateway_time(period_s: float, limit_s: float) -> None:
    """Silence longer than max(level, periods x period) against the latest event time of the
    sensor's gateway activates at last reading + limit; a reading clears it."""
    engine = Engine(make_pack(STALE), [sensor(0, "g", period_s=period_s), sensor(1, "g")])
    a = series(0, [1.0] * 6, step=period_s)  # last at 5 periods
    last = 5 * period_s
    b = series(1, [1.0] * 40)
    events = feed(engine, _merge(a, b))
    assert brief(events) == [(last + limit_s, "stale", ACT, W)]
    assert events[0].subject == "A1.g.0"
    again = [(1, 40.0, 1.0), (0, 45.0, 1.0), (1, 45.0, 1.0)]
    assert brief(feed(engine, again)) == [(45.0, "stale", CLR, None)]


def test_stale_inside_one_batch_and_other_site() -> None:
    """A gap inside a batch activates and clears; another site's time never makes one stale."""
    engine = Engine(make_pack(STALE), [sensor(0, "g"), sensor(1, "g", site="s2"), sensor(2, "g")])
    assert feed(engine, [(0, 0.0, 1.0), (1, 0.0, 1.0), (2, 0.0, 1.0)]) == []
    # Site s2 runs on to 59 s; site s1's latest time is 3 s: nothing in s1 is stale.
    assert feed(engine, _merge([(0, 2.0, 1.0), (2, 3.0, 1.0)], series(1, [1.0] * 59, 1.0))) == []
    # Sensor 0 reports again at 20 s after a gap (inside its batch); sensor 2 stays silent.
    events = feed(engine, [(0, 20.0, 1.0)])
    assert [(b[0], e.subject, b[2]) for b, e in zip(brief(events), events, strict=True)] == [
        (7.0, "A1.g.0", ACT),
        (8.0, "A1.g.2", ACT),
        (20.0, "A1.g.0", CLR),
    ]


def test_gap_inside_the_first_batch_is_stale() -> None:
    """A silence inside a sensor's very first batch raises the stale rule like any other."""
    engine = Engine(make_pack(STALE), [sensor(0, "g")])
    assert brief(feed(engine, [(0, 0.0, 1.0), (0, 20.0, 1.0)])) == [
        (5.0, "stale", ACT, W),
        (20.0, "stale", CLR, None),
    ]


def test_stale_rule_with_two_levels_escalates() -> None:
    """A stale rule with a warning and a critical silence raises warning, then critical, once."""
    pack = make_pack(
        rule("stale", "stale", ["g"], warning={"level": 5.0}, critical={"level": 20.0})
    )
    engine = Engine(pack, [sensor(0, "g"), sensor(1, "g")])
    rows = _merge([(0, 0.0, 1.0)], series(1, [1.0] * 30))
    assert brief(feed(engine, rows)) == [(5.0, "stale", ACT, W), (20.0, "stale", ACT, C)]
    assert brief(feed(engine, [(0, 31.0, 1.0)])) == [(31.0, "stale", CLR, None)]


def test_bad_readings_do_not_make_stale_chatter() -> None:
    """A sensor reporting bad readings every second raises at most one stale activation."""
    pack = make_pack(STALE, rule("q", "quality", ["g"], warning={}))
    engine = Engine(pack, [sensor(0, "g")])
    events = feed(engine, [(0, 0.0, 1.0)])
    for start in range(1, 60, 10):
        events += feed(engine, [(0, float(t), 0.0, 2) for t in range(start, start + 10)])
    stale = [e for e in events if e.rule_id == "stale" and e.kind is EventKind.ACTIVATE]
    assert len(stale) <= 1


def test_stuck_value_for_a_full_window() -> None:
    """A value constant over a full stuck window activates at the window's end and clears when
    it moves again."""
    pack = make_pack(rule("stuck", "stuck", ["g"], window_s=60.0, warning={"level": 0.01}))
    engine = Engine(pack, [sensor(0, "g")])
    values = [10.0 + 0.5 * (t % 2) for t in range(120)] + [10.2] * 180
    values += [10.0 + 0.5 * (t % 2) for t in range(60)]
    assert brief(feed(engine, series(0, values))) == [
        (180.0, "stuck", ACT, W),
        (306.0, "stuck", CLR, None),
    ]


def test_two_stuck_rules_use_their_own_windows() -> None:
    """Two stuck rules on one sensor each judge their own window."""
    pack = make_pack(
        rule("long", "stuck", ["g"], window_s=600.0, warning={"level": 0.01}),
        rule("short", "stuck", ["g"], window_s=60.0, warning={"level": 0.01}),
    )
    engine = Engine(pack, [sensor(0, "g")])
    values = [10.0 + 0.5 * (t % 2) for t in range(600)] + [10.2] * 120
    events = feed(engine, series(0, values))
    assert [(b[1], b[2]) for b in brief(events)] == [("short", ACT)]


GAS_Q = make_pack(
    rule("co", "threshold", ["area_co"], direction="high", warning={"level": 25.0}),
    rule("q", "quality", ["area_co"], warning={}),
)


def test_bad_quality_suppresses_and_never_clears_a_gas_alert() -> None:
    """Bad readings raise the quality rule, suppress the gas rule and never clear it; good
    readings clear the quality rule and unsuppress; only a good low reading clears the gas."""
    engine = Engine(GAS_Q, [sensor(0, "area_co")])
    rows: list[Row] = [(0, 0.0, 30.0), (0, 1.0, 30.0)]
    rows += [(0, float(t), 0.0, 2) for t in range(2, 8)]
    rows += [(0, 8.0, 30.0), (0, 9.0, 10.0)]
    assert brief(feed(engine, rows)) == [
        (0.0, "co", ACT, W),
        (2.0, "co", SUP, None),
        (2.0, "q", ACT, W),
        (8.0, "co", UNS, None),
        (8.0, "q", CLR, None),
        (9.0, "co", CLR, None),
    ]


def test_bad_quality_split_across_batches() -> None:
    """Across batches too, bad readings never clear the gas alert while the sensor is bad."""
    engine = Engine(GAS_Q, [sensor(0, "area_co")])
    events = feed(engine, [(0, 0.0, 30.0)])
    for t in range(1, 6):
        events += feed(engine, [(0, float(t), 0.0, 2)])
    assert [e for e in events if e.rule_id == "co" and e.kind is EventKind.CLEAR] == []
    assert brief(events) == [(0.0, "co", ACT, W), (1.0, "co", SUP, None), (1.0, "q", ACT, W)]


def test_good_reading_before_a_bad_one_in_the_same_batch_counts() -> None:
    """A good reading over the gas level raises the alert even if a bad reading follows it in the
    same batch."""
    rows: list[Row] = [(0, 0.0, 10.0), (0, 1.0, 30.0), (0, 2.0, 0.0, 2)]
    one = feed(Engine(GAS_Q, [sensor(0, "area_co")]), rows)
    split = run_chunks(Engine(GAS_Q, [sensor(0, "area_co")]), rows, [2])
    assert (1.0, "co", ACT, W) in brief(split)
    assert one == split


GW = make_pack(rule("gw", "gateway", warning={}))


def test_gateway_offline_and_online() -> None:
    """A gateway status offline raises the gateway rule at its time; online clears it; a repeated
    status changes nothing."""
    engine = Engine(GW, [sensor(0, "g")])
    events = engine.process([], [], [], [], statuses=[("s1", "g1", False, T0 + 100 * US)])
    assert brief(events) == [(100.0, "gw", ACT, W)]
    assert (events[0].asset, events[0].subject) == ("g1", "g1")
    assert engine.process([], [], [], [], statuses=[("s1", "g1", False, T0 + 110 * US)]) == []
    events = engine.process([], [], [], [], statuses=[("s1", "g1", True, T0 + 200 * US)])
    assert brief(events) == [(200.0, "gw", CLR, None)]


def test_gateway_on_delay_rides_through_a_short_outage() -> None:
    """An offline status followed by online within the rule's on-delay raises nothing."""
    engine = Engine(only("health.gateway"), [sensor(0, "g")])
    statuses = [("s1", "g1", False, T0 + 100 * US), ("s1", "g1", True, T0 + 103 * US)]
    assert engine.process([], [], [], [], statuses=statuses) == []


def test_gateway_outage_longer_than_the_on_delay_is_raised_however_batched() -> None:
    """Offline for 2 min then online: raised at offline + on-delay and cleared at online,
    whether both statuses come in one batch or in two."""
    statuses = [("s1", "g1", False, T0 + 100 * US), ("s1", "g1", True, T0 + 220 * US)]
    one = Engine(only("health.gateway"), [sensor(0, "g")])
    together = one.process([], [], [], [], statuses=statuses)
    two = Engine(only("health.gateway"), [sensor(0, "g")])
    split = two.process([], [], [], [], statuses=statuses[:1])
    split += two.process([], [], [], [], statuses=statuses[1:])
    assert [(e.kind, e.at_us) for e in together] == [
        (EventKind.ACTIVATE, T0 + 110 * US),
        (EventKind.CLEAR, T0 + 220 * US),
    ]
    assert together == split


def test_redelivered_gateway_status_raises_nothing() -> None:
    """A status older than the last one applied for that gateway changes nothing."""
    engine = Engine(GW, [sensor(0, "g")])
    off = [("s1", "g1", False, T0 + 100 * US)]
    engine.process([], [], [], [], statuses=off)
    engine.process([], [], [], [], statuses=[("s1", "g1", True, T0 + 200 * US)])
    assert engine.process([], [], [], [], statuses=off) == []


def test_imbalance_with_zero_supply_flow_is_quiet() -> None:
    """A stopped circuit (supply and return flow 0) gives imbalance 0, no alert and no warning."""
    pack = make_pack(
        rule("imb", "threshold", ["cw_imbalance"], direction="high", warning={"level": 2.0})
    )
    engine = Engine(pack, [sensor(0, "cw_supply_flow", "P1"), sensor(1, "cw_return_flow", "P1")])
    rows = _merge(series(0, [0.0] * 10), series(1, [0.0] * 5 + [3.0] * 5))
    assert feed(engine, rows) == []


def test_derived_pairs_need_equal_timestamps_on_one_asset() -> None:
    """Panel ΔT pairs supply and return of one asset at equal timestamps only."""
    pack = make_pack(
        rule("dt", "threshold", ["panel_dt"], direction="high", warning={"level": 10.0})
    )
    sensors = [
        sensor(0, "cw_supply_temp", "P1"),
        sensor(1, "cw_return_temp", "P1"),
        sensor(2, "cw_return_temp", "P2"),
    ]
    engine = Engine(pack, sensors)
    rows: list[Row] = [
        (0, 0.0, 30.0),
        (1, 0.5, 45.0),
        (2, 0.0, 45.0),
        (0, 1.0, 30.0),
        (1, 1.0, 45.0),
    ]
    events = feed(engine, rows)
    assert brief(events) == [(1.0, "dt", ACT, W)]
    assert (events[0].subject, events[0].value) == ("P1.panel_dt", 15.0)


# -- 9. plant state and permits --------------------------------------------------------------


FB = make_pack(
    rule("fb", "threshold", ["freeboard_pressure"], when="energised", direction="high",
         warning={"level": 0.0}),
)  # fmt: skip
FB_SENSORS = [sensor(0, "furnace_power", "F1"), sensor(1, "freeboard_pressure", "F1")]


def test_active_energised_rule_is_suppressed_when_the_furnace_goes_off() -> None:
    """An active 'energised' rule is recorded suppressed when the furnace goes off, and
    unsuppressed when it comes back on."""
    engine = Engine(FB, FB_SENSORS)
    assert brief(feed(engine, [(0, 0.0, 50.0), (1, 0.0, 10.0)])) == [(0.0, "fb", ACT, W)]
    assert brief(feed(engine, [(0, 10.0, 0.0), (1, 10.0, 10.0)])) == [(10.0, "fb", SUP, None)]
    assert brief(feed(engine, [(0, 20.0, 50.0), (1, 20.0, 10.0)])) == [(20.0, "fb", UNS, None)]


def test_activation_while_off_is_suppressed_first() -> None:
    """An 'energised' rule activating while the furnace is off records SUPPRESS, then ACTIVATE."""
    engine = Engine(FB, FB_SENSORS)
    events = feed(engine, [(0, 0.0, 1.0), (1, 0.0, 10.0)])
    assert brief(events) == [(0.0, "fb", SUP, None), (0.0, "fb", ACT, W)]


def test_other_furnace_does_not_gate() -> None:
    """Furnace F2's power does not gate a rule on F1's freeboard pressure."""
    engine = Engine(FB, [*FB_SENSORS, sensor(2, "furnace_power", "F2")])
    events = feed(engine, [(0, 0.0, 0.0), (2, 0.0, 50.0), (1, 0.0, 10.0)])
    assert brief(events) == [(0.0, "fb", SUP, None), (0.0, "fb", ACT, W)]


def test_plant_state_does_not_depend_on_batching() -> None:
    """A rule activated while the furnace was energised gives the same events whatever the batch
    boundaries around the later furnace stop."""
    rows = _merge(
        series(0, [50.0] * 10 + [0.0] * 10),
        series(1, [-10.0] * 5 + [10.0] * 15),
    )
    one = feed(Engine(FB, FB_SENSORS), rows)
    split = run_chunks(Engine(FB, FB_SENSORS), rows, [12])
    assert one == split


HOT = make_pack(
    rule("hot", "threshold", ["hearth_tc"], requires_permit=True, direction="high",
         warning={"level": 300.0}),
)  # fmt: skip


def _permit(asset: str = "F1", opened: float = 100.0, closed: float | None = 200.0) -> Permit:
    return Permit(
        "s1",
        asset,
        ("F1-TAP",),
        T0 + round(opened * US),
        None if closed is None else T0 + round(closed * US),
    )


@pytest.mark.parametrize(
    ("permits", "expected"),
    [
        pytest.param((), [], id="no permit: never fires"),
        pytest.param(
            (_permit(),), [(100.0, "hot", ACT, W), (200.0, "hot", CLR, None)], id="within permit"
        ),
        pytest.param((_permit("F2"),), [], id="a permit for another furnace"),
    ],
)
def test_requires_permit_fires_only_while_a_permit_covers_the_asset(
    permits: tuple[Permit, ...], expected: list[Brief]
) -> None:
    """A permit rule fires only while a permit covering the asset is open at the reading's time."""
    engine = Engine(HOT, [sensor(0, "hearth_tc", "F1", 10.0)], Compliance(permits=permits))
    assert brief(feed(engine, series(0, [400.0] * 30, step=10.0))) == expected


def test_permit_covers_listed_areas() -> None:
    """A permit on F1 also covers the work areas it lists."""
    engine = Engine(HOT, [sensor(0, "hearth_tc", "F1-TAP", 10.0)], Compliance(permits=(_permit(),)))
    assert brief(feed(engine, series(0, [400.0] * 15, step=10.0))) == [(100.0, "hot", ACT, W)]


def test_set_compliance_updates_permits() -> None:
    """A permit added with set_compliance takes effect for the readings after it."""
    engine = Engine(HOT, [sensor(0, "hearth_tc", "F1", 10.0)])
    assert feed(engine, series(0, [400.0] * 5, step=10.0)) == []
    engine.set_compliance(Compliance(permits=(_permit(opened=0.0, closed=None),)))
    assert brief(feed(engine, [(0, 50.0, 400.0)])) == [(50.0, "hot", ACT, W)]


def test_permit_withdrawn_while_active_clears() -> None:
    """A hot-work alert clears when the permit is withdrawn and the value drops."""
    engine = Engine(HOT, [sensor(0, "hearth_tc", "F1", 10.0)])
    engine.set_compliance(Compliance(permits=(_permit(opened=0.0, closed=None),)))
    assert brief(feed(engine, [(0, 0.0, 400.0)])) == [(0.0, "hot", ACT, W)]
    engine.set_compliance(Compliance())
    assert brief(feed(engine, [(0, 10.0, 20.0)])) == [(10.0, "hot", CLR, None)]


@pytest.mark.parametrize("kind", ["deviation", "exposure"])
def test_requires_permit_is_honoured_by_every_kind(kind: str) -> None:
    """A deviation or exposure rule with requires_permit fires nothing without a permit."""
    keys: dict[str, Any] = (
        {"measure": "rise", "baseline_s": 600.0, "warmup_s": 10.0}
        if kind == "deviation"
        else {"measure": "stel_15min"}
    )
    pack = make_pack(
        rule("r", kind, ["area_co"], requires_permit=True, warning={"level": 3.0}, **keys)
    )
    engine = Engine(pack, [sensor(0, "area_co")])
    assert feed(engine, series(0, [10.0] * 30 + [20.0] * 30)) == []


# -- 10. escalation by the compliance record -------------------------------------------------


@pytest.mark.parametrize(
    ("compliance", "why"),
    [
        pytest.param(
            Compliance(findings=(Finding("s1", "A1", T0),)),
            "open inspection finding on A1",
            id="finding",
        ),
        pytest.param(Compliance(smk3_expires_us={"s1": T0}), "SMK3 certificate expired", id="smk3"),
        pytest.param(
            Compliance(reports=(Report("s1", "2026-Q1", T0),)),
            "periodic report late: 2026-Q1",
            id="late report",
        ),
    ],
)
def test_escalation_raises_priority_one_level(compliance: Compliance, why: str) -> None:
    """An open finding on the asset, an expired SMK3 or a late report raise priority by one."""
    engine = Engine(make_pack(CO_RULE), [sensor(0, "area_co")], compliance)
    (ev,) = feed(engine, [(0, 10.0, 60.0)])
    assert (ev.priority, ev.escalated_by) == (Priority.URGENT, (why,))


def test_escalation_is_per_asset_and_time() -> None:
    """A finding on another asset, or one closed before the event, does not escalate."""
    compliance = Compliance(
        findings=(Finding("s1", "B2", T0), Finding("s1", "A1", T0, T0 + 5 * US))
    )
    engine = Engine(make_pack(CO_RULE), [sensor(0, "area_co")], compliance)
    (ev,) = feed(engine, [(0, 10.0, 60.0)])
    assert (ev.priority, ev.escalated_by) == (Priority.HIGH, ())


# -- 11. state: dump and load ----------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_state_round_trip_mid_stream(name: str) -> None:
    """An engine restored from a mid-stream checkpoint gives exactly the uninterrupted events."""
    pack, sensors, all_rows = SCENARIOS[name]()
    engine, rows = start(pack, sensors, all_rows)
    half = len(rows) // 2
    whole = feed(engine, rows)
    first, rows = start(pack, sensors, all_rows)
    before = feed(first, rows[:half])
    resumed = Engine(pack, sensors)
    resumed.load_state(first.dump_state())
    assert before + feed(resumed, rows[half:]) == whole


def test_state_round_trip_keeps_the_8h_twa_window() -> None:
    """The 8-h TWA window survives a checkpoint: the NAB crossing comes at the same time."""
    sensors = [sensor(0, "area_co", "AREA-1", period_s=60.0)]
    values = [20.0] * (5 * 60) + [40.0] * (5 * 60)  # 5 h at 20 ppm, then 40 ppm; 1 per minute
    rows = series(0, values, step=60.0)
    whole = feed(Engine(CO_TWA, sensors), rows)
    assert [e.severity for e in whole] == [Severity.WARNING, Severity.CRITICAL]
    # 20 ppm for 5 h, then 40 ppm: the covered-time mean reaches 25 ppm 1 h 40 min later.
    assert whole[1].at_us == pytest.approx(T0 + (5 + 5 / 3) * 3600 * US, abs=120 * US)
    first = Engine(CO_TWA, sensors)
    before = feed(first, rows[: 5 * 60])
    resumed = Engine(CO_TWA, sensors)
    resumed.load_state(first.dump_state())
    assert before + feed(resumed, rows[5 * 60 :]) == whole
    # Without the window, 40 ppm alone reads 40: the restore really carried the 5 h at 20.
    fresh = feed(Engine(CO_TWA, sensors), rows[5 * 60 :])
    assert fresh[0].severity is Severity.CRITICAL
    assert fresh[0].value == pytest.approx(40.0)
    assert whole[1].value == pytest.approx(25.0, abs=0.5)


@pytest.mark.parametrize(
    "blob_of",
    [
        pytest.param(
            lambda e: Engine(make_pack(STALE), [sensor(0, "g")]).dump_state(), id="other pack"
        ),
        pytest.param(lambda e: b"not a checkpoint", id="corrupt"),
        pytest.param(lambda e: e.dump_state()[:-5], id="truncated"),
    ],
)
def test_load_state_refuses_foreign_state(blob_of: object) -> None:
    """load_state refuses another pack's state and unreadable blobs with EngineError."""
    engine = Engine(make_pack(CO_RULE), [sensor(0, "area_co")])
    blob = blob_of(engine)  # type: ignore[operator]
    with pytest.raises(EngineError):
        engine.load_state(blob)


# -- 12. the shipped pack on the simulator's normal plant ------------------------------------


def test_default_pack_is_quiet_on_the_normal_plant() -> None:
    """Two simulated hours of the default fleet's normal plant raise no event at all."""
    from simulator.fleet import load_default_fleet  # noqa: PLC0415 - only this test needs it
    from simulator.plant import Plant  # noqa: PLC0415

    fleet = load_default_fleet()
    infos = [
        SensorInfo(key, site.id, g.id, s.id, s.kind, s.unit, s.period_s, s.asset)
        for key, (site, g, s) in enumerate(
            (site, g, s) for site in fleet.sites() for g in site.gateways for s in g.sensors
        )
    ]
    plant = Plant(fleet, seed=7)
    assert [i.id for i in infos] == [sid for _site, _gw, sid in plant.sensors()]
    periods = np.array([max(1, round(i.period_s)) for i in infos])
    engine = Engine(DEFAULT, infos)
    batch_s = 600
    events: list[ConditionEvent] = []
    for start in range(0, 2 * 3600, batch_s):
        ks, ts, vs = [], [], []
        for k in range(start, start + batch_s):
            v = plant.values(k)
            due = np.flatnonzero(k % periods == 0)
            ks.append(due)
            ts.append(np.full(due.size, T0 + k * US, dtype=np.int64))
            vs.append(v[due])
        keys = np.concatenate(ks)
        events += engine.process(keys, np.concatenate(ts), np.concatenate(vs), np.zeros_like(keys))
    anomaly = {r.id for r in DEFAULT.rules if r.kind.value == "anomaly"}
    assert brief([e for e in events if e.rule_id not in anomaly]) == []
    advisories = Counter(
        e.site for e in events if e.kind is EventKind.ACTIVATE and e.priority is Priority.ADVISORY
    )
    assert all(n <= 12 for n in advisories.values()), advisories
    assert len(engine.watermarks()) == len(infos)


def test_replay_is_the_engine_through_the_lifecycle() -> None:
    """Replaying readings in different chunkings gives the same journal, hash for hash."""
    pack, sensors, rows = scenario_threshold()
    arrays = [np.array([r[i] for r in rows]) for i in range(3)]
    keys, ts, values = arrays[0].astype(np.int64), (T0 + arrays[1] * US).astype(np.int64), arrays[2]
    q = np.zeros_like(keys)
    a = Replayer(pack, sensors)
    a.feed(keys, ts, values, q)
    b = Replayer(pack, sensors)
    for lo in range(0, keys.size, 37):
        b.feed(keys[lo : lo + 37], ts[lo : lo + 37], values[lo : lo + 37], q[lo : lo + 37])
    assert a.result.entries
    assert a.result.last_hash == b.result.last_hash
    assert not math.isnan(a.result.entries[0]["value"])


# -- anomaly rules: advisories ------------------------------------------------------------------

_ANOMALY_RULE = rule(
    "anomaly.tc",
    "anomaly",
    ["hearth_tc"],
    off_delay_s=60.0,
    warning={"level": 0.5, "priority": "advisory"},
)
_TC_HIGH = rule("tc.high", "threshold", ["hearth_tc"], direction="high", warning={"level": 1500.0})


def _tc_rows(n: int = 5000, jump_at: int = 4800, seed: int = 3) -> list[Row]:
    """A hearth thermocouple every 10 s: steady at 1000 +/- 2, then +40 (under tc.high), and
    a short excursion over tc.high at the end."""
    v = 1000.0 + 2.0 * np.random.default_rng(seed).standard_normal(n)
    v[jump_at:] += 40.0
    v[n - 20 : n - 10] = 1600.0
    return series(1, v, step=10.0)


def test_anomaly_rule_raises_an_explained_advisory() -> None:
    """A new level under every threshold raises an advisory that says what, how far, since."""
    engine = Engine(make_pack(_ANOMALY_RULE), [sensor(1, "hearth_tc", period_s=10.0)])
    events = run_chunks(engine, _tc_rows(), list(range(0, 5000, 250)))
    acts = [e for e in events if e.kind is EventKind.ACTIVATE]
    assert acts, "the +40 step raised no advisory"
    first = acts[0]
    assert (first.at_us - T0) / US >= 4800 * 10  # nothing before the change
    assert first.priority is Priority.ADVISORY
    assert first.escalated_by == ()
    assert not first.latch
    assert first.detail is not None
    ex = first.detail["explanation"]
    assert ex["signal"] == "A1.hearth_tc.1"
    assert abs(ex["expected"] - 1000.0) < 5
    assert ex["usual_low"] < 1000.0 < ex["usual_high"]
    assert ex["spreads_off"] > 5
    assert ex["since"].startswith("2027-01-15T")  # T0 + 48000 s
    assert "expected about" in first.reason
    assert "unusual since" in first.reason


def test_advisories_never_change_the_safety_events() -> None:
    """The same readings give the same safety events with and without the anomaly rule."""
    rows = _tc_rows()
    cuts = list(range(0, 5000, 333))
    with_anomaly = run_chunks(
        Engine(make_pack(_TC_HIGH, _ANOMALY_RULE), [sensor(1, "hearth_tc", period_s=10.0)]),
        rows,
        cuts,
    )
    without = run_chunks(
        Engine(make_pack(_TC_HIGH), [sensor(1, "hearth_tc", period_s=10.0)]), rows, cuts
    )
    safety = [e for e in with_anomaly if e.rule_id == "tc.high"]
    assert safety == without
    assert any(e.rule_id == "anomaly.tc" for e in with_anomaly)


def test_advise_after_process_gives_what_process_gives_at_once() -> None:
    """process(advise=False) then advise() yields the same events as process() alone."""
    rows = _tc_rows()
    pack = make_pack(_TC_HIGH, _ANOMALY_RULE)
    at_once = run_chunks(Engine(pack, [sensor(1, "hearth_tc", period_s=10.0)]), rows, [2000])
    later = Engine(pack, [sensor(1, "hearth_tc", period_s=10.0)])
    got: list[ConditionEvent] = []
    for part in (rows[:2000], rows[2000:]):
        got += later.process(
            [r[0] for r in part],
            [T0 + round(r[1] * US) for r in part],
            [r[2] for r in part],
            [0] * len(part),
            advise=False,
        )
        got += later.advise()
    key = lambda e: (e.at_us, e.rule_id, e.kind.value)  # noqa: E731
    assert sorted(got, key=key) == sorted(at_once, key=key)


def test_detector_state_survives_a_checkpoint() -> None:
    """An engine restored mid-stream raises the same advisories as one that ran through."""
    rows = _tc_rows()
    pack = make_pack(_ANOMALY_RULE)
    through = run_chunks(Engine(pack, [sensor(1, "hearth_tc", period_s=10.0)]), rows, [3000])
    first = Engine(pack, [sensor(1, "hearth_tc", period_s=10.0)])
    before = feed(first, rows[:3000])
    resumed = Engine(pack, [sensor(1, "hearth_tc", period_s=10.0)])
    resumed.load_state(first.dump_state())
    assert before + feed(resumed, rows[3000:]) == through


def test_bad_readings_are_not_scored() -> None:
    """Readings of bad quality, however wild, raise no advisory."""
    v = 1000.0 + 2.0 * np.random.default_rng(4).standard_normal(5000)
    rows: list[Row] = [(1, i * 10.0, float(x)) for i, x in enumerate(v)]
    rows[4800:4810] = [(1, r[1], 9000.0, 2) for r in rows[4800:4810]]
    events = run_chunks(
        Engine(make_pack(_ANOMALY_RULE), [sensor(1, "hearth_tc", period_s=10.0)]), rows, [2500]
    )
    assert [e for e in events if e.kind is EventKind.ACTIVATE] == []


def test_explanation_of_a_flat_signal_that_moves_stays_journal_safe() -> None:
    """After a long flat stretch the usual spread is ~0; the explanation still carries only
    finite numbers a JSON journal reads back exactly (how far off is capped)."""
    v = np.zeros(6000)
    v[5900:] = 2.0
    events = run_chunks(
        Engine(make_pack(_ANOMALY_RULE), [sensor(1, "hearth_tc", period_s=10.0)]),
        series(1, v, step=10.0),
        [3000],
    )
    acts = [e for e in events if e.kind is EventKind.ACTIVATE]
    assert acts
    for e in acts:
        assert e.detail is not None
        for x in e.detail["explanation"].values():
            if isinstance(x, float):
                assert math.isfinite(x)
                assert abs(x) < 1e15


def test_escalation_names_a_finding_only_for_an_asset_that_has_one() -> None:
    """A facility-wide reason (expired SMK3) on an alert whose sensor has no asset escalates
    it as such, not as an 'open inspection finding'."""
    c = Compliance(findings=(Finding("s1", "F1", T0),), smk3_expires_us={"s1": T0})
    assert c.escalation("s1", "", T0 + US) == ["SMK3 certificate expired"]
    assert c.escalation("s1", "F1", T0 + US) == [
        "open inspection finding on F1",
        "SMK3 certificate expired",
    ]
