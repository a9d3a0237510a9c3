"""Fleet files: which sites, gateways and sensors the simulator runs, written compactly.

Owns the fleet file format, its validation (every problem named with its location), and the
expansion of each gateway's compact description into explicit `ingest.registry` sensors with
stable ids. Pure apart from `load_fleet`, which reads the file it is given; it must not open
sockets, read the clock or draw random numbers.

Fleet file (TOML)::

    seed = 20231224                  # default seed of the plant model

    [[sites]]
    id = "morowali-a"                # an MQTT topic level: [a-z0-9][a-z0-9_-]*
    name = "Morowali smelter A"

    [[sites.gateways]]               # a furnace line: the furnace and its cooling panels
    id = "f1-line"
    role = "furnace"
    furnace = "F1"
    panels = 12                      # cooling panels, 4 sensors each
    hearth_tcs = 8
    sidewall_tcs = 16
    shell_tcs = 8

    [[sites.gateways]]               # gas detectors in work areas
    id = "areas"
    role = "work-area"
    [[sites.gateways.areas]]
    name = "tapping-floor"
    gases = ["co", "h2s", "so2", "no2", "o2", "lel"]

    [[sites.gateways]]               # cooling-water headers and pumps, oxygen lines
    id = "utilities"
    role = "utilities"
    cw_headers = 2
    pumps_per_header = 3
    o2_lines = 1

Sensor ids (unique within a site): `f1.power`, `f1.electrode.l2`, `f1.offgas.co`,
`f1.hearth.t03`, `f1.cw.p03.return_temp`, `cw.h1.pressure`, `cw.h1.pump2`, `o2.l1.pressure`,
`tapping-floor.co`. A sensor's asset is its furnace (`F1`), cooling circuit (`F1-CW-P03`,
`CW-H1`, `O2-L1`) or work area (`tapping-floor`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from ingest.registry import SENSOR_ID_RE, TOPIC_LEVEL_RE, Gateway, Sensor, Site
from simulator.catalogue import AREA_GASES, KINDS

FURNACE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$")
ROLES: Final = ("furnace", "work-area", "utilities")
DEFAULT_FLEET: Final = "fleets/default.toml"
SCENARIO_FLEET: Final = "fleets/scenario.toml"


class FleetError(ValueError):
    """Raised when a fleet file cannot be read or is not valid; `problems` name each location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class FurnaceLine:
    """A gateway on one furnace: power, electrodes, off-gas, thermocouples, cooling panels."""

    id: str
    furnace: str
    panels: int
    hearth_tcs: int
    sidewall_tcs: int
    shell_tcs: int
    description: str = ""


