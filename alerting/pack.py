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
                                   # | quality | gateway | anomaly
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
    priority = "medium"            # low | medium | high | urgent (advisory: anomaly only)
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
- anomaly: the streaming detector's score (`alerting.anomaly`, in [0, 1]) of each good
  reading; a level is a score strictly between 0 and 1, its priority must be "advisory" (the
  lowest: never escalated, never ranked with safety alarms, and no other kind may use it);
  deadband (below the level), off_delay_s; latch defaults to false at both levels; no
  on-delay, `when` only "always", requires_permit does not apply.

Derived signals are selected like sensors, by kind: "panel_dt" (return - supply temperature
of a cooling circuit, °C) and "cw_imbalance" (supply - return flow over supply flow, %).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any, Final


class PackError(ValueError):
    """Raised when a rule pack is not valid; `problems` lists each with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class Priority(StrEnum):
    """ISA-18.2 alarm priority, lowest first. `advisory` is below every safety priority: an
    anomaly detector's alert, never escalated, never a reason to act before a safety alarm."""

    ADVISORY = "advisory"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"

    def raised(self) -> Priority:
        """One level higher (urgent stays urgent, advisory stays advisory): escalation by the
        compliance record applies to safety alarms only."""
        if self is Priority.ADVISORY:
            return self
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
    ANOMALY = "anomaly"  # the streaming detector's score (alerting.anomaly) above a level


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


# --- parsing and validation -------------------------------------------------------------------

RULE_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
#: A level's `source` must carry one of these: a published source or an assumption tag.
SOURCE_TAGS: Final = ("[S", "[A")
DEFAULT_PACK_FILE: Final = "smelter-default.toml"

_TOP_KEYS: Final = ("pack", "plant", "rule")
_PACK_KEYS: Final = ("name", "version", "effective", "description")
_PLANT_KEYS: Final = (
    "power_kind",
    "energised_above_mw",
    "hot_kinds",
    "hot_above_c",
    "furnace_pattern",
)
_SELECTOR_KEYS: Final = ("kinds", "assets")
_COMMON_RULE_KEYS: Final = ("id", "kind", "title", "when", "requires_permit", "warning", "critical")
_KIND_RULE_KEYS: Final[Mapping[RuleKind, tuple[str, ...]]] = {
    RuleKind.THRESHOLD: ("sensors", "direction", "deadband", "off_delay_s"),
    RuleKind.RATE: ("sensors", "measure", "window_s", "per_s", "deadband", "off_delay_s"),
    RuleKind.DEVIATION: (
        "sensors",
        "measure",
        "baseline_s",
        "warmup_s",
        "deadband",
        "off_delay_s",
    ),
    RuleKind.EXPOSURE: ("sensors", "measure", "deadband", "off_delay_s"),
    RuleKind.STALE: ("sensors",),
    RuleKind.STUCK: ("sensors", "window_s"),
    RuleKind.QUALITY: ("sensors",),
    RuleKind.GATEWAY: (),  # a gateway rule watches gateways, not sensors
    RuleKind.ANOMALY: ("sensors", "deadband", "off_delay_s"),
}
_ALL_RULE_KEYS: Final = frozenset(_COMMON_RULE_KEYS).union(*_KIND_RULE_KEYS.values())
_MEASURES: Final[Mapping[RuleKind, tuple[str, ...]]] = {
    RuleKind.RATE: ("rise", "fall", "swing"),
    RuleKind.DEVIATION: ("rise", "fall", "abs"),
    RuleKind.EXPOSURE: ("twa_8h", "stel_15min"),
}
_DIRECTIONS: Final = ("high", "low")
_VALUE_LEVEL_KEYS: Final = ("level", "on_delay_s", "priority", "latch", "source")
_LEVEL_KEYS: Final[Mapping[RuleKind, tuple[str, ...]]] = {
    RuleKind.THRESHOLD: _VALUE_LEVEL_KEYS,
    RuleKind.RATE: _VALUE_LEVEL_KEYS,
    RuleKind.DEVIATION: _VALUE_LEVEL_KEYS,
    RuleKind.EXPOSURE: _VALUE_LEVEL_KEYS,
    # The silence is the delay, so a stale level has no on-delay of its own.
    RuleKind.STALE: ("level", "periods", "priority", "latch", "source"),
    RuleKind.STUCK: _VALUE_LEVEL_KEYS,
    RuleKind.QUALITY: ("priority", "source"),
    RuleKind.GATEWAY: ("on_delay_s", "priority", "latch", "source"),
    RuleKind.ANOMALY: _VALUE_LEVEL_KEYS,
}
_ALL_LEVEL_KEYS: Final = frozenset().union(*_LEVEL_KEYS.values())
#: Kinds whose levels are magnitudes (a rate, a distance, a limit, a silence, a spread).
_POSITIVE_LEVEL_KINDS: Final = frozenset(
    {RuleKind.RATE, RuleKind.DEVIATION, RuleKind.EXPOSURE, RuleKind.STALE, RuleKind.STUCK}
)
#: Kinds that need samples of a sensor, which a derived signal does not have of its own.
_SAMPLED_ONLY_KINDS: Final = frozenset(
    {RuleKind.EXPOSURE, RuleKind.STALE, RuleKind.STUCK, RuleKind.QUALITY}
)
#: An anomaly score is in [0, 1]: its levels are strictly inside.
_SCORE_KINDS: Final = frozenset({RuleKind.ANOMALY})
_TOML_POSITION_RE: Final = re.compile(r"\(at line (\d+), column \d+\)")


