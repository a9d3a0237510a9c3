"""Fleet files: the shipped fleet, expansion to registry sites, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.registry import dump_site, parse_site
from simulator.command import export_registry
from simulator.fleet import FleetError, load_default_fleet, load_fleet, parse_fleet

GOOD_GATEWAY = """
[[sites.gateways]]
id = "f1-line"
role = "furnace"
furnace = "F1"
panels = 2
hearth_tcs = 1
sidewall_tcs = 1
shell_tcs = 1
"""


def test_default_fleet_has_the_promised_size() -> None:
    """The shipped fleet has at least 2 sites, 6 gateways and 300-500 sensors."""
    fleet = load_default_fleet()
    sites = fleet.sites()
    assert len(sites) >= 2
    assert sum(len(s.gateways) for s in sites) >= 6
    assert 300 <= sum(s.sensor_count for s in sites) <= 500


def test_exported_sites_parse_back_identically() -> None:
    """Every site of the default fleet survives dump_site -> parse_site unchanged."""
    for site in load_default_fleet().sites():
        assert parse_site(dump_site(site), source=site.id) == site


def test_export_registry_writes_one_parseable_file_per_site(tmp_path: Path) -> None:
    """export_registry writes <site>.toml per site, each a valid registry site file."""
    fleet = load_default_fleet()
    paths = export_registry(fleet, tmp_path / "registry")
    assert sorted(p.name for p in paths) == sorted(f"{s.id}.toml" for s in fleet.sites())
    for path, site in zip(paths, fleet.sites(), strict=True):
        assert parse_site(path.read_text(encoding="utf-8"), source=str(path)) == site


def test_panel_sensors_have_ids_and_circuit_assets() -> None:
    """A furnace line expands to ids like f1.cw.p03.return_temp with the circuit as asset."""
    site = parse_fleet(f'[[sites]]\nid = "s"\n{GOOD_GATEWAY}').sites()[0]
    sensors = {s.id: s for _, s in site.sensors()}
    assert sensors["f1.cw.p02.return_temp"].asset == "F1-CW-P02"
    assert sensors["f1.cw.p02.return_temp"].unit == "°C"
    assert sensors["f1.power"].asset == "F1"
    assert sensors["f1.power"].unit == "MW"
    assert {"f1.electrode.l1", "f1.electrode.l2", "f1.electrode.l3"} <= set(sensors)
    assert len(sensors) == 8 + 3 + 2 * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed = 1", "at least one [[sites]]"),
        ('[[sites]]\nid = "Bad Site"\n' + GOOD_GATEWAY, "sites[0]: 'id' must match"),
        ('[[sites]]\nid = "s"\n', "sites[0] (s): at least one [[sites.gateways]]"),
        (
            '[[sites]]\nid = "s"\n' + GOOD_GATEWAY.replace("panels = 2", "panels = 0"),
            "sites[0] (s).gateways[0] (f1-line): 'panels' must be an integer in 1..64",
        ),
        (
            '[[sites]]\nid = "s"\n' + GOOD_GATEWAY.replace('"furnace"\n', '"kiln"\n'),
            "sites[0] (s).gateways[0] (f1-line): 'role' must be one of",
        ),
        (
            '[[sites]]\nid = "s"\n[[sites.gateways]]\nid = "a"\nrole = "work-area"\n'
            '[[sites.gateways.areas]]\nname = "floor"\ngases = ["co", "ch4"]\n',
            "sites[0] (s).gateways[0] (a).areas[0] (floor): unknown gases ['ch4']",
        ),
        (
            '[[sites]]\nid = "s"\n' + GOOD_GATEWAY + GOOD_GATEWAY.replace('"f1-line"', '"f1-b"'),
            "sensor id 'f1.power' of gateway 'f1-b' is also made by gateway 'f1-line'",
        ),
        (
            '[[sites]]\nid = "s"\n' + GOOD_GATEWAY + GOOD_GATEWAY,
            "sites[0] (s).gateways[1]: gateway id 'f1-line' already used at "
            "sites[0] (s).gateways[0]",
        ),
        (
            '[[sites]]\nid = "s"\nfurnaces = 3\n' + GOOD_GATEWAY,
            "sites[0] (s): unknown keys ['furnaces']",
        ),
        ("seed = [", "not valid TOML"),
    ],
)
def test_fleet_errors_name_the_location(text: str, expected: str) -> None:
    """A broken fleet file raises FleetError whose message says where the problem is."""
    with pytest.raises(FleetError) as info:
        parse_fleet(text, source="fleet.toml")
    assert str(info.value).startswith("fleet.toml: ")
    assert expected in str(info.value)


def test_missing_fleet_file_is_named(tmp_path: Path) -> None:
    """Loading a file that does not exist raises FleetError naming the path."""
    path = tmp_path / "nope.toml"
    with pytest.raises(FleetError, match=r"nope\.toml: cannot read"):
        load_fleet(path)


def test_fleet_file_round_trips_through_load(tmp_path: Path) -> None:
    """load_fleet reads a file from disk with its seed and sites."""
    path = tmp_path / "fleet.toml"
    path.write_text(f'seed = 42\n[[sites]]\nid = "s"\n{GOOD_GATEWAY}', encoding="utf-8")
    fleet = load_fleet(path)
    assert fleet.seed == 42
    assert [s.id for s in fleet.sites()] == ["s"]
