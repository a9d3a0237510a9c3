"""The incident scenarios (simulator/scenario.py): DOMAIN.md §6 signatures, determinism, the
untouched baseline before the event, and the expectation checker."""

# Units and ranges are written as DOMAIN.md writes them (T−2 h, 3–6 min).
# ruff: noqa: RUF001, RUF002, RUF003

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from simulator.fleet import Fleet, load_default_fleet, load_scenario_fleet, parse_fleet
from simulator.plant import Plant
from simulator.scenario import (
    HOT_BASELINE_S,
    HOT_WEAR_S,
    SCENARIOS,
    TAP_BASELINE_S,
    TAP_CLIMB_S,
    Expectation,
    Forbidden,
    ObservedAlert,
    Scenario,
    ScenarioError,
    ScenarioPlant,
    check,
)

Values = npt.NDArray[np.float64]
SEEDS = (1, 20231224)
FLEET = load_scenario_fleet()


@functools.cache
def _play(name: str, seed: int) -> tuple[ScenarioPlant, Values]:
    sc = SCENARIOS[name]
    sp = ScenarioPlant(FLEET, sc, seed)
    rows = [sp.values(k) for k in range(sc.duration_s)]
    return sp, np.array(rows)


def _series(name: str, seed: int, sensor: str) -> Values:
    sp, v = _play(name, seed)
    return v[:, sp.index(sensor)]


@functools.cache
def _bare(seed: int) -> Values:
    """The plant without a scenario, as long as the longest scenario."""
    plant = Plant(FLEET, seed)
    return np.array([plant.values(k) for k in range(max(s.duration_s for s in SCENARIOS.values()))])


def _offset(name: str, seed: int, sensor: str) -> Values:
    """What the scenario adds to one sensor's bare-plant value, tick by tick."""
    sp, v = _play(name, seed)
    i = sp.index(sensor)
    return v[:, i] - _bare(seed)[: len(v), i]


def test_the_seven_scenarios_of_domain_section_6_are_registered() -> None:
    """All seven §6 scenarios can be looked up by name."""
    assert list(SCENARIOS) == [
        "hot-work",
        "pump-trip",
        "tap-runout",
        "positive-pressure",
        "oxygen-enrichment",
        "slag-quench",
        "sensor-faults",
    ]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_timeline_expectations_and_permits_lie_inside_the_run(name: str) -> None:
    """T0, every expectation deadline, forbidden window and permit fall within the played run."""
    sc = SCENARIOS[name]
    assert 0 < sc.t0_s < sc.duration_s <= 12 * 3600
    assert sc.expectations
    for e in sc.expectations:
        assert 0 < e.by_s <= sc.duration_s, e
        assert e.severity in ("warning", "critical")
    for f in sc.forbidden:
        assert f.before_s is None or 0 < f.before_s <= sc.duration_s
    for p in sc.permits:
        assert 0 <= p.open_s < sc.duration_s


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_fleet_keeps_readings_per_second_modest(name: str) -> None:
    """A scenario on the scenario fleet publishes about 32 readings per plant second."""
    sc = SCENARIOS[name]
    sp = ScenarioPlant(FLEET, sc, 3)
    n = sum(len(g) for k in range(600) for g in sp.readings(k))
    assert 25 * 600 <= n <= 50 * 600


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_seed_gives_identical_values_and_another_seed_differs(name: str) -> None:
    """Replaying a scenario with its seed is exact; another seed gives other values."""
    sc = SCENARIOS[name]
    # The played runs of the signature tests (hours long for some) serve as two of the three.
    a, va = _play(name, SEEDS[0])
    c, vc = _play(name, SEEDS[1])
    b = ScenarioPlant(FLEET, sc, SEEDS[0])
    assert np.array_equal(va, np.array([b.values(k) for k in range(sc.duration_s)]))
    assert not np.array_equal(va, vc)
    assert dict(a.params) == dict(b.params) != dict(c.params)


@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items() if s.baseline_until_s > 0])
def test_values_before_the_event_are_the_bare_plants(name: str) -> None:
    """Where a scenario says so, every value before its baseline ends (T0, or the start of a
    slow fault) equals the plant without the scenario."""
    sc = SCENARIOS[name]
    _, v = _play(name, SEEDS[0])
    bare = _bare(SEEDS[0])[: sc.duration_s]
    assert np.array_equal(v[: sc.baseline_until_s], bare[: sc.baseline_until_s])
    assert not np.array_equal(v[sc.baseline_until_s :], bare[sc.baseline_until_s :])