def default_pack_path() -> Path:
    """Path of the rule pack shipped with the package (`alerting/packs/smelter-default.toml`)."""
    return Path(__file__).parent / "packs" / DEFAULT_PACK_FILE


def load_pack(path: str | Path) -> Pack:
    """Read and parse one pack file; its sha256 is of the file's bytes.

    Raises OSError when the file cannot be read and PackError when it is not a valid pack.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError(str(path), [f"not UTF-8 text: {exc}"]) from None
    pack = parse_pack(text, str(path))
    return replace(pack, sha256=hashlib.sha256(data).hexdigest())


def parse_pack(text: str, source: str = "<rule pack>") -> Pack:
    """Parse and validate a pack; raise PackError listing every problem with its location."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION_RE.search(str(exc))
        where = f"line {match.group(1)}: " if match else ""
        raise PackError(source, [f"{where}TOML syntax error: {exc}"]) from None
    problems: list[str] = []
    _check_keys(doc, _TOP_KEYS, "top level", problems)

    head = _table(doc, "pack", "[pack]", problems, required=True)
    name = _string(head, "name", "[pack]", problems, required=True)
    version = _string(head, "version", "[pack]", problems, required=True)
    description = _string(head, "description", "[pack]", problems)
    effective = _effective(head, problems)
    _check_keys(head, _PACK_KEYS, "[pack]", problems)

    plant = _plant(_table(doc, "plant", "[plant]", problems), problems)

    rules: list[Rule] = []
    raw_rules = doc.get("rule")
    if raw_rules is None:
        problems.append("no rules: a pack needs at least one [[rule]]")
        raw_rules = []
    elif not isinstance(raw_rules, list):
        problems.append("rule must be an array of tables: write [[rule]], not [rule]")
        raw_rules = []
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(raw_rules, start=1):
        rule = _rule(raw, index, problems)
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(rule_id, str) and RULE_ID_RE.match(rule_id):
            # Checked on the raw id, so a duplicate is named even if the rule has other faults.
            if rule_id in first_seen:
                problems.append(
                    f"rule {rule_id!r} (rule #{index}): duplicate id, "
                    f"already used by rule #{first_seen[rule_id]}"
                )
                continue
            first_seen[rule_id] = index
        if rule is not None:
            rules.append(rule)

    if problems or effective is None:
        raise PackError(source, problems)
    return Pack(
        name=name,
        version=version,
        effective=effective,
        rules=tuple(rules),
        plant=plant,
        description=description,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


# The helpers below append "<where>: <message>" to `problems` and return a usable default, so
# that one pass reports every problem of the file instead of stopping at the first.


def _show(value: object) -> str:
    """A value as the TOML file would spell it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _check_keys(
    raw: Mapping[str, Any],
    allowed: Iterable[str],
    where: str,
    problems: list[str],
    *,
    elsewhere: Iterable[str] = (),
    what: str = "",
) -> None:
    """Name each key that is not allowed here, with the allowed ones and a likely intended one.

    `elsewhere` are keys that are valid in other kinds of the same table; `what` names this
    kind ("a threshold rule"), so a misplaced key is told apart from a typo.
    """
    allowed = sorted(allowed)
    other = set(elsewhere)
    for key in raw:
        if key in allowed:
            continue
        if key in other:
            problems.append(
                f"{where}: key {key!r} does not apply to {what}; allowed: {', '.join(allowed)}"
            )
            continue
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _table(
    raw: Mapping[str, Any], key: str, where: str, problems: list[str], *, required: bool = False
) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            problems.append(f"{where}: missing table")
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a table, got {_show(value)}")
        return {}
    return value


def _string(
    raw: Mapping[str, Any],
    key: str,
    where: str,
    problems: list[str],
    *,
    required: bool = False,
    default: str = "",
) -> str:
    if key not in raw:
        if required:
            problems.append(f"{where}: {key} is required")
        return default
    value = raw[key]
    if not isinstance(value, str):
        problems.append(f"{where}: {key} must be a string, got {_show(value)}")
        return default
    if required and not value.strip():
        problems.append(f"{where}: {key} must not be empty")
        return default
    return value


def _number(
    raw: Mapping[str, Any],
    key: str,
    where: str,
    problems: list[str],
    *,
    default: float | None = None,
    minimum: float | None = None,
    positive: bool = False,
    label: str = "",
) -> float | None:
    """A finite number; `positive` means > 0, `minimum` means >= minimum.

    Without a default the key is required. Returns None when missing or invalid.
    """
    name = label or key
    if key not in raw:
        if default is None:
            problems.append(f"{where}: {name} is required")
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where}: {name} must be a number, got {_show(value)}")
        return None
    number = float(value)
    if not math.isfinite(number):
        problems.append(f"{where}: {name} must be a finite number, got {_show(value)}")
        return None
    if positive and not number > 0:
        problems.append(f"{where}: {name} must be greater than 0, got {_show(value)}")
        return None
    if minimum is not None and number < minimum:
        problems.append(f"{where}: {name} must be at least {minimum:g}, got {_show(value)}")
        return None
    return number


def _bool(
    raw: Mapping[str, Any], key: str, where: str, problems: list[str], *, default: bool, label: str
) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        problems.append(f"{where}: {label} must be true or false, got {_show(value)}")
        return default
    return value


def _choice(
    raw: Mapping[str, Any],
    key: str,
    choices: Iterable[str],
    where: str,
    problems: list[str],
    *,
    default: str | None = None,
    label: str = "",
) -> str | None:
    """One of `choices`; without a default the key is required. None when missing or invalid."""
    name = label or key
    options = list(choices)
    if key not in raw:
        if default is None:
            problems.append(f"{where}: {name} is required: one of {', '.join(options)}")
        return default
    value = raw[key]
    if value in options:
        return str(value)
    close = difflib.get_close_matches(value, options, n=1) if isinstance(value, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    problems.append(f"{where}: {name} {_show(value)} is not one of {', '.join(options)}{hint}")
    return None


def _strings(value: object, where: str, name: str, problems: list[str]) -> tuple[str, ...]:
    """A list of non-empty, distinct strings."""
    if not isinstance(value, list):
        problems.append(f"{where}: {name} must be an array of strings, got {_show(value)}")
        return ()
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            problems.append(f"{where}: {name} must hold non-empty strings, got {_show(item)}")
        elif item in out:
            problems.append(f"{where}: {name} lists {item!r} twice")
        else:
            out.append(item)
    return tuple(out)


def _effective(head: Mapping[str, Any], problems: list[str]) -> datetime | None:
    if "effective" not in head:
        if head:
            problems.append("[pack]: effective is required (a TOML date, e.g. 2026-12-01)")
        return None
    value = head["effective"]
    if isinstance(value, datetime):
        # A TOML local datetime has no offset: the format says it is UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0), tzinfo=UTC)
    hint = " (write it unquoted)" if isinstance(value, str) else ""
    problems.append(
        f"[pack].effective: must be a TOML date or datetime such as 2026-12-01 or "
        f"2026-12-01T06:00:00+08:00, got {_show(value)}{hint}"
    )
    return None


def _plant(raw: Mapping[str, Any], problems: list[str]) -> PlantModel:
    where = "[plant]"
    default = PlantModel()
    _check_keys(raw, _PLANT_KEYS, where, problems)
    power_kind = _string(raw, "power_kind", where, problems, default=default.power_kind)
    if not power_kind.strip():
        problems.append(f"{where}: power_kind must not be empty")
    energised = _number(
        raw, "energised_above_mw", where, problems, default=default.energised_above_mw, minimum=0
    )
    hot_kinds = default.hot_kinds
    if "hot_kinds" in raw:
        hot_kinds = _strings(raw["hot_kinds"], where, "hot_kinds", problems)
        if raw["hot_kinds"] == []:
            problems.append(f"{where}: hot_kinds must name at least one sensor kind")
    hot_above = _number(raw, "hot_above_c", where, problems, default=default.hot_above_c)
    pattern = _string(raw, "furnace_pattern", where, problems, default=default.furnace_pattern)
    try:
        if re.compile(pattern).groups < 1:
            problems.append(
                f"{where}: furnace_pattern {pattern!r} needs a group, e.g. '^(F[0-9]+)': "
                "group 1 is the furnace"
            )
    except re.error as exc:
        problems.append(f"{where}: furnace_pattern {pattern!r} is not a valid regex: {exc}")
    return PlantModel(
        power_kind=power_kind,
        energised_above_mw=default.energised_above_mw if energised is None else energised,
        hot_kinds=hot_kinds,
        hot_above_c=default.hot_above_c if hot_above is None else hot_above,
        furnace_pattern=pattern,
    )


def _selector(raw: Mapping[str, Any], kind: RuleKind, where: str, problems: list[str]) -> Selector:
    if "sensors" not in raw:
        problems.append(f'{where}: sensors is required, e.g. sensors = {{ kinds = ["area_co"] }}')
        return Selector(kinds=())
    value = raw["sensors"]
    if not isinstance(value, dict):
        problems.append(f"{where}: sensors must be a table like {{ kinds = [...] }}")
        return Selector(kinds=())
    _check_keys(value, _SELECTOR_KEYS, f"{where}: sensors", problems)
    kinds: tuple[str, ...] = ()
    if "kinds" not in value:
        problems.append(f"{where}: sensors.kinds is required")
    else:
        kinds = _strings(value["kinds"], where, "sensors.kinds", problems)
        if isinstance(value["kinds"], list) and not value["kinds"]:
            problems.append(f"{where}: sensors.kinds must name at least one sensor kind")
    if kind in _SAMPLED_ONLY_KINDS:
        problems.extend(
            f"{where}: sensors.kinds {k!r} is derived by the engine and has no samples "
            f"of its own; a {kind} rule cannot watch it"
            for k in kinds
            if k in DERIVED_KINDS
        )
    assets = _strings(value.get("assets", []), where, "sensors.assets", problems)
    return Selector(kinds=kinds, assets=assets)


def _level(
    raw: object, severity: Severity, kind: RuleKind, where: str, problems: list[str]
) -> Level | None:
    name = severity.value
    if not isinstance(raw, dict):
        problems.append(f"{where}: {name} must be a table ([rule.{name}]), got {_show(raw)}")
        return None
    allowed = _LEVEL_KEYS[kind]
    _check_keys(
        raw,
        allowed,
        f"{where}: {name}",
        problems,
        elsewhere=_ALL_LEVEL_KEYS,
        what=f"a level of a {kind} rule",
    )
    n_before = len(problems)
    value: float | None = 0.0
    if "level" in allowed:
        value = _number(
            raw,
            "level",
            where,
            problems,
            positive=kind in _POSITIVE_LEVEL_KINDS,
            label=f"{name}.level",
        )
    on_delay = _number(
        raw, "on_delay_s", where, problems, default=0.0, minimum=0, label=f"{name}.on_delay_s"
    )
    periods = _number(
        raw, "periods", where, problems, default=0.0, minimum=0, label=f"{name}.periods"
    )
    priority = _choice(
        raw, "priority", [p.value for p in Priority], where, problems, label=f"{name}.priority"
    )
    latch = _bool(
        raw,
        "latch",
        where,
        problems,
        # An advisory asks for a look, not a reset: it does not latch unless told to.
        default=severity is Severity.CRITICAL and kind is not RuleKind.ANOMALY,
        label=f"{name}.latch",
    )
    if kind in _SCORE_KINDS and value is not None and not 0 < value < 1:
        problems.append(
            f"{where}: {name}.level {value:g} must be an anomaly score between 0 and 1 (exclusive)"
        )
    if priority is not None:
        if kind in _SCORE_KINDS and priority != Priority.ADVISORY.value:
            problems.append(
                f"{where}: {name}.priority of an anomaly rule must be 'advisory', got "
                f"{priority!r}: a detector's alert never ranks with safety alarms"
            )
        elif kind not in _SCORE_KINDS and priority == Priority.ADVISORY.value:
            problems.append(
                f"{where}: {name}.priority 'advisory' is for anomaly rules only; a {kind} "
                "rule is a safety rule (low, medium, high or urgent)"
            )
    source = raw.get("source")
    if source is None:
        problems.append(
            f"{where}: {name}.source is required: where the number comes from, "
            "tagged [S: ...] (a published source) or [A] (an engineering assumption)"
        )
    elif not isinstance(source, str) or not any(tag in source for tag in SOURCE_TAGS):
        problems.append(
            f"{where}: {name}.source must be a string carrying a source tag '[S: ...]' or an "
            f"assumption tag '[A]', got {_show(source)}"
        )
    if len(problems) > n_before or value is None or priority is None:
        return None
    return Level(
        severity=severity,
        level=value,
        on_delay_s=on_delay or 0.0,
        priority=Priority(priority),
        latch=latch,
        periods=periods or 0.0,
        source=str(source),
    )


def _check_order(rule: Rule, where: str, problems: list[str]) -> None:
    """The critical level must be the more extreme of the two."""
    warning, critical = rule.level(Severity.WARNING), rule.level(Severity.CRITICAL)
    if warning is None or critical is None:
        return
    if rule.kind is RuleKind.THRESHOLD and rule.direction == "low":
        ok, relation, why = critical.level <= warning.level, "at or below", "a low threshold"
    elif rule.kind is RuleKind.STUCK:
        ok, relation, why = critical.level <= warning.level, "at or below", "a stuck rule"
    elif rule.kind in (RuleKind.QUALITY, RuleKind.GATEWAY):
        return
    else:
        ok, relation = critical.level >= warning.level, "at or above"
        why = "a high threshold" if rule.kind is RuleKind.THRESHOLD else f"a {rule.kind} rule"
    if not ok:
        problems.append(
            f"{where}: critical.level {critical.level:g} must be {relation} warning.level "
            f"{warning.level:g} for {why}"
        )


def _rule(raw: object, index: int, problems: list[str]) -> Rule | None:
    where = f"rule #{index}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table ([[rule]])")
        return None
    n_before = len(problems)
    rule_id = raw.get("id")
    if rule_id is None:
        problems.append(f"{where}: id is required")
    elif not isinstance(rule_id, str) or not RULE_ID_RE.match(rule_id):
        problems.append(f"{where}: id {_show(rule_id)} must match {RULE_ID_RE.pattern}")
    else:
        where = f"rule {rule_id!r} (rule #{index})"

    kind_name = _choice(raw, "kind", [k.value for k in RuleKind], where, problems)
    kind = RuleKind(kind_name) if kind_name is not None else None
    title = _string(raw, "title", where, problems, required=True)
    when = _choice(raw, "when", [w.value for w in When], where, problems, default="always")
    requires_permit = _bool(
        raw, "requires_permit", where, problems, default=False, label="requires_permit"
    )
    if kind is None:
        # Without a kind the allowed keys are unknown; name only keys valid for no kind.
        _check_keys(raw, _ALL_RULE_KEYS, where, problems)
        return None
    _check_keys(
        raw,
        _COMMON_RULE_KEYS + _KIND_RULE_KEYS[kind],
        where,
        problems,
        elsewhere=_ALL_RULE_KEYS,
        what=f"a {kind} rule",
    )
    sensors = (
        Selector(kinds=())
        if "sensors" not in _KIND_RULE_KEYS[kind]
        else _selector(raw, kind, where, problems)
    )

    def opt(key: str, default: float, **bounds: Any) -> float:
        """A kind-specific number; absent keys of other kinds keep the dataclass default."""
        if key not in _KIND_RULE_KEYS[kind]:
            return default
        got = _number(raw, key, where, problems, default=default, **bounds)
        return default if got is None else got

    def required(key: str) -> float:
        if key not in _KIND_RULE_KEYS[kind]:
            return 0.0
        got = _number(raw, key, where, problems, positive=True)
        return 0.0 if got is None else got

    direction = "high"
    if kind is RuleKind.THRESHOLD:
        direction = _choice(raw, "direction", _DIRECTIONS, where, problems) or "high"
    measure = ""
    if kind in _MEASURES:
        measure = _choice(raw, "measure", _MEASURES[kind], where, problems) or ""
    deadband = opt("deadband", 0.0, minimum=0)
    off_delay = opt("off_delay_s", 0.0, minimum=0)
    window = required("window_s")
    per_s = opt("per_s", 1.0, positive=True)
    baseline = required("baseline_s")
    warmup = opt("warmup_s", 0.0, minimum=0)

    levels: list[Level] = []
    for severity in Severity:
        if severity.value in raw:
            lv = _level(raw[severity.value], severity, kind, where, problems)
            if lv is not None:
                levels.append(lv)
    if Severity.WARNING.value not in raw and Severity.CRITICAL.value not in raw:
        problems.append(f"{where}: needs at least one level: [rule.warning] or [rule.critical]")

    if kind is RuleKind.ANOMALY:
        # A score is a one-reading spike (the detector holds it back afterwards): an on-delay
        # would never be met, a deadband as large as the level would never clear, and the
        # detector runs whatever the plant state.
        if requires_permit:
            problems.append(f"{where}: requires_permit does not apply to an anomaly rule")
        if when != "always":
            problems.append(f"{where}: when must be 'always' for an anomaly rule, got {when!r}")
        for lv in levels:
            if lv.on_delay_s > 0:
                problems.append(
                    f"{where}: {lv.severity}.on_delay_s must be 0 for an anomaly rule (a score "
                    "is a single reading's)"
                )
            if deadband >= lv.level:
                problems.append(
                    f"{where}: deadband {deadband:g} must be below {lv.severity}.level "
                    f"{lv.level:g}, or the advisory never clears"
                )
    if len(problems) > n_before or not isinstance(rule_id, str) or when is None:
        return None
    rule = Rule(
        id=rule_id,
        kind=kind,
        title=title,
        sensors=sensors,
        levels=tuple(levels),
        when=When(when),
        requires_permit=requires_permit,
        direction=direction,
        measure=measure,
        deadband=deadband,
        off_delay_s=off_delay,
        window_s=window,
        per_s=per_s,
        baseline_s=baseline,
        warmup_s=warmup,
    )
    _check_order(rule, where, problems)
    return None if len(problems) > n_before else rule