@dataclass(frozen=True, slots=True)
class WorkArea:
    """A work area and the gases its detectors measure (short names of `AREA_GASES`)."""

    name: str
    gases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkAreaGateway:
    """A gateway collecting gas detectors of several work areas."""

    id: str
    areas: tuple[WorkArea, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Utilities:
    """A gateway on the cooling-water headers (pressure, pumps) and the oxygen lines."""

    id: str
    cw_headers: int
    pumps_per_header: int
    o2_lines: int
    description: str = ""


GatewaySpec = FurnaceLine | WorkAreaGateway | Utilities


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """A site as the fleet file describes it."""

    id: str
    name: str
    gateways: tuple[GatewaySpec, ...]


@dataclass(frozen=True, slots=True)
class Fleet:
    """A parsed fleet: the default seed and its sites."""

    seed: int
    site_specs: tuple[SiteSpec, ...]
    source: str = "<fleet>"

    def sites(self) -> list[Site]:
        """Expand every site to registry sites with explicit sensors."""
        return [expand_site(s) for s in self.site_specs]

    @property
    def sensor_count(self) -> int:
        """Number of sensors across all sites."""
        return sum(s.sensor_count for s in self.sites())

    @property
    def gateway_count(self) -> int:
        """Number of gateways across all sites."""
        return sum(len(s.gateways) for s in self.site_specs)


# -- expansion ------------------------------------------------------------------------------


def _sensor(sensor_id: str, kind_name: str, asset: str, where: str) -> Sensor:
    k = KINDS[kind_name]
    return Sensor(
        id=sensor_id,
        kind=k.name,
        unit=k.unit,
        min_value=k.min_value,
        max_value=k.max_value,
        period_s=float(k.period_s),
        asset=asset,
        description=f"{k.description} ({where})",
    )


def _furnace_sensors(g: FurnaceLine) -> list[Sensor]:
    f, fid = g.furnace, g.furnace.lower()
    out = [
        _sensor(f"{fid}.power", "furnace_power", f, f),
        *(
            _sensor(f"{fid}.electrode.l{p}", "electrode_current", f, f"{f} phase L{p}")
            for p in (1, 2, 3)
        ),
        _sensor(f"{fid}.freeboard_pressure", "freeboard_pressure", f, f),
        _sensor(f"{fid}.offgas.co", "offgas_co", f, f),
        _sensor(f"{fid}.offgas.h2", "offgas_h2", f, f),
        _sensor(f"{fid}.offgas.temp", "offgas_temp", f, f),
    ]
    for part, kind_name, count in (
        ("hearth", "hearth_tc", g.hearth_tcs),
        ("sidewall", "sidewall_tc", g.sidewall_tcs),
        ("shell", "shell_temp", g.shell_tcs),
    ):
        out.extend(
            _sensor(f"{fid}.{part}.t{i:02d}", kind_name, f, f"{f} {part} T{i:02d}")
            for i in range(1, count + 1)
        )
    for p in range(1, g.panels + 1):
        circuit = f"{f}-CW-P{p:02d}"
        out.extend(
            _sensor(f"{fid}.cw.p{p:02d}.{name}", f"cw_{name}", circuit, circuit)
            for name in ("supply_temp", "return_temp", "supply_flow", "return_flow")
        )
    return out


def _area_sensors(g: WorkAreaGateway) -> list[Sensor]:
    return [
        _sensor(f"{a.name}.{gas}", AREA_GASES[gas], a.name, a.name)
        for a in g.areas
        for gas in a.gases
    ]


def _utility_sensors(g: Utilities) -> list[Sensor]:
    out: list[Sensor] = []
    for h in range(1, g.cw_headers + 1):
        circuit = f"CW-H{h}"
        out.append(_sensor(f"cw.h{h}.pressure", "cw_header_pressure", circuit, circuit))
        out.extend(
            _sensor(f"cw.h{h}.pump{p}", "cw_pump_state", circuit, f"{circuit} pump {p}")
            for p in range(1, g.pumps_per_header + 1)
        )
    out.extend(
        _sensor(f"o2.l{n}.pressure", "o2_line_pressure", f"O2-L{n}", f"O2-L{n}")
        for n in range(1, g.o2_lines + 1)
    )
    return out


def expand_gateway(g: GatewaySpec) -> Gateway:
    """The registry gateway for a compact gateway description."""
    match g:
        case FurnaceLine():
            sensors = _furnace_sensors(g)
        case WorkAreaGateway():
            sensors = _area_sensors(g)
        case Utilities():
            sensors = _utility_sensors(g)
    return Gateway(id=g.id, sensors=tuple(sensors), description=g.description)


def expand_site(s: SiteSpec) -> Site:
    """The registry site for a site of the fleet file."""
    return Site(id=s.id, name=s.name, gateways=tuple(expand_gateway(g) for g in s.gateways))


# -- parsing --------------------------------------------------------------------------------


def _int(
    raw: dict[str, Any], key: str, bounds: tuple[int, int], where: str, problems: list[str]
) -> int:
    lo, hi = bounds
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        problems.append(f"{where}: '{key}' must be an integer in {lo}..{hi}, not {value!r}")
        return lo
    return value


def _check_keys(raw: dict[str, Any], allowed: set[str], where: str, problems: list[str]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _parse_furnace(raw: dict[str, Any], gid: str, where: str, problems: list[str]) -> FurnaceLine:
    _check_keys(
        raw,
        {
            "id",
            "role",
            "description",
            "furnace",
            "panels",
            "hearth_tcs",
            "sidewall_tcs",
            "shell_tcs",
        },
        where,
        problems,
    )
    furnace = raw.get("furnace")
    if not isinstance(furnace, str) or not FURNACE_RE.match(furnace):
        problems.append(f"{where}: 'furnace' must match {FURNACE_RE.pattern}, not {furnace!r}")
        furnace = "F0"
    return FurnaceLine(
        id=gid,
        furnace=furnace,
        panels=_int(raw, "panels", (1, 64), where, problems),
        hearth_tcs=_int(raw, "hearth_tcs", (0, 128), where, problems),
        sidewall_tcs=_int(raw, "sidewall_tcs", (0, 128), where, problems),
        shell_tcs=_int(raw, "shell_tcs", (0, 128), where, problems),
        description=str(raw.get("description", "")),
    )


def _parse_areas(raw: dict[str, Any], gid: str, where: str, problems: list[str]) -> WorkAreaGateway:
    _check_keys(raw, {"id", "role", "description", "areas"}, where, problems)
    areas_raw = raw.get("areas")
    if not isinstance(areas_raw, list) or not areas_raw:
        problems.append(f"{where}: 'areas' must be a non-empty array of tables")
        return WorkAreaGateway(id=gid, areas=())
    areas: list[WorkArea] = []
    for ai, araw in enumerate(areas_raw):
        awhere = f"{where}.areas[{ai}]"
        if not isinstance(araw, dict):
            problems.append(f"{awhere}: must be a table with 'name' and 'gases'")
            continue
        _check_keys(araw, {"name", "gases"}, awhere, problems)
        name = araw.get("name")
        if not isinstance(name, str) or not TOPIC_LEVEL_RE.match(name):
            problems.append(f"{awhere}: 'name' must match {TOPIC_LEVEL_RE.pattern}, not {name!r}")
            continue
        gases = araw.get("gases", list(AREA_GASES))
        if not isinstance(gases, list) or not gases:
            problems.append(f"{awhere} ({name}): 'gases' must be a non-empty array")
            continue
        bad = [g for g in gases if g not in AREA_GASES]
        if bad:
            problems.append(
                f"{awhere} ({name}): unknown gases {bad}; known: {', '.join(AREA_GASES)}"
            )
            continue
        if len(set(gases)) != len(gases):
            problems.append(f"{awhere} ({name}): 'gases' lists a gas twice")
            continue
        areas.append(WorkArea(name=name, gases=tuple(gases)))
    return WorkAreaGateway(id=gid, areas=tuple(areas), description=str(raw.get("description", "")))


def _parse_utilities(raw: dict[str, Any], gid: str, where: str, problems: list[str]) -> Utilities:
    _check_keys(
        raw,
        {"id", "role", "description", "cw_headers", "pumps_per_header", "o2_lines"},
        where,
        problems,
    )
    g = Utilities(
        id=gid,
        cw_headers=_int(raw, "cw_headers", (0, 8), where, problems),
        pumps_per_header=_int(raw, "pumps_per_header", (1, 8), where, problems),
        o2_lines=_int(raw, "o2_lines", (0, 8), where, problems),
        description=str(raw.get("description", "")),
    )
    if g.cw_headers == 0 and g.o2_lines == 0:
        problems.append(f"{where}: a utilities gateway needs cw_headers or o2_lines")
    return g


def _parse_gateway(raw: object, where: str, problems: list[str]) -> GatewaySpec | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table")
        return None
    gid = raw.get("id")
    if not isinstance(gid, str) or not TOPIC_LEVEL_RE.match(gid):
        problems.append(f"{where}: 'id' must match {TOPIC_LEVEL_RE.pattern}, not {gid!r}")
        return None
    where = f"{where} ({gid})"
    role = raw.get("role")
    match role:
        case "furnace":
            return _parse_furnace(raw, gid, where, problems)
        case "work-area":
            return _parse_areas(raw, gid, where, problems)
        case "utilities":
            return _parse_utilities(raw, gid, where, problems)
    problems.append(f"{where}: 'role' must be one of {', '.join(ROLES)}, not {role!r}")
    return None


def _parse_site(raw: object, where: str, problems: list[str]) -> SiteSpec | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table")
        return None
    sid = raw.get("id")
    if not isinstance(sid, str) or not TOPIC_LEVEL_RE.match(sid):
        problems.append(f"{where}: 'id' must match {TOPIC_LEVEL_RE.pattern}, not {sid!r}")
        return None
    where = f"{where} ({sid})"
    _check_keys(raw, {"id", "name", "gateways"}, where, problems)
    name = raw.get("name", sid)
    if not isinstance(name, str):
        problems.append(f"{where}: 'name' must be a string")
        name = sid
    gateways_raw = raw.get("gateways")
    if not isinstance(gateways_raw, list) or not gateways_raw:
        problems.append(f"{where}: at least one [[sites.gateways]] entry is required")
        return None
    gateways: list[GatewaySpec] = []
    seen: dict[str, str] = {}
    for gi, graw in enumerate(gateways_raw):
        gwhere = f"{where}.gateways[{gi}]"
        g = _parse_gateway(graw, gwhere, problems)
        if g is None:
            continue
        if g.id in seen:
            problems.append(f"{gwhere}: gateway id {g.id!r} already used at {seen[g.id]}")
            continue
        seen[g.id] = gwhere
        gateways.append(g)
    spec = SiteSpec(id=sid, name=name, gateways=tuple(gateways))
    _check_sensor_ids(spec, where, problems)
    return spec


def _check_sensor_ids(spec: SiteSpec, where: str, problems: list[str]) -> None:
    owner: dict[str, str] = {}
    for g in spec.gateways:
        for s in expand_gateway(g).sensors:
            if not SENSOR_ID_RE.match(s.id):
                problems.append(f"{where}: gateway {g.id!r} makes invalid sensor id {s.id!r}")
            elif s.id in owner:
                problems.append(
                    f"{where}: sensor id {s.id!r} of gateway {g.id!r} is also made by "
                    f"gateway {owner[s.id]!r} (give each furnace/area its own name)"
                )
            else:
                owner[s.id] = g.id


def parse_fleet(text: str, source: str = "<fleet file>") -> Fleet:
    """Parse a fleet file; raise FleetError naming every problem and where it is."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(source, [f"not valid TOML: {exc}"]) from exc
    problems: list[str] = []
    _check_keys(doc, {"seed", "sites"}, "top level", problems)
    seed = doc.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(f"top level: 'seed' must be a non-negative integer, not {seed!r}")
        seed = 0
    sites_raw = doc.get("sites")
    if not isinstance(sites_raw, list) or not sites_raw:
        problems.append("top level: at least one [[sites]] entry is required")
        sites_raw = []
    sites: list[SiteSpec] = []
    seen: dict[str, str] = {}
    for si, sraw in enumerate(sites_raw):
        where = f"sites[{si}]"
        spec = _parse_site(sraw, where, problems)
        if spec is None:
            continue
        if spec.id in seen:
            problems.append(f"{where}: site id {spec.id!r} already used at {seen[spec.id]}")
            continue
        seen[spec.id] = where
        sites.append(spec)
    if problems:
        raise FleetError(source, problems)
    return Fleet(seed=seed, site_specs=tuple(sites), source=source)


def load_fleet(path: str | Path) -> Fleet:
    """Read and parse a fleet file; raise FleetError naming the file and each problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError(str(path), [f"cannot read the fleet file: {exc.strerror or exc}"]) from exc
    return parse_fleet(text, source=str(path))


def _load_shipped(name: str) -> Fleet:
    try:
        text = resources.files("simulator").joinpath(name).read_text(encoding="utf-8")
    except NotADirectoryError:
        # An editable install made while simulator/ had no __init__.py registers it as a
        # namespace package, which importlib.resources cannot read; the file is beside us.
        text = (Path(__file__).parent / name).read_text(encoding="utf-8")
    return parse_fleet(text, source=f"simulator/{name}")


def load_default_fleet() -> Fleet:
    """The fleet shipped with the package (two Morowali sites)."""
    return _load_shipped(DEFAULT_FLEET)


def load_scenario_fleet() -> Fleet:
    """The small one-site fleet the incident scenarios are written for (`scenario-site`)."""
    return _load_shipped(SCENARIO_FLEET)