@pytest.mark.parametrize("seed", SEEDS)
def test_hot_work_signature(seed: int) -> None:
    """Hot work: power off, hearth > 800 °C at T−2 h and cooling, O₂ puffs over 23.5 %, then at
    T0 shell +400 °C within 10 s, CO ≥ 300 ppm within 60 s and a 10–30 % panel imbalance."""
    name = "hot-work"
    t0 = SCENARIOS[name].t0_s
    s = functools.partial(_series, name, seed)
    assert np.abs(s("f1.power")).max() < 1.0
    assert s("f1.electrode.l1").max() < 1.0
    for i in range(1, 5):
        hearth = s(f"f1.hearth.t{i:02d}")
        assert hearth[t0 - 7200] > 800.0
        assert hearth[t0] < hearth[0] - 20.0  # cooling exponentially
    assert s("f1.shell.t01")[t0 + 10] - s("f1.shell.t01")[t0 - 1] > 400.0
    assert s("maintenance-bay.co")[t0 + 60] >= 300.0
    assert s("tapping-floor.co")[t0 + 60] >= 230.0
    assert s("maintenance-bay.co")[: t0 - 1].max() < 25.0
    o2 = s("maintenance-bay.o2")
    permit = SCENARIOS[name].permits[0].open_s
    assert o2[:permit].max() < 21.5
    assert 23.7 < o2[permit:t0].max() < 24.6
    assert 22.0 < float(np.median(o2[t0 - 3600 : t0])) < 24.0
    lel = s("maintenance-bay.lel")[permit:t0]
    assert lel.max() > 3.0
    assert float(np.median(lel)) < 3.0  # intermittent
    for p in ("p01", "p02"):
        sup, ret = s(f"f1.cw.{p}.supply_flow"), s(f"f1.cw.{p}.return_flow")
        imbalance = (sup[t0 + 30 :] - ret[t0 + 30 :]) / sup[t0 + 30 :]
        assert 0.08 < float(np.median(imbalance)) < 0.32


