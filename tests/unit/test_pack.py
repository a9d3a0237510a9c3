"""The rule pack: parsing, validation messages, the shipped default pack, `tungku rules`."""

# Source tags are quoted as the pack writes them, en dashes included.

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerting.pack import (
    DERIVED_KINDS,
    PackError,
    Priority,
    Rule,
    RuleKind,
    Severity,
    When,
    default_pack_path,
    load_pack,
    parse_pack,
)
from simulator.catalogue import KINDS
from simulator.plant import (
    DRIFT_PERIOD_S,
    PANEL_DT_CENTRE_C,
    PANEL_DT_RANGE_C,
    PANEL_DT_TAU_S,
    PANEL_DT_WANDER_C,
    PANEL_FLOW_LOSS,
)

DEFAULT = load_pack(default_pack_path())

HEAD = """\
[pack]
name = "test"
version = "1"
effective = 2026-12-01
"""

RULE = """\
[[rule]]
id = "gas.co.level"
kind = "threshold"
title = "CO"
sensors = { kinds = ["area_co"] }
direction = "high"
deadband = 2.0
[rule.warning]
level = 25.0
priority = "medium"
source = "[S: ACGIH]"
[rule.critical]
level = 200.0
priority = "high"
source = "[S: NIOSH]"
"""


def _pack(*rules: str, head: str = HEAD) -> str:
    return head + "\n" + "\n".join(rules)


def _problems(text: str) -> list[str]:
    with pytest.raises(PackError) as info:
        parse_pack(text, "t.toml")
    assert info.value.source == "t.toml"
    return info.value.problems


# --- parsing ------------------------------------------------------------------------------


