"""The sensor registry: site -> gateway -> sensor, with kind, unit and physical range.

Pure: parses and writes site files (TOML) and answers look-ups. It does no I/O beyond the text
it is given; storing the registry in the database is `store`'s job.

Site file format (one site per file)::

    [site]
    id = "morowali-a"            # an MQTT topic level: [a-z0-9][a-z0-9_-]*
    name = "Morowali plant A"

    [[gateways]]
    id = "f1-gw1"

    [[gateways.sensors]]
    id = "f1.power"              # unique within the site
    kind = "furnace_power"
    unit = "MW"
    range = [-1.0, 120.0]        # physical range: readings outside it are rejected
    period_s = 1.0               # nominal sampling period
    asset = "F1"                 # the furnace, circuit or work area it watches
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import tomli_w

TOPIC_LEVEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SENSOR_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class RegistryError(ValueError):
    """Raised when a site file is not valid; `problems` lists each one with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Sensor:
    """One sensor as the registry knows it."""

    id: str
    kind: str
    unit: str
    min_value: float
    max_value: float
    period_s: float
    asset: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Gateway:
    """A site gateway and the sensors it reports."""

    id: str
    sensors: tuple[Sensor, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Site:
    """A facility: its identity and its gateways."""

    id: str
    name: str
    gateways: tuple[Gateway, ...]
    _by_gateway: Mapping[str, Gateway] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_gateway", {g.id: g for g in self.gateways})

    def gateway(self, gateway_id: str) -> Gateway | None:
        """Return the gateway with this id, or None."""
        return self._by_gateway.get(gateway_id)

    def sensors(self) -> Iterator[tuple[Gateway, Sensor]]:
        """Yield every (gateway, sensor) pair of the site."""
        for g in self.gateways:
            for s in g.sensors:
                yield g, s

    @property
    def sensor_count(self) -> int:
        """Number of sensors across all gateways."""
        return sum(len(g.sensors) for g in self.gateways)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_sensor(raw: Any, where: str, problems: list[str]) -> Sensor | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table")
        return None
    ok = True
    for key in ("id", "kind", "unit"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            problems.append(f"{where}: '{key}' must be a non-empty string")
            ok = False
    sid = raw.get("id")
    if isinstance(sid, str) and sid and not SENSOR_ID_RE.match(sid):
        problems.append(f"{where}: sensor id {sid!r} has characters outside [A-Za-z0-9_.:-]")
        ok = False
    rng = raw.get("range")
    if not (isinstance(rng, list) and len(rng) == 2 and all(_number(v) for v in rng)):
        problems.append(f"{where}: 'range' must be [min, max] numbers")
        ok = False
    elif not rng[0] < rng[1]:
        problems.append(f"{where}: 'range' min {rng[0]} must be below max {rng[1]}")
        ok = False
    period = raw.get("period_s", 1.0)
    if not _number(period) or period <= 0:
        problems.append(f"{where}: 'period_s' must be a positive number")
        ok = False
    for key in ("asset", "description"):
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"{where}: '{key}' must be a string")
            ok = False
    unknown = set(raw) - {"id", "kind", "unit", "range", "period_s", "asset", "description"}
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}")
        ok = False
    if not ok or not isinstance(rng, list):
        return None
    return Sensor(
        id=raw["id"],
        kind=raw["kind"],
        unit=raw["unit"],
        min_value=float(rng[0]),
        max_value=float(rng[1]),
        period_s=float(period),
        asset=raw.get("asset", ""),
        description=raw.get("description", ""),
    )


def parse_site(text: str, source: str = "<site file>") -> Site:
    """Parse a site file; raise RegistryError naming every problem and where it is."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(source, [f"not valid TOML: {exc}"]) from exc
    problems: list[str] = []
    site_raw = doc.get("site")
    if not isinstance(site_raw, dict):
        raise RegistryError(source, ["missing [site] table"])
    site_id = site_raw.get("id")
    if not isinstance(site_id, str) or not TOPIC_LEVEL_RE.match(site_id):
        problems.append(f"[site].id {site_id!r} must match {TOPIC_LEVEL_RE.pattern}")
    name = site_raw.get("name", site_id)
    if not isinstance(name, str):
        problems.append("[site].name must be a string")
    gateways_raw = doc.get("gateways", [])
    if not isinstance(gateways_raw, list) or not gateways_raw:
        problems.append("at least one [[gateways]] entry is required")
        gateways_raw = []
    gateways: list[Gateway] = []
    seen_gateways: set[str] = set()
    seen_sensors: dict[str, str] = {}
    for gi, graw in enumerate(gateways_raw):
        gwhere = f"gateways[{gi}]"
        if not isinstance(graw, dict):
            problems.append(f"{gwhere}: must be a table")
            continue
        gid = graw.get("id")
        if not isinstance(gid, str) or not TOPIC_LEVEL_RE.match(gid):
            problems.append(f"{gwhere}.id {gid!r} must match {TOPIC_LEVEL_RE.pattern}")
            gid = f"<gateway {gi}>"
        elif gid in seen_gateways:
            problems.append(f"{gwhere}.id {gid!r} is a duplicate")
        seen_gateways.add(gid)
        gwhere = f"gateways[{gi}] ({gid})"
        sensors: list[Sensor] = []
        for si, sraw in enumerate(graw.get("sensors", [])):
            swhere = f"{gwhere}.sensors[{si}]"
            sensor = _parse_sensor(sraw, swhere, problems)
            if sensor is None:
                continue
            if sensor.id in seen_sensors:
                problems.append(
                    f"{swhere}: sensor id {sensor.id!r} already used at {seen_sensors[sensor.id]}"
                )
                continue
            seen_sensors[sensor.id] = swhere
            sensors.append(sensor)
        gateways.append(
            Gateway(id=gid, sensors=tuple(sensors), description=str(graw.get("description", "")))
        )
    if problems:
        raise RegistryError(source, problems)
    return Site(id=str(site_id), name=str(name), gateways=tuple(gateways))


def site_to_dict(site: Site) -> dict[str, Any]:
    """The site as the plain structure of its TOML file."""
    return {
        "site": {"id": site.id, "name": site.name},
        "gateways": [
            {
                "id": g.id,
                **({"description": g.description} if g.description else {}),
                "sensors": [
                    {
                        "id": s.id,
                        "kind": s.kind,
                        "unit": s.unit,
                        "range": [s.min_value, s.max_value],
                        "period_s": s.period_s,
                        **({"asset": s.asset} if s.asset else {}),
                        **({"description": s.description} if s.description else {}),
                    }
                    for s in g.sensors
                ],
            }
            for g in site.gateways
        ],
    }


def dump_site(site: Site) -> str:
    """Write a site as site-file TOML; parse_site(dump_site(s)) == s."""
    return tomli_w.dumps(site_to_dict(site))