@pytest.mark.parametrize("seed", SEEDS)
def test_hot_work_wear_is_a_ramp_after_eight_hours_of_the_cooling_furnace(seed: int) -> None:
    """Hot work: the sidewall only cools (residual heat) for 8 h, then 30 days of wear add
    +60 °C over 20 min; the panel ΔT creep (+3 °C) is absent before and ramps with it."""
    name = "hot-work"
    a, b = HOT_BASELINE_S, HOT_BASELINE_S + HOT_WEAR_S
    assert SCENARIOS[name].t0_s - b == 3 * 3600 + 20 * 60
    for i in range(1, 7):
        d = _offset(name, seed, f"f1.sidewall.t{i:02d}")
        assert np.all(np.diff(d[:a]) <= 0.002)  # residual heat only: cooling, never rising
        assert d[a] < d[0] - 30.0
        assert 54.0 < d[b] - d[a] <= 60.0  # +60 °C of wear, less 20 min of cooling
        assert 0.4 < (d[(a + b) // 2] - d[a]) / (d[b] - d[a]) < 0.6  # linear, not a step
        assert np.all(np.diff(d[b:]) <= 0.002)  # then cooling on
    for p in ("p01", "p02", "p03", "p04"):
        d = _offset(name, seed, f"f1.cw.{p}.return_temp")
        assert np.allclose(d[:a], 0.0, atol=0.002)
        assert np.allclose(d[b : SCENARIOS[name].t0_s], 3.0, atol=0.002)
        assert abs(d[(a + b) // 2] - 1.5) < 0.01


@pytest.mark.parametrize("seed", SEEDS)
def test_pump_trip_signature(seed: int) -> None:
    """Pump trip: header ≤ 1.2 bar within 5 s, flows ~0 for 3–6 min, returns +20 °C, then
    leaks of 5–15 %, H₂ +5 vol-% and freeboard swings > 100 Pa within 5 s."""
    name = "pump-trip"
    t0 = SCENARIOS[name].t0_s
    sp, _ = _play(name, seed)
    restart = int(sp.params["restart_s"])
    s = functools.partial(_series, name, seed)
    assert s("cw.h1.pressure")[t0 + 5] <= 1.2
    assert s("cw.h1.pump1")[t0:restart].max() == 0.0
    assert s("cw.h1.pump1")[restart + 1] == 1.0
    assert 180 <= restart - t0 <= 360
    for p in ("p01", "p02", "p03", "p04"):
        flow = s(f"f1.cw.{p}.supply_flow")
        assert flow[t0 + 10 : restart].max() < 0.03 * flow[:t0].mean()
        dt = s(f"f1.cw.{p}.return_temp") - s(f"f1.cw.{p}.supply_temp")
        assert dt[restart - 1] - dt[:t0].mean() > 18.0
    for p in ("p01", "p02", "p03"):
        sup, ret = s(f"f1.cw.{p}.supply_flow"), s(f"f1.cw.{p}.return_flow")
        late = slice(restart + 120, None)
        assert 0.05 < float(np.median((sup[late] - ret[late]) / sup[late])) < 0.16
    h2 = s("f1.offgas.h2")
    assert h2[-300:].mean() - h2[:t0].mean() > 4.0
    fb = s("f1.freeboard_pressure")
    start, end = int(sp.params["swing_start_s"]), int(sp.params["swing_end_s"])
    swings = [fb[k : k + 5].max() - fb[k : k + 5].min() for k in range(start, end - 5)]
    assert max(swings) > 110.0
    assert max(fb[k : k + 5].max() - fb[k : k + 5].min() for k in range(t0 - 5)) < 40.0


@pytest.mark.parametrize("seed", SEEDS)
def test_tap_runout_signature(seed: int) -> None:
    """Tap run-out: after 8 h of the normal plant the tap block climbs +150–200 °C over 20 min;
    at tapping +300 °C in 2 min past 600 °C, neighbouring return water +15 °C, tapping-floor
    CO +50 ppm; a burst line, when drawn, takes over 30 % of the flow."""
    name = "tap-runout"
    t0 = SCENARIOS[name].t0_s
    sp, _ = _play(name, seed)
    s = functools.partial(_series, name, seed)
    tap = s("f1.sidewall.t01")
    assert tap[t0 + 120] - tap[t0 - 1] > 285.0
    assert tap[t0 + 180] > 630.0
    # Two weeks of climb (+150–200 °C), a ramp of 20 min after 8 h of the normal plant.
    a, b = TAP_BASELINE_S, TAP_BASELINE_S + TAP_CLIMB_S
    assert t0 - b == 20 * 60
    climb = _offset(name, seed, "f1.sidewall.t01")
    assert np.allclose(climb[:a], 0.0)
    assert 150.0 <= climb[b] <= 200.0
    assert np.allclose(climb[b : t0 - 600], sp.params["climb_c"], atol=0.002)
    assert abs(climb[(a + b) // 2] - 0.5 * climb[b]) < 0.01
    neighbour = _offset(name, seed, "f1.sidewall.t02")
    assert np.allclose(neighbour[b:t0], 0.3 * sp.params["climb_c"], atol=0.002)
    p01 = _offset(name, seed, "f1.cw.p01.return_temp")
    assert np.allclose(p01[b:t0], sp.params["dt_climb_c"], atol=0.002)
    dt = s("f1.cw.p01.return_temp") - s("f1.cw.p01.supply_temp")
    assert dt[t0 + 180] > 17.0
    co = s("tapping-floor.co")
    assert co[t0 + 180] - co[:t0].mean() > 45.0
    sup, ret = s("f1.cw.p01.supply_flow"), s("f1.cw.p01.return_flow")
    imbalance = float(np.median((sup[t0 + 200 :] - ret[t0 + 200 :]) / sup[t0 + 200 :]))
    assert imbalance > 0.3 if sp.params["burst"] else imbalance < 0.02


@pytest.mark.parametrize("seed", SEEDS)
def test_positive_pressure_signature(seed: int) -> None:
    """Fan trip: freeboard +80…200 Pa within 5 s, off-gas +100 °C, floor CO 150–600 ppm falling
    with distance, pressure negative again a minute after the fan restarts."""
    name = "positive-pressure"
    t0 = SCENARIOS[name].t0_s
    sp, _ = _play(name, seed)
    s = functools.partial(_series, name, seed)
    fb = s("f1.freeboard_pressure")
    assert fb[: t0 - 1].max() < 0.0
    assert 70.0 < fb[t0 + 5] < 215.0
    back = int(sp.params["fan_back_s"])
    assert fb[back + 60 :].max() < 5.0
    gas_temp = s("f1.offgas.temp")
    assert gas_temp[t0 + 90 : back].mean() - gas_temp[t0 - 60 : t0].mean() > 70.0
    peaks = [s(f"{a}.co")[t0:].max() for a in ("tapping-floor", "maintenance-bay", "slag-yard")]
    assert 140.0 < peaks[0] < 620.0
    assert peaks[0] > peaks[1] > peaks[2]
    assert s("tapping-floor.co")[-1] < 0.5 * peaks[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_oxygen_enrichment_signature(seed: int) -> None:
    """O₂ leak: the line falls ~5 bar over 60 s but never 2 bar in 10 s; platform O₂ 24–27 %."""
    name = "oxygen-enrichment"
    t0 = SCENARIOS[name].t0_s
    s = functools.partial(_series, name, seed)
    line = s("o2.l1.pressure")
    assert line[t0 - 1] - line[t0 + 61] > 4.0
    assert max(line[k] - line[k + 10] for k in range(len(line) - 10)) < 1.5
    o2 = s("tapping-floor.o2")
    assert o2[t0 + 660] > 23.8
    assert 23.8 < o2.max() < 27.5


@pytest.mark.parametrize("seed", SEEDS)
def test_slag_quench_signature(seed: int) -> None:
    """Slag quench: H₂S and SO₂ bursts in the slag yard, the first within a minute of T0."""
    name = "slag-quench"
    t0 = SCENARIOS[name].t0_s
    s = functools.partial(_series, name, seed)
    h2s, so2 = s("slag-yard.h2s"), s("slag-yard.so2")
    assert h2s[:t0].max() < 1.0
    assert h2s[t0 : t0 + 60].max() > 7.5
    assert so2[t0 : t0 + 60].max() > 2.8
    assert h2s.max() < 45.0
    assert s("tapping-floor.h2s").max() < 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_sensor_faults_signature(seed: int) -> None:
    """Faults: the work-area gateway silent and announced offline then online, bad quality,
    out-of-range spikes, dropouts, a stuck thermocouple and a low-reading CO detector."""
    sc = SCENARIOS["sensor-faults"]
    t0 = sc.t0_s
    sp = ScenarioPlant(FLEET, sc, seed)
    bare = Plant(FLEET, seed)
    silent = int(sp.params["silent_s"])
    assert 120 <= silent <= 600
    seen: dict[str, list[tuple[int, float, str]]] = {}
    gateways_at: dict[int, set[str]] = {}
    changes: list[tuple[int, str, bool]] = []
    for k in range(sc.duration_s):
        changes.extend((k, c.gateway, c.online) for c in sp.status_changes(k))
        grs = sp.readings(k)
        gateways_at[k] = {g.gateway for g in grs}
        for g in grs:
            qs = g.qualities or ["good"] * len(g)
            for sid, v, q in zip(g.sensor_ids, g.values, qs, strict=True):
                seen.setdefault(sid, []).append((k, v, q))
    assert changes == [(t0, "work-areas", False), (t0 + silent, "work-areas", True)]
    assert all("work-areas" not in gateways_at[k] for k in range(t0, t0 + silent))
    assert any("work-areas" in gateways_at[k] for k in range(t0 + silent, t0 + silent + 5))
    lel = seen["tapping-floor.lel"]
    assert {q for k, _, q in lel if t0 - 600 <= k < t0 - 420} == {"bad"}
    assert {q for k, _, q in lel if not t0 - 600 <= k < t0 - 420} == {"good"}
    co_spikes = [k for k, v, _ in seen["slag-yard.co"] if v > 2000.0]
    assert co_spikes == [t0 - 480, t0 - 360, t0 - 240]
    ticks = [k for k, _, _ in seen["f1.offgas.temp"]]
    gaps = [b - a for a, b in itertools.pairwise(ticks) if b - a > 5]
    assert len(gaps) == 3
    assert all(60 <= g <= 125 for g in gaps)
    stuck = [v for k, v, _ in seen["f1.sidewall.t02"] if t0 <= k < t0 + 1200]
    assert len(set(stuck)) == 1
    assert len({v for k, v, _ in seen["f1.sidewall.t02"] if k < t0}) > 10
    co = [(k, v) for k, v, _ in seen["maintenance-bay.co"]]
    i = sp.index("maintenance-bay.co")
    bare_co = {k: bare.values(k)[i] for k in range(600)}
    diffs = [bare_co[k] - v for k, v in co if k < 600 and v > 0.0]
    assert diffs
    assert np.allclose(diffs, 1.5, atol=1e-6)


def test_scenario_plays_on_another_fleet_at_its_first_furnace_site() -> None:
    """On the default fleet a scenario plays at the first site that has its furnace."""
    sp = ScenarioPlant(load_default_fleet(), SCENARIOS["pump-trip"], 1)
    assert sp.site == "morowali-a"
    assert sp.readings(0)


def test_scenario_needs_its_furnace() -> None:
    """A fleet without the scenario's furnace is refused with a ScenarioError."""
    fleet: Fleet = parse_fleet(
        '[[sites]]\nid = "s"\n[[sites.gateways]]\nid = "g"\nrole = "utilities"\n'
        "cw_headers = 1\npumps_per_header = 1\no2_lines = 0\n"
    )
    with pytest.raises(ScenarioError, match="F1"):
        ScenarioPlant(fleet, SCENARIOS["hot-work"], 1)


def test_ticks_are_played_forward_only() -> None:
    """Asking for a tick already passed raises ValueError, as the plant does."""
    sp = ScenarioPlant(FLEET, SCENARIOS["slag-quench"], 1)
    sp.values(10)
    with pytest.raises(ValueError, match="past"):
        sp.values(5)


# -- the checker -----------------------------------------------------------------------------


def _scenario() -> Scenario:
    base = SCENARIOS["pump-trip"]
    return Scenario(
        name="t",
        title="t",
        description="",
        t0_s=100,
        duration_s=400,
        site=base.site,
        furnace=base.furnace,
        permits=(),
        expectations=(
            Expectation("cw.pump_trip", "CW-H1", "critical", 110),
            Expectation("gas.co.level", "tapping-floor", "warning", 200),
        ),
        forbidden=(
            Forbidden("cw.", "", "baseline", before_s=100),
            Forbidden("gas.co", "slag-yard", "spike"),
        ),
        baseline_until_s=100,
        build=base.build,
    )


def test_checker_passes_alerts_that_meet_every_expectation() -> None:
    """Alerts at or above the expected severity, in time, and nothing forbidden: no problems."""
    alerts = [
        ObservedAlert("cw.pump_trip", "CW-H1", "critical", 103.0),
        ObservedAlert("gas.co.level", "tapping-floor", "critical", 150.0),
        ObservedAlert("cw.imbalance", "F1-CW-P01", "warning", 300.0),
        ObservedAlert("gas.co.level", "tapping-floor", "warning", 140.0),
    ]
    assert check(_scenario(), alerts) == []


@pytest.mark.parametrize(
    ("alerts", "problem"),
    [
        ([], "missing: no cw.pump_trip alert on CW-H1; expected critical by 110 s (T+10s)"),
        (
            [ObservedAlert("cw.pump_trip", "CW-H1", "warning", 101.0)],
            "too weak: cw.pump_trip on CW-H1 reached only warning",
        ),
        (
            [ObservedAlert("cw.pump_trip", "CW-H1", "critical", 130.0)],
            "too late: cw.pump_trip on CW-H1 reached critical at 130 s (T+30s); expected "
            "critical by 110 s (T+10s)",
        ),
        (
            [ObservedAlert("cw.pump_trip", "F1", "critical", 101.0)],
            "missing: no cw.pump_trip alert on CW-H1",
        ),
        (
            [ObservedAlert("cw.imbalance", "F1-CW-P02", "warning", 99.0)],
            "forbidden: cw.imbalance warning on F1-CW-P02 at 99 s (T−1s)",
        ),
        (
            [ObservedAlert("gas.co.twa", "slag-yard", "warning", 350.0)],
            "forbidden: gas.co.twa warning on slag-yard at 350 s",
        ),
    ],
)
def test_checker_names_each_problem(alerts: list[ObservedAlert], problem: str) -> None:
    """Missing, too weak, too late, wrong asset and forbidden alerts are each reported clearly."""
    problems = check(_scenario(), alerts)
    assert any(p.startswith(problem) for p in problems), problems


def test_forbidden_window_ends_at_its_deadline() -> None:
    """A forbidden-before window does not cover alerts starting at or after its end."""
    alerts = [
        ObservedAlert("cw.pump_trip", "CW-H1", "critical", 100.0),
        ObservedAlert("gas.co.level", "tapping-floor", "warning", 200.0),
    ]
    assert check(_scenario(), alerts) == []


def test_expectations_export_as_json_with_absolute_times() -> None:
    """A scenario's JSON carries its permits and expectations, in ms when a start is given."""
    doc = SCENARIOS["hot-work"].to_json(start_ms=1_000_000)
    assert doc["t0_ms"] == 1_000_000 + SCENARIOS["hot-work"].t0_s * 1000
    permit = doc["permits"][0]
    assert permit["asset"] == "F1"
    assert permit["open_ms"] == 1_000_000 + (8 * 3600 + 40 * 60) * 1000
    assert permit["close_ms"] is None
    assert {e["rule"] for e in doc["expectations"]} >= {"hotwork.tc", "hotwork.shell"}
    assert "start_ms" not in SCENARIOS["hot-work"].to_json()


def test_scenario_fleet_file_is_shipped() -> None:
    """The scenario fleet is one site with a furnace line, work areas and utilities."""
    assert [s.id for s in FLEET.site_specs] == ["scenario-site"]
    assert FLEET.sensor_count == 55
    assert Path("simulator/fleets/scenario.toml").is_file()
