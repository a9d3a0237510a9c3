"""The sensor catalogue: every kind has sane numbers and a source tag."""

from __future__ import annotations

import pytest

from simulator.catalogue import KINDS, kind

REQUIRED_UNITS = {
    "furnace_power": "MW",
    "electrode_current": "kA",
    "freeboard_pressure": "Pa",
    "offgas_co": "vol-%",
    "offgas_h2": "vol-%",
    "offgas_temp": "°C",
    "hearth_tc": "°C",
    "sidewall_tc": "°C",
    "shell_temp": "°C",
    "cw_supply_temp": "°C",
    "cw_return_temp": "°C",
    "cw_supply_flow": "m3/h",
    "cw_return_flow": "m3/h",
    "cw_header_pressure": "bar",
    "cw_pump_state": "state",
    "o2_line_pressure": "bar",
    "area_co": "ppm",
    "area_h2s": "ppm",
    "area_so2": "ppm",
    "area_no2": "ppm",
    "area_o2": "vol-%",
    "area_lel": "%LEL",
}


@pytest.mark.parametrize(("name", "unit"), sorted(REQUIRED_UNITS.items()))
def test_required_kind_has_its_unit(name: str, unit: str) -> None:
    """Each kind DOMAIN.md §2 lists exists with the wire unit the contract expects."""
    assert kind(name).unit == unit


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kind_numbers_are_consistent(name: str) -> None:
    """Baseline ± spread lies inside the physical range; noise and period are sane."""
    k = KINDS[name]
    assert k.min_value < k.baseline - k.spread
    assert k.baseline + k.spread <= k.max_value
    assert k.noise_sd >= 0
    assert k.period_s >= 1
    assert "[S" in k.source or "[A]" in k.source


def test_unknown_kind_is_named() -> None:
    """Asking for an unknown kind raises KeyError naming it."""
    with pytest.raises(KeyError, match="'kiln_temp'"):
        kind("kiln_temp")
