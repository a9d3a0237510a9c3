"""The plant model: deterministic, in range, and physically coupled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.registry import Site
from simulator.fleet import Fleet, load_default_fleet
from simulator.plant import PANEL_DT_RANGE_C, Plant

FLEET: Fleet = load_default_fleet()
SITES: list[Site] = FLEET.sites()


def _by_sensor(plant: Plant, k: int) -> dict[tuple[str, str], float]:
    return {
        (g.site, sid): v
        for g in plant.readings(k)
        for sid, v in zip(g.sensor_ids, g.values, strict=True)
    }


def test_same_seed_same_readings() -> None:
    """Two plants with the same seed give identical readings, tick by tick."""
    a, b = Plant(FLEET, 7), Plant(SITES, 7)
    for k in range(300):
        assert a.readings(k) == b.readings(k)


def test_other_seed_other_readings() -> None:
    """A different seed gives different values."""
    a, b = Plant(FLEET, 7), Plant(FLEET, 8)
    assert not np.array_equal(a.values(0), b.values(0))


@settings(max_examples=20, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=400), min_size=1, max_size=30))
def test_value_at_tick_does_not_depend_on_which_ticks_were_asked(ticks: set[int]) -> None:
    """Skipping ticks gives the same values at the ticks asked for as stepping through all."""
    full = Plant(SITES, 3)
    every = [full.values(k) for k in range(max(ticks) + 1)]
    sparse = Plant(SITES, 3)
    for k in sorted(ticks):
        assert np.array_equal(sparse.values(k), every[k])


def test_asking_for_a_past_tick_is_an_error() -> None:
    """The model only moves forward: a tick already passed raises ValueError."""
    plant = Plant(SITES, 1)
    plant.values(5)
    with pytest.raises(ValueError, match="in the past"):
        plant.values(5)


def test_values_stay_inside_physical_ranges() -> None:
    """Over a few thousand ticks every value lies inside its sensor's physical range."""
    plant = Plant(SITES, 11)
    sensors = [s for site in SITES for _, s in site.sensors()]
    lo = np.array([s.min_value for s in sensors])
    hi = np.array([s.max_value for s in sensors])
    for k in range(4000):
        v = plant.values(k)
        assert np.all(v >= lo)
        assert np.all(v <= hi)
        assert np.all(np.isfinite(v))


def test_values_sit_in_their_normal_bands() -> None:
    """Typical values match DOMAIN.md §2: supply water 30-35 °C, O2 near 20.9 %, power 30-80 MW."""
    plant = Plant(SITES, 5)
    seen: dict[str, list[float]] = {}
    for k in range(0, 2000, 10):
        for (_, sid), v in _by_sensor(plant, k).items():
            seen.setdefault(sid, []).append(v)
    assert 29.0 < np.mean(seen["f1.cw.p01.supply_temp"]) < 36.0
    assert 20.5 < np.mean(seen["tapping-floor.o2"]) < 21.3
    assert 30.0 < np.mean(seen["f1.power"]) < 80.0
    assert np.mean(seen["f1.freeboard_pressure"]) < 0.0


def test_return_temperature_is_supply_plus_panel_delta_t() -> None:
    """Each panel's return temperature is its supply temperature plus a ΔT of 3-8 °C."""
    plant = Plant(SITES, 13)
    lo, hi = PANEL_DT_RANGE_C
    rounding = 0.0011  # both values are rounded to 3 decimals
    panels = 0
    for k in range(3000):
        values = _by_sensor(plant, k)
        for (site, sid), ret in values.items():
            if sid.endswith(".return_temp"):
                supply = values[(site, sid.replace(".return_temp", ".supply_temp"))]
                assert lo - rounding <= ret - supply <= hi + rounding
                panels += 1
    assert panels > 3000 * 50


def test_panel_delta_t_wanders() -> None:
    """A panel's ΔT is its own process: it moves over time rather than being constant."""
    plant = Plant(SITES, 17)
    deltas = []
    for k in range(2000):
        v = _by_sensor(plant, k)
        deltas.append(
            v[("morowali-a", "f1.cw.p01.return_temp")] - v[("morowali-a", "f1.cw.p01.supply_temp")]
        )
    assert np.std(deltas) > 0.05


def test_return_flow_is_supply_flow_less_a_tiny_loss() -> None:
    """Return flow tracks supply flow: on average a little lower, within 1 %."""
    plant = Plant(SITES, 19)
    ratios = []
    for k in range(1000):
        v = _by_sensor(plant, k)
        ratios.append(
            v[("morowali-b", "f2.cw.p16.return_flow")] / v[("morowali-b", "f2.cw.p16.supply_flow")]
        )
    assert 0.99 < np.mean(ratios) < 1.0


def test_offgas_temperature_follows_furnace_power() -> None:
    """Off-gas temperature correlates positively with its furnace's power."""
    plant = Plant(SITES, 23)
    power, temp = [], []
    for k in range(0, 20000, 5):
        v = _by_sensor(plant, k)
        power.append(v[("morowali-a", "f1.power")])
        temp.append(v[("morowali-a", "f1.offgas.temp")])
    assert np.corrcoef(power, temp)[0, 1] > 0.3


def test_sensors_report_only_on_their_period() -> None:
    """A sensor with period p appears at tick k only when k % p == 0."""
    plant = Plant(SITES, 29)
    period = {s.id: int(s.period_s) for site in SITES for _, s in site.sensors()}
    for k in range(21):
        due = {sid for g in plant.readings(k) for sid in g.sensor_ids}
        expected = {sid for sid, p in period.items() if k % p == 0}
        assert due == expected


@pytest.mark.parametrize("count", [1, 247, 248, 424, 425, 1000, 12345])
def test_ticks_for_count_is_the_smallest_sufficient(count: int) -> None:
    """ticks_for(n) is the fewest ticks from 0 whose due readings reach n."""
    plant = Plant(SITES, 0)
    ticks = plant.ticks_for(count)
    produced = sum(plant.readings_due(k) for k in range(ticks))
    assert produced >= count
    assert produced - plant.readings_due(ticks - 1) < count
