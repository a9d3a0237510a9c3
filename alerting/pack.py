"""The rule pack: a versioned TOML file of alert rules, parsed and validated.

Owns the pack's data model (frozen dataclasses below), `parse_pack` / `load_pack`, and the
validation that `tungku rules check` reports: every problem with its location (file, rule
id or table path, key) and a message that names it. A pack with any problem is refused as a
whole (`PackError`); the engine keeps the pack it already runs.

Pure: parses text it is given. No I/O except `load_pack`, which reads one file.

File format (see `alerting/packs/smelter-default.toml` for a complete example)::

    [pack]
    name = "smelter-default"
    version = "2026.11.1"          # recorded with every alert this pack raises
    effective = 2026-12-01         # TOML date or datetime (UTC if no offset): in force from
    description = "..."

    [plant]                        # how plant state is read from the readings
    power_kind = "furnace_power"   # sensor kind that says a furnace is energised
    energised_above_mw = 5.0       # [A]
    hot_kinds = ["hearth_tc", "sidewall_tc"]
    hot_above_c = 300.0            # furnace counts as hot while any of these is above [A]
    furnace_pattern = "^(F[0-9]+)" # regex: an asset's furnace is group 1 of a match

    [[rule]]
    id = "freeboard.positive"      # unique; [a-z0-9][a-z0-9._-]*
    kind = "threshold"             # threshold | rate | deviation | exposure | stale | stuck
                                   # | quality | gateway
    title = "Freeboard pressure above atmospheric: CO can escape"
    sensors = { kinds = ["freeboard_pressure"] }   # selector; also assets = ["F1", ...]
    when = "energised"             # always | energised | hot | off: outside it the rule is
                                   # suppressed by design (recorded, not discarded)
    requires_permit = false        # true: only while a hot-work permit covers the asset
    direction = "high"             # threshold: high | low
    deadband = 5.0                 # in the sensor's unit; the level must be cleared by this
    off_delay_s = 5.0
    [rule.warning]
    level = 0.0
    on_delay_s = 10.0
    priority = "medium"            # low | medium | high | urgent
    source = "[A] DOMAIN.md §3"    # mandatory: a source or an assumption tag
    [rule.critical]
    level = 50.0
    on_delay_s = 3.0
    priority = "high"
    latch = true                   # default true for critical, false for warning
    source = "[A]"

Kind-specific keys:

- threshold: direction, deadband, off_delay_s.
- rate: measure = "rise" | "fall" | "swing"; window_s; per_s (levels are in unit per per_s:
  3600 for °C/h, 60 for °C/min; swing levels are max - min within the window); deadband;
  off_delay_s.
- deviation: measure = "rise" | "fall" | "abs"; baseline_s (time constant of the signal's own
  exponentially weighted baseline, in event time); warmup_s (no alert before this much
  history); levels are distances from the baseline; deadband; off_delay_s.
- exposure: measure = "twa_8h" | "stel_15min"; levels are limits on the time-weighted mean;
  deadband; off_delay_s. (A ceiling is a `threshold` on the instantaneous value.)
- stale: levels' `level` is the silence in seconds; `periods` (optional, per level) makes the
  silence max(level, periods * sensor period).
- stuck: window_s; levels' `level` is the spread (max - min) below which the signal is stuck.
- quality: no level keys beyond priority/source: fires while a sensor's readings are bad
  (quality "bad", or a value outside its physical range); suppresses that sensor's process
  rules, recorded as suppressed.
- gateway: fires while a gateway is offline (its status / last will).

Derived signals are selected like sensors, by kind: "panel_dt" (return - supply temperature
of a cooling circuit, °C) and "cw_imbalance" (supply - return flow over supply flow, %).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class PackError(ValueError):
    """Raised when a rule pack is not valid; `problems` lists each with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class Priority(StrEnum):
    """ISA-18.2 alarm priority, lowest first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"

    def raised(self) -> Priority:
        """One level higher (urgent stays urgent): escalation by the compliance record."""
        order = list(Priority)
        return order[min(order.index(self) + 1, len(order) - 1)]


class Severity(StrEnum):
    """Which level of a rule is active."""

    WARNING = "warning"
    CRITICAL = "critical"


class RuleKind(StrEnum):
    """The kinds of rule the engine evaluates."""

    THRESHOLD = "threshold"
    RATE = "rate"
    DEVIATION = "deviation"
    EXPOSURE = "exposure"
    STALE = "stale"
    STUCK = "stuck"
    QUALITY = "quality"
    GATEWAY = "gateway"


class When(StrEnum):
    """Plant state in which a rule makes sense; outside it the rule is suppressed by design."""

    ALWAYS = "always"
    ENERGISED = "energised"
    HOT = "hot"  # energised, or any hearth/sidewall thermocouple above plant.hot_above_c
    OFF = "off"  # not energised


#: Sensor kinds the engine computes itself from pairs of cooling-circuit sensors.
DERIVED_KINDS = ("panel_dt", "cw_imbalance")


@dataclass(frozen=True, slots=True)
class Level:
    """One level (warning or critical) of a rule."""

    severity: Severity
    level: float
    on_delay_s: float = 0.0
    priority: Priority = Priority.MEDIUM
    latch: bool = False
    periods: float = 0.0  # stale only
    source: str = ""


@dataclass(frozen=True, slots=True)
class Selector:
    """Which sensors a rule applies to: by kind, optionally narrowed to assets."""

    kinds: tuple[str, ...]
    assets: tuple[str, ...] = ()

    def matches(self, kind: str, asset: str) -> bool:
        """True when a sensor of this kind on this asset is selected."""
        return kind in self.kinds and (not self.assets or asset in self.assets)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of the pack. Levels are ordered warning first; either may be absent."""

    id: str
    kind: RuleKind
    title: str
    sensors: Selector
    levels: tuple[Level, ...]
    when: When = When.ALWAYS
    requires_permit: bool = False
    direction: str = "high"  # threshold: high | low
    measure: str = ""  # rate: rise|fall|swing; deviation: rise|fall|abs; exposure: twa_8h|...
    deadband: float = 0.0
    off_delay_s: float = 0.0
    window_s: float = 0.0  # rate, stuck
    per_s: float = 1.0  # rate
    baseline_s: float = 0.0  # deviation
    warmup_s: float = 0.0  # deviation

    def level(self, severity: Severity) -> Level | None:
        """The level of this severity, or None."""
        for lv in self.levels:
            if lv.severity is severity:
                return lv
        return None


@dataclass(frozen=True, slots=True)
class PlantModel:
    """How plant state is read from the readings."""

    power_kind: str = "furnace_power"
    energised_above_mw: float = 5.0
    hot_kinds: tuple[str, ...] = ("hearth_tc", "sidewall_tc")
    hot_above_c: float = 300.0
    furnace_pattern: str = "^(F[0-9]+)"


@dataclass(frozen=True, slots=True)
class Pack:
    """A validated rule pack."""

    name: str
    version: str
    effective: datetime  # timezone-aware UTC
    rules: tuple[Rule, ...]
    plant: PlantModel = field(default_factory=PlantModel)
    description: str = ""
    sha256: str = ""  # of the file's bytes, recorded with the pack in the database

    def rule(self, rule_id: str) -> Rule | None:
        """The rule with this id, or None."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None