def test_minimal_pack_parses_with_defaults() -> None:
    """A pack of one threshold rule parses; omitted keys take the data model's defaults."""
    pack = parse_pack(_pack(RULE))
    assert (pack.name, pack.version, len(pack.rules)) == ("test", "1", 1)
    rule = pack.rules[0]
    assert rule.kind is RuleKind.THRESHOLD
    assert rule.when is When.ALWAYS
    assert rule.sensors.kinds == ("area_co",)
    assert rule.sensors.matches("area_co", "tapping-floor")
    warning, critical = rule.level(Severity.WARNING), rule.level(Severity.CRITICAL)
    assert warning is not None
    assert critical is not None
    assert (warning.level, warning.priority, warning.latch) == (25.0, Priority.MEDIUM, False)
    assert (critical.level, critical.priority, critical.latch) == (200.0, Priority.HIGH, True)
    assert pack.plant.furnace_pattern == "^(F[0-9]+)"


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T06:30:00", datetime(2026, 12, 1, 6, 30, tzinfo=UTC)),
        ("2026-12-01T08:00:00+08:00", datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_effective_becomes_aware_utc(literal: str, expected: datetime) -> None:
    """A date is midnight UTC, a local datetime is taken as UTC, an offset is converted."""
    pack = parse_pack(_pack(RULE, head=HEAD.replace("2026-12-01", literal)))
    assert pack.effective == expected
    assert pack.effective.tzinfo is UTC


def test_latch_can_be_set_against_its_default() -> None:
    """An explicit latch overrides the default (critical latches, warning does not)."""
    text = _pack(RULE.replace('source = "[S: NIOSH]"', 'source = "[S: NIOSH]"\nlatch = false'))
    critical = parse_pack(text).rules[0].level(Severity.CRITICAL)
    assert critical is not None
    assert critical.latch is False


def test_quality_and_gateway_rules_take_no_level_value() -> None:
    """Quality and gateway rules parse with only priority and source; their level is 0."""
    text = _pack(
        """[[rule]]
id = "health.quality"
kind = "quality"
title = "bad"
sensors = { kinds = ["area_co"] }
[rule.warning]
priority = "medium"
source = "[A]"
""",
        """[[rule]]
id = "health.gateway"
kind = "gateway"
title = "offline"
[rule.warning]
on_delay_s = 10.0
priority = "medium"
source = "[A]"
""",
    )
    quality, gateway = parse_pack(text).rules
    assert [lv.level for lv in quality.levels] == [0.0]
    assert gateway.sensors.kinds == ()
    assert gateway.levels[0].on_delay_s == 10.0


def test_load_pack_hashes_the_file_bytes(tmp_path: Path) -> None:
    """load_pack records the sha256 of the file's bytes and names the file in errors."""
    path = tmp_path / "p.toml"
    path.write_text(_pack(RULE), encoding="utf-8")
    assert load_pack(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text(_pack(RULE).replace("level = 25.0", 'level = "x"'), encoding="utf-8")
    with pytest.raises(PackError, match=r"p\.toml"):
        load_pack(path)


def test_every_problem_is_reported_at_once() -> None:
    """Validation does not stop at the first problem: each one is listed with its place."""
    text = _pack(
        RULE.replace('priority = "medium"', 'priority = "hi"'),
        RULE.replace('id = "gas.co.level"', 'id = "gas.co.other"').replace(
            'source = "[S: NIOSH]"', 'source = "NIOSH"'
        ),
        head=HEAD.replace('version = "1"', 'verison = "1"'),
    )
    problems = _problems(text)
    assert len(problems) == 4, problems
    assert any(p.startswith("[pack]: unknown key 'verison'") for p in problems)
    assert any(p.startswith("[pack]: version is required") for p in problems)
    assert any(p.startswith("rule 'gas.co.level' (rule #1): warning.priority") for p in problems)
    assert any(p.startswith("rule 'gas.co.other' (rule #2): critical.source") for p in problems)


def _rule(**changes: str) -> str:
    """RULE with lines replaced: key=old-line-start -> new text."""
    text = RULE
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new, 1)
    return text


BAD_PACKS = [
    pytest.param(
        _pack(_rule(**{"deadband = 2.0": "dedband = 2.0"})),
        "rule 'gas.co.level' (rule #1): unknown key 'dedband' (did you mean 'deadband'?); "
        "allowed: critical, deadband, direction,",
        id="unknown-rule-key",
    ),
    pytest.param(
        _pack(_rule(**{'kind = "threshold"': 'kind = "treshold"'})),
        "rule 'gas.co.level' (rule #1): kind 'treshold' is not one of threshold, rate, "
        "deviation, exposure, stale, stuck, quality, gateway, anomaly (did you mean 'threshold'?)",
        id="typo-kind",
    ),
    pytest.param(
        _pack(_rule(**{'source = "[S: ACGIH]"': ""})),
        "rule 'gas.co.level' (rule #1): warning.source is required",
        id="missing-source",
    ),
    pytest.param(
        _pack(_rule(**{'source = "[S: NIOSH]"': 'source = "NIOSH ceiling"'})),
        "rule 'gas.co.level' (rule #1): critical.source must be a string carrying a source "
        "tag '[S: ...]' or an assumption tag '[A]', got 'NIOSH ceiling'",
        id="source-without-tag",
    ),
    pytest.param(
        _pack(_rule(**{"level = 200.0": "level = 20.0"})),
        "rule 'gas.co.level' (rule #1): critical.level 20 must be at or above warning.level "
        "25 for a high threshold",
        id="warning-above-critical",
    ),
    pytest.param(
        _pack(_rule(**{'direction = "high"': 'direction = "low"'})),
        "critical.level 200 must be at or below warning.level 25 for a low threshold",
        id="low-threshold-reversed",
    ),
    pytest.param(
        _pack(RULE, RULE),
        "rule 'gas.co.level' (rule #2): duplicate id, already used by rule #1",
        id="duplicate-id",
    ),
    pytest.param(
        _pack(_rule(**{'id = "gas.co.level"': 'id = "Gas CO"'})),
        "rule #1: id 'Gas CO' must match ^[a-z0-9][a-z0-9._-]*$",
        id="bad-id",
    ),
    pytest.param(
        _pack(RULE, head=HEAD.replace("2026-12-01", '"2026-12-01"')),
        "[pack].effective: must be a TOML date or datetime such as 2026-12-01",
        id="effective-as-string",
    ),
    pytest.param(
        _pack(RULE, head=HEAD.replace("effective = 2026-12-01\n", "")),
        "[pack]: effective is required",
        id="effective-missing",
    ),
    pytest.param(
        HEAD + 'description = "x\n',
        "line 5: TOML syntax error: ",
        id="toml-syntax",
    ),
    pytest.param(
        _pack(_rule(**{"level = 200.0": 'level = "x"'})),
        "rule 'gas.co.level' (rule #1): critical.level must be a number, got 'x'",
        id="level-not-a-number",
    ),
    pytest.param(
        _pack(_rule(**{"level = 200.0": "level = nan"})),
        "rule 'gas.co.level' (rule #1): critical.level must be a finite number, got nan",
        id="level-nan",
    ),
    pytest.param(
        _pack(_rule(**{'priority = "high"': 'priority = "high"\non_delay_s = -1'})),
        "rule 'gas.co.level' (rule #1): critical.on_delay_s must be at least 0, got -1",
        id="negative-delay",
    ),
    pytest.param(
        _pack(_rule(**{"deadband = 2.0": "deadband = -2.0"})),
        "rule 'gas.co.level' (rule #1): deadband must be at least 0, got -2.0",
        id="negative-deadband",
    ),
    pytest.param(
        _pack(_rule(**{"deadband = 2.0": "deadband = true"})),
        "rule 'gas.co.level' (rule #1): deadband must be a number, got true",
        id="bool-is-not-a-number",
    ),
    pytest.param(
        _pack(RULE.split("[rule.warning]", maxsplit=1)[0]),
        "rule 'gas.co.level' (rule #1): needs at least one level",
        id="no-levels",
    ),
    pytest.param(
        _pack(_rule(**{'direction = "high"': 'direction = "high"\nwhen = "running"'})),
        "rule 'gas.co.level' (rule #1): when 'running' is not one of always, energised, hot, off",
        id="unknown-when",
    ),
    pytest.param(
        _pack(_rule(**{'direction = "high"\n': ""})),
        "rule 'gas.co.level' (rule #1): direction is required: one of high, low",
        id="missing-direction",
    ),
    pytest.param(
        _pack(_rule(**{'priority = "medium"': 'priority = "hi"'})),
        "warning.priority 'hi' is not one of advisory, low, medium, high, urgent",
        id="unknown-priority",
    ),
    pytest.param(
        _pack(_rule(**{'title = "CO"\n': ""})),
        "rule 'gas.co.level' (rule #1): title is required",
        id="missing-title",
    ),
    pytest.param(
        _pack(_rule(**{"deadband = 2.0": "deadband = 2.0\nwindow_s = 5.0"})),
        "rule 'gas.co.level' (rule #1): key 'window_s' does not apply to a threshold rule",
        id="key-of-another-kind",
    ),
    pytest.param(
        _pack(_rule(**{'kind = "threshold"': 'kind = "rate"', 'direction = "high"': ""})),
        "rule 'gas.co.level' (rule #1): window_s is required",
        id="rate-without-window",
    ),
    pytest.param(
        _pack(
            _rule(
                **{
                    'kind = "threshold"': 'kind = "rate"\nwindow_s = 10.0\nmeasure = "rise"',
                    'direction = "high"': "per_s = 0",
                }
            )
        ),
        "rule 'gas.co.level' (rule #1): per_s must be greater than 0, got 0",
        id="rate-per-s-zero",
    ),
    pytest.param(
        _pack(
            _rule(
                **{
                    'kind = "threshold"': 'kind = "deviation"\nmeasure = "rise"',
                    'direction = "high"': "baseline_s = 0",
                }
            )
        ),
        "rule 'gas.co.level' (rule #1): baseline_s must be greater than 0, got 0",
        id="deviation-baseline-zero",
    ),
    pytest.param(
        _pack(
            _rule(
                **{
                    'kind = "threshold"': 'kind = "exposure"',
                    'direction = "high"': 'measure = "rise"',
                }
            )
        ),
        "rule 'gas.co.level' (rule #1): measure 'rise' is not one of twa_8h, stel_15min",
        id="measure-of-another-kind",
    ),
    pytest.param(
        _pack(
            _rule(
                **{
                    'kind = "threshold"': 'kind = "quality"',
                    'direction = "high"\n': "",
                    "deadband = 2.0\n": "",
                }
            )
        ),
        "rule 'gas.co.level' (rule #1): warning: key 'level' does not apply to a level of a "
        "quality rule; allowed: priority, source",
        id="quality-with-level",
    ),
    pytest.param(
        _pack(_rule(**{'kind = "threshold"': 'kind = "gateway"'})),
        "rule 'gas.co.level' (rule #1): key 'sensors' does not apply to a gateway rule",
        id="gateway-with-sensors",
    ),
    pytest.param(
        _pack(_rule(**{'kinds = ["area_co"]': "kinds = []"})),
        "rule 'gas.co.level' (rule #1): sensors.kinds must name at least one sensor kind",
        id="empty-kinds",
    ),
    pytest.param(
        _pack(_rule(**{'kinds = ["area_co"]': 'kinds = ["area_co"], asets = ["F1"]'})),
        "rule 'gas.co.level' (rule #1): sensors: unknown key 'asets' (did you mean 'assets'?)",
        id="unknown-selector-key",
    ),
    pytest.param(
        _pack(
            """[[rule]]
id = "health.stale"
kind = "stale"
title = "silent"
sensors = { kinds = ["panel_dt"] }
[rule.warning]
level = 15.0
priority = "low"
source = "[A]"
"""
        ),
        "rule 'health.stale' (rule #1): sensors.kinds 'panel_dt' is derived by the engine",
        id="stale-on-derived-kind",
    ),
    pytest.param(
        _pack(
            """[[rule]]
id = "health.stuck"
kind = "stuck"
title = "stuck"
sensors = { kinds = ["area_co"] }
window_s = 600.0
[rule.warning]
level = 0.01
priority = "low"
source = "[A]"
[rule.critical]
level = 0.1
priority = "high"
source = "[A]"
"""
        ),
        "critical.level 0.1 must be at or below warning.level 0.01 for a stuck rule",
        id="stuck-levels-reversed",
    ),
    pytest.param(
        _pack(RULE, head=HEAD + '[plant]\nfurnace_pattern = "^F[0-9]+"\n'),
        "[plant]: furnace_pattern '^F[0-9]+' needs a group",
        id="pattern-without-group",
    ),
    pytest.param(
        _pack(RULE, head=HEAD + '[plant]\nfurnace_pattern = "^(F[0-9+"\n'),
        "[plant]: furnace_pattern '^(F[0-9+' is not a valid regex",
        id="pattern-not-a-regex",
    ),
    pytest.param(
        _pack(RULE, head=HEAD + "[plant]\nhot_above = 300.0\n"),
        "[plant]: unknown key 'hot_above' (did you mean 'hot_above_c'?)",
        id="unknown-plant-key",
    ),
    pytest.param(
        _pack(RULE.replace("[[rule]]", "[[rules]]")),
        "top level: unknown key 'rules' (did you mean 'rule'?)",
        id="unknown-top-level-table",
    ),
    pytest.param(
        HEAD + '\n[rule]\nid = "x"\n',
        "rule must be an array of tables: write [[rule]], not [rule]",
        id="rule-not-an-array",
    ),
    pytest.param(
        RULE,
        "[pack]: missing table",
        id="missing-pack-table",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_PACKS)
def test_bad_pack_names_the_problem_and_where(text: str, expected: str) -> None:
    """Each kind of mistake is refused with a message that locates and names it."""
    problems = _problems(text)
    assert any(expected in p for p in problems), problems


# --- the shipped default pack ---------------------------------------------------------------

REQUIRED_IDS = {
    "gas.co.level",
    "gas.co.twa",
    "gas.h2s.level",
    "gas.h2s.twa",
    "gas.h2s.stel",
    "gas.so2.level",
    "gas.so2.stel",
    "gas.no2.level",
    "gas.no2.twa",
    "gas.o2.low",
    "gas.o2.high",
    "gas.lel",
    "freeboard.pressure",
    "freeboard.swing",
    "cw.pump_trip",
    "cw.header_pressure",
    "cw.return_flow",
    "cw.imbalance",
    "cw.panel_dt",
    "cw.panel_dt.baseline",
    "cw.panel_dt.rate",
    "cw.return_temp",
    "offgas.h2.baseline",
    "tc.baseline",
    "tc.high",
    "tc.rate",
    "hotwork.tc",
    "hotwork.shell",
    "hotwork.o2",
    "hotwork.lel",
    "o2line.low",
    "o2line.high",
    "o2line.drop",
    "health.stale",
    "health.stale.critical",
    "health.quality",
    "health.gateway",
    "anomaly.process",
}


def test_default_pack_parses_with_the_agreed_rule_ids() -> None:
    """The shipped pack is valid, in force from a UTC date, and has every agreed rule id."""
    assert DEFAULT.name == "smelter-default"
    assert DEFAULT.effective.tzinfo is UTC
    assert DEFAULT.sha256 == hashlib.sha256(default_pack_path().read_bytes()).hexdigest()
    ids = {r.id for r in DEFAULT.rules}
    assert ids >= REQUIRED_IDS
    stuck = {r.id for r in DEFAULT.rules if r.kind is RuleKind.STUCK}
    assert stuck
    assert all(i == "health.stuck" or i.startswith("health.stuck.") for i in stuck)
    assert ids - REQUIRED_IDS == stuck


@pytest.mark.parametrize("rule", DEFAULT.rules, ids=lambda r: r.id)
def test_every_default_level_carries_its_source(rule: Rule) -> None:
    """Every level of the shipped pack names its source or marks itself an assumption."""
    assert rule.levels
    for lv in rule.levels:
        assert "[S" in lv.source or "[A" in lv.source, (rule.id, lv.severity)


def test_default_priorities_leave_urgent_to_escalation() -> None:
    """Criticals are high, warnings low or medium (hot work excepted), none is urgent, and
    only the anomaly rules are advisory."""
    for rule in DEFAULT.rules:
        for lv in rule.levels:
            assert lv.priority is not Priority.URGENT, rule.id
            assert (lv.priority is Priority.ADVISORY) == (rule.kind is RuleKind.ANOMALY), rule.id
            if rule.kind is RuleKind.ANOMALY:
                continue
            if lv.severity is Severity.CRITICAL:
                assert lv.priority is Priority.HIGH, rule.id
            elif not rule.requires_permit:
                assert lv.priority in (Priority.LOW, Priority.MEDIUM), rule.id


def test_hot_work_rules_need_a_permit_and_ignore_power() -> None:
    """The ITSS interlock runs only under a hot-work permit, whether or not power is on."""
    hot_work = [r for r in DEFAULT.rules if r.id.startswith("hotwork.")]
    assert len(hot_work) == 4
    assert all(r.requires_permit and r.when is When.ALWAYS for r in hot_work)
    assert not any(r.requires_permit for r in DEFAULT.rules if r not in hot_work)


def test_stuck_rules_watch_live_analog_signals_at_a_tenth_of_their_noise() -> None:
    """Stuck levels are noise/10 per kind, never on a pump state or furnace power."""
    for rule in (r for r in DEFAULT.rules if r.kind is RuleKind.STUCK):
        assert rule.window_s == 600.0
        assert not {"cw_pump_state", "furnace_power"} & set(rule.sensors.kinds), rule.id
        for kind in rule.sensors.kinds:
            for lv in rule.levels:
                assert math.isclose(lv.level, KINDS[kind].noise_sd / 10, rel_tol=1e-9), (
                    rule.id,
                    kind,
                )


def test_stale_rules_cover_every_catalogue_kind() -> None:
    """Every sensor kind the catalogue knows is watched for silence and for bad readings."""
    for rule_id in ("health.stale", "health.quality"):
        rule = DEFAULT.rule(rule_id)
        assert rule is not None
        assert set(rule.sensors.kinds) == set(KINDS), rule_id


# --- a normal plant never alarms -------------------------------------------------------------


@dataclass(frozen=True)
class Normal:
    """The statistics of a kind's normal signal, as simulator/catalogue.py gives them."""

    baseline: float
    spread: float
    noise_sd: float
    wander_sd: float
    wander_tau_s: float
    drift_amp: float
    period_s: float


def _normal(kind: str) -> Normal:
    if kind in KINDS:
        k = KINDS[kind]
        return Normal(
            k.baseline, k.spread, k.noise_sd, k.wander_sd, k.wander_tau_s, k.drift_amp, k.period_s
        )
    supply_t, return_t = KINDS["cw_supply_temp"], KINDS["cw_return_temp"]
    supply_f, return_f = KINDS["cw_supply_flow"], KINDS["cw_return_flow"]
    if kind == "panel_dt":
        # The panel's own ΔT (simulator/plant.py, drift 0.2 °C there), read as the difference
        # of two real thermometers: both meters' noise counts, though the simulator's cancels.
        lo, hi = PANEL_DT_CENTRE_C
        return Normal(
            (lo + hi) / 2,
            (hi - lo) / 2,
            math.hypot(supply_t.noise_sd, return_t.noise_sd),
            PANEL_DT_WANDER_C,
            PANEL_DT_TAU_S,
            0.2,
            1.0,
        )
    assert kind == "cw_imbalance"
    # (supply - return) / supply in %: the circuit's loss (plant.py: 0.1-0.3 %, wander 0.03 %)
    # plus both flow meters' noise over the lowest normal supply flow.
    low_flow = supply_f.baseline - _reach(_normal("cw_supply_flow"), 1)
    lo, hi = PANEL_FLOW_LOSS
    return Normal(
        50 * (lo + hi),
        50 * (hi - lo),
        100 * math.hypot(supply_f.noise_sd, return_f.noise_sd) / low_flow,
        0.03,
        return_f.wander_tau_s,
        0.0,
        1.0,
    )


def _reach(n: Normal, samples: int) -> float:
    """How far a normal signal can stray from its baseline: spread + drift + 4 sigma.

    Noise is averaged over the `samples` that an on-delay spans: an alert needs every one of
    them beyond the level, which is rarer than their mean being beyond it. The autocorrelated
    wander is not averaged (conservative).
    """
    return n.spread + n.drift_amp + 4 * math.sqrt(n.wander_sd**2 + n.noise_sd**2 / samples)


def _clearance(rule: Rule, severity: Severity, kind: str) -> tuple[float, float]:
    """(the normal signal's worst value in the level's direction, the level)."""
    n = _normal(kind)
    lv = rule.level(severity)
    assert lv is not None
    if rule.kind is RuleKind.EXPOSURE:
        # A 15-min or 8-h mean: white noise averages out; wander is kept whole.
        return n.baseline + n.spread + n.drift_amp + 4 * n.wander_sd, lv.level
    samples = 1 + math.floor(lv.on_delay_s / n.period_s)
    reach = _reach(n, samples)
    if rule.direction == "low":
        return -(n.baseline - reach), -lv.level
    return n.baseline + reach, lv.level


#: Levels that DOMAIN.md fixes but the simulator's normal signal reaches: kept as known
#: conflicts (strict: when the catalogue is fixed, the xfail fails and must be removed).
KNOWN_CONFLICTS: dict[tuple[str, str, str], str] = {}


def _cases(kinds: set[RuleKind]) -> list[object]:
    out: list[object] = []
    for rule in DEFAULT.rules:
        # Hot-work rules run only under a permit; a normal plant has none open.
        if rule.kind not in kinds or rule.requires_permit:
            continue
        for lv in rule.levels:
            for kind in rule.sensors.kinds:
                key = (rule.id, lv.severity.value, kind)
                marks = (
                    [pytest.mark.xfail(reason=KNOWN_CONFLICTS[key], strict=True)]
                    if key in KNOWN_CONFLICTS
                    else []
                )
                out.append(pytest.param(rule, lv.severity, kind, id="-".join(key), marks=marks))
    return out


@pytest.mark.parametrize(
    ("rule", "severity", "kind"), _cases({RuleKind.THRESHOLD, RuleKind.EXPOSURE})
)
def test_normal_plant_clears_every_threshold_and_exposure_level(
    rule: Rule, severity: Severity, kind: str
) -> None:
    """baseline + spread + drift + 4 sigma of wander and noise stays clear of the level."""
    worst, level = _clearance(rule, severity, kind)
    assert worst < level, f"{rule.id} {severity}: normal {kind} reaches {worst:.3g}"


def test_paired_return_temperature_clears_its_limit() -> None:
    """A panel's return (its supply plus the panel's ΔT, at most 8 °C) stays below 60 °C."""
    rule = DEFAULT.rule("cw.return_temp")
    assert rule is not None
    critical = rule.level(Severity.CRITICAL)
    assert critical is not None
    supply = _normal("cw_supply_temp")
    worst = supply.baseline + _reach(supply, 1) + PANEL_DT_RANGE_C[1]
    assert worst < critical.level


@pytest.mark.parametrize(("rule", "severity", "kind"), _cases({RuleKind.RATE, RuleKind.DEVIATION}))
def test_normal_plant_clears_every_rate_and_deviation_level(
    rule: Rule, severity: Severity, kind: str
) -> None:
    """A normal signal's rate over the window, or distance from its baseline, stays clear."""
    n = _normal(kind)
    lv = rule.level(severity)
    assert lv is not None
    omega = 2 * math.pi / DRIFT_PERIOD_S[0]  # fastest slow drift
    if rule.kind is RuleKind.DEVIATION:
        t = rule.baseline_s
        # An exponential baseline lags a sinusoid by A*wT/sqrt(1+(wT)^2); an AR(1) excursion
        # of correlation time tau differs from its own exponential mean by sd*sqrt(T/(tau+T)).
        lag = n.drift_amp * omega * t / math.hypot(1.0, omega * t)
        samples = 1 + math.floor(lv.on_delay_s / n.period_s)
        sd = math.sqrt(n.wander_sd**2 * t / (n.wander_tau_s + t) + n.noise_sd**2 / samples)
        worst = lag + 4 * sd
    else:
        w = rule.window_s
        # Two readings w apart (the engine's rate): both noises, the wander's increment and
        # the drift's steepest slope.
        step_sd = math.sqrt(
            2 * n.noise_sd**2 + 2 * n.wander_sd**2 * (1 - math.exp(-w / n.wander_tau_s))
        )
        drift = n.drift_amp * omega * w
        worst = drift + 8 * step_sd if rule.measure == "swing" else (drift + 4 * step_sd) / w
        if rule.measure != "swing":
            worst *= rule.per_s
    assert worst < lv.level, f"{rule.id} {severity}: normal {kind} reaches {worst:.3g}"


def test_derived_kinds_are_only_used_where_they_make_sense() -> None:
    """panel_dt and cw_imbalance appear only in threshold, rate, deviation and anomaly rules."""
    for rule in DEFAULT.rules:
        if set(rule.sensors.kinds) & set(DERIVED_KINDS):
            assert rule.kind in (
                RuleKind.THRESHOLD, RuleKind.RATE, RuleKind.DEVIATION, RuleKind.ANOMALY
            )  # fmt: skip


# --- tungku rules ---------------------------------------------------------------------------


def _tungku(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rules_check_accepts_a_good_pack(tmp_path: Path) -> None:
    """`tungku rules check` prints one ok line per valid file and exits 0."""
    good = tmp_path / "good.toml"
    good.write_text(_pack(RULE), encoding="utf-8")
    out = _tungku("rules", "check", str(good), str(default_pack_path()))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"{good}: ok — pack test 1, effective 2026-12-01, 1 rules"
    assert lines[1].startswith(f"{default_pack_path()}: ok — pack smelter-default 2026.12.1")


def test_rules_check_lists_each_problem_and_exits_1(tmp_path: Path) -> None:
    """A bad pack gives one line per problem, each prefixed by its file, and exit code 1."""
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(_pack(RULE), encoding="utf-8")
    bad.write_text(_pack(RULE, RULE.replace("deadband", "dedband")), encoding="utf-8")
    out = _tungku("rules", "check", str(bad), str(good))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[-1].startswith(f"{good}: ok")
    problems = lines[:-1]
    assert len(problems) == 2  # the unknown key, and the id already used by rule #1
    assert all(line.startswith(f"{bad}: rule 'gas.co.level' (rule #2): ") for line in problems)


def test_rules_check_reports_toml_syntax_with_its_line(tmp_path: Path) -> None:
    """A file that is not TOML is reported with the line of the error."""
    bad = tmp_path / "bad.toml"
    bad.write_text(HEAD + "[[rule]\n", encoding="utf-8")
    out = _tungku("rules", "check", str(bad))
    assert out.returncode == 1
    assert out.stdout.startswith(f"{bad}: line 5: TOML syntax error: ")


def test_rules_check_unreadable_file_exits_2_without_traceback(tmp_path: Path) -> None:
    """A missing file is a usage error (exit 2) with a clear message, not a traceback."""
    missing = tmp_path / "nope.toml"
    out = _tungku("rules", "check", str(missing))
    assert out.returncode == 2
    assert f"cannot read rule pack {missing}: No such file or directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_rules_show_prints_the_default_pack() -> None:
    """`tungku rules show` prints every rule of the shipped pack with its levels and sources."""
    out = _tungku("rules", "show")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pack smelter-default 2026.12.1, effective 2026-12-07")
    for rule in DEFAULT.rules:
        assert f"\n{rule.id} " in out.stdout
    assert "[S: NIOSH ceiling 200 ppm]" in out.stdout
    assert "always +permit" in out.stdout


def test_rules_help_names_both_actions() -> None:
    """`tungku rules --help` documents check and show; `tungku --help` lists rules."""
    out = _tungku("rules", "--help")
    assert out.returncode == 0
    assert "check" in out.stdout
    assert "show" in out.stdout
    assert "rules" in _tungku("--help").stdout


# -- anomaly rules and the advisory priority ---------------------------------------------------

_ANOMALY = """
[[rule]]
id = "anomaly.tc"
kind = "anomaly"
title = "Thermocouple unusual"
sensors = { kinds = ["hearth_tc"] }
off_delay_s = 60.0
[rule.warning]
level = LEVEL
priority = PRIORITY
source = "[A] test"
"""


def _anomaly_pack(level: str = "0.6", priority: str = '"advisory"', extra: str = "") -> str:
    head = '[pack]\nname = "t"\nversion = "1"\neffective = 2026-01-01\n'
    body = _ANOMALY.replace("LEVEL", level).replace("PRIORITY", priority)
    return head + body.replace("off_delay_s = 60.0", "off_delay_s = 60.0" + extra)


def test_anomaly_rule_parses_as_advisory_and_does_not_latch() -> None:
    """An anomaly rule's level is a score, its priority advisory, and it does not latch."""
    (rule,) = parse_pack(_anomaly_pack()).rules
    assert rule.kind is RuleKind.ANOMALY
    (lv,) = rule.levels
    assert (lv.level, lv.priority, lv.latch) == (0.6, Priority.ADVISORY, False)
    assert Priority.ADVISORY.raised() is Priority.ADVISORY  # never escalated


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_anomaly_pack(level="1.2"), "warning.level 1.2 must be an anomaly score between 0 and 1"),
        (_anomaly_pack(level="0"), "must be an anomaly score between 0 and 1"),
        (_anomaly_pack(priority='"high"'), "priority of an anomaly rule must be 'advisory'"),
        (
            _anomaly_pack(extra="\nrequires_permit = true"),
            "requires_permit does not apply to an anomaly rule",
        ),
        (
            _anomaly_pack().replace('kind = "anomaly"', 'kind = "threshold"\ndirection = "high"'),
            "priority 'advisory' is for anomaly rules only",
        ),
    ],
)
def test_anomaly_and_advisory_misuse_is_refused(text: str, message: str) -> None:
    """Scores outside (0, 1), a safety priority on an anomaly rule, advisory on a safety rule
    and a permit condition are each refused with a message naming them."""
    with pytest.raises(PackError) as info:
        parse_pack(text)
    assert any(message in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\nwhen = "energised"', "when must be 'always' for an anomaly rule"),
        ("\ndeadband = 0.7", "deadband 0.7 must be below warning.level 0.6"),
    ],
)
def test_anomaly_rule_that_could_never_work_is_refused(extra: str, message: str) -> None:
    """A plant-state gate, or a deadband that would never let the advisory clear, is refused."""
    with pytest.raises(PackError) as info:
        parse_pack(_anomaly_pack(extra=extra))
    assert any(message in p for p in info.value.problems), info.value.problems


def test_anomaly_rule_with_an_on_delay_is_refused() -> None:
    """A score is one reading's: an on-delay could never be met."""
    text = _anomaly_pack().replace("priority = ", "on_delay_s = 5.0\npriority = ")
    with pytest.raises(PackError) as info:
        parse_pack(text)
    assert any("on_delay_s must be 0 for an anomaly rule" in p for p in info.value.problems)
