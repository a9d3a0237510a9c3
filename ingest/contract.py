"""Wire contract v1: MQTT topics and JSON payloads between site gateways and Tungku.

Pure: parses topics, decodes and validates payloads against the sensor registry, and encodes
payloads for gateways (the simulator uses the same encoder). No sockets, no database, no clock:
the caller passes `now_us`.

Topics
    tungku/v1/<site>/<gateway>/readings   QoS 1, not retained
    tungku/v1/<site>/<gateway>/status     QoS 1, retained; also the gateway's MQTT last will

Readings payload (UTF-8 JSON object)::

    {"gateway": "f1-gw1", "seq": 17,
     "readings": [{"sensor": "f1.power", "ts": "2026-11-28T07:00:00.250+08:00",
                   "value": 61.2, "unit": "MW", "quality": "good"}, ...]}

`ts` is RFC 3339 with an offset or an integer of milliseconds since the Unix epoch; `quality`
is good|uncertain|bad and defaults to good.

A message-level problem (too big, not JSON, wrong shape, gateway mismatch, unknown gateway)
rejects the whole message. A reading-level problem rejects only that reading; the good
readings of the same message are kept.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Final

import orjson

CONTRACT_VERSION: Final = "v1"
TOPIC_ROOT: Final = f"tungku/{CONTRACT_VERSION}"
READINGS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/+/readings"
STATUS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/+/status"
DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: RFC 3339 date-time; Python's fromisoformat alone also takes week dates and other ISO forms.
_RFC3339_RE: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)
MAX_SEQ: Final = 2**63 - 1
#: Readings stamped before 2000-01-01 are treated as a broken gateway clock, not history.
MIN_TS_US: Final = 946_684_800_000_000


class Quality(IntEnum):
    """Reading quality as stored (smallint)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


_QUALITY_BY_NAME: Final = {"good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD}


class Reason(StrEnum):
    """Why a message or a reading was rejected; stored in the rejects table."""

    OVERSIZED = "oversized"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_GATEWAY = "unknown_gateway"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    BAD_SCHEMA = "bad_schema"
    GATEWAY_MISMATCH = "gateway_mismatch"
    UNKNOWN_SENSOR = "unknown_sensor"
    WRONG_UNIT = "wrong_unit"
    BAD_VALUE = "bad_value"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_QUALITY = "bad_quality"
    STALE_TIMESTAMP = "stale_timestamp"
    DUPLICATE_READING = "duplicate_reading"


class ContractError(ValueError):
    """Raised when a topic or payload breaks wire contract v1 as a whole."""

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed contract topic."""

    site: str
    gateway: str
    channel: str  # "readings" or "status"


def readings_topic(site: str, gateway: str) -> str:
    """Topic a gateway publishes its readings on."""
    return f"{TOPIC_ROOT}/{site}/{gateway}/readings"


def status_topic(site: str, gateway: str) -> str:
    """Retained topic a gateway publishes its online/offline state on."""
    return f"{TOPIC_ROOT}/{site}/{gateway}/status"


def parse_topic(topic: str) -> Topic:
    """Split a contract topic; raise ContractError(BAD_TOPIC) for anything else."""
    parts = topic.split("/")
    if (
        len(parts) != 5
        or parts[0] != "tungku"
        or parts[1] != CONTRACT_VERSION
        or parts[4] not in ("readings", "status")
        or not parts[2]
        or not parts[3]
    ):
        raise ContractError(
            Reason.BAD_TOPIC, f"topic {topic!r} is not tungku/v1/<site>/<gateway>/readings|status"
        )
    return Topic(site=parts[2], gateway=parts[3], channel=parts[4])


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """What decoding needs to know of a registered sensor."""

    key: int  # the database id of the sensor
    unit: str
    min_value: float
    max_value: float


#: (site, gateway) -> sensor id -> spec
SensorIndex = Mapping[tuple[str, str], Mapping[str, SensorSpec]]


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Validation limits, from settings."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_future_skew_s: float = 300.0
    #: Readings older than this are refused as stale (a gateway clock reset, not history);
    #: 0 accepts anything since 2000-01-01.
    max_age_s: float = 400 * 86_400


@dataclass(frozen=True, slots=True)
class ReadingError:
    """One rejected reading of an otherwise readable message."""

    index: int
    reason: Reason
    message: str
    #: For a value outside its sensor's physical range with a usable time: (key, ts_us,
    #: value), so alerting can count it as a bad-quality reading of that sensor.
    sample: tuple[int, int, float] | None = None


@dataclass(slots=True)
class Readings:
    """The accepted readings of one message, as columns, plus its rejected readings."""

    site: str
    gateway: str
    seq: int
    sensor_keys: list[int] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    qualities: list[int] = field(default_factory=list)
    errors: list[ReadingError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class Status:
    """A gateway's online/offline announcement (or its last will)."""

    site: str
    gateway: str
    online: bool
    ts_us: int | None
    #: Why `ts` was unusable, when it was: the state still counts (a gateway that went offline
    #: must not stay "online" because its clock is wrong), the time is dropped.
    ts_error: str | None = None


def parse_ts(raw: object) -> int:
    """Return a timestamp as microseconds since the epoch; raise ValueError naming the problem."""
    if isinstance(raw, bool):
        raise ValueError("timestamp must be an RFC 3339 string or integer epoch milliseconds")
    if isinstance(raw, int):
        return raw * 1000
    if isinstance(raw, str):
        m = _RFC3339_RE.match(raw)
        if m is None:
            raise ValueError(f"timestamp {raw!r} is not RFC 3339 (YYYY-MM-DDThh:mm:ss[.f]±hh:mm)")
        if m.group("offset") is None:
            raise ValueError(f"timestamp {raw!r} has no UTC offset")
        try:
            dt = datetime.fromisoformat(raw)
            delta = dt - _EPOCH
        except (ValueError, OverflowError):
            raise ValueError(f"timestamp {raw!r} is not a valid date and time") from None
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise ValueError("timestamp must be an RFC 3339 string or integer epoch milliseconds")


def format_ts(ts_us: int) -> str:
    """RFC 3339 (UTC, microseconds) for a timestamp in epoch microseconds, or the raw number
    when it is beyond what a datetime can hold."""
    try:
        return datetime.fromtimestamp(ts_us / 1_000_000, tz=UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        return f"{ts_us} µs after the epoch"


def _load_object(payload: bytes, limits: DecodeLimits) -> dict[str, Any]:
    if len(payload) > limits.max_payload_bytes:
        raise ContractError(
            Reason.OVERSIZED,
            f"payload of {len(payload)} bytes exceeds the {limits.max_payload_bytes}-byte limit",
        )
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(Reason.NOT_UTF8, f"payload is not UTF-8: {exc}") from None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ContractError(Reason.MALFORMED_JSON, f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ContractError(Reason.BAD_SCHEMA, "payload must be a JSON object")
    return doc


def decode_status(topic: Topic, payload: bytes, limits: DecodeLimits, *, now_us: int) -> Status:
    """Decode a status message; raise ContractError when its state is unusable. A bad `ts`
    alone is reported in `ts_error` and dropped."""
    doc = _load_object(payload, limits)
    state = doc.get("state")
    if state not in ("online", "offline"):
        raise ContractError(
            Reason.BAD_SCHEMA, f"status 'state' must be online|offline, not {state!r}"
        )
    ts_us: int | None = None
    ts_error: str | None = None
    if "ts" in doc:
        try:
            ts_us = parse_ts(doc["ts"])
        except ValueError as exc:
            ts_error = str(exc)
        else:
            if not MIN_TS_US <= ts_us <= now_us + int(limits.max_future_skew_s * 1_000_000):
                ts_error = (
                    f"status timestamp {format_ts(ts_us)} is before 2000-01-01 or more than "
                    f"{limits.max_future_skew_s:g} s ahead of the service clock"
                )
                ts_us = None
    return Status(
        site=topic.site,
        gateway=topic.gateway,
        online=state == "online",
        ts_us=ts_us,
        ts_error=ts_error,
    )


def decode_readings(
    topic: Topic,
    payload: bytes,
    *,
    index: SensorIndex,
    now_us: int,
    limits: DecodeLimits,
    fast: bool = True,
) -> Readings:
    """Decode and validate a readings message.

    Raises ContractError when the message as a whole is unusable; otherwise returns the
    accepted readings with a ReadingError for each rejected one. `fast=False` checks every
    reading rule by rule; the result is the same (a property test holds them equal), only
    slower.
    """
    sensors = index.get((topic.site, topic.gateway))
    if sensors is None:
        # Checked before parsing: a gateway we do not know gets no benefit of the doubt.
        if len(payload) > limits.max_payload_bytes:
            _load_object(payload, limits)
        raise ContractError(
            Reason.UNKNOWN_GATEWAY,
            f"gateway {topic.gateway!r} of site {topic.site!r} is not in the registry",
        )
    doc = _load_object(payload, limits)
    gateway = doc.get("gateway")
    if not isinstance(gateway, str):
        raise ContractError(Reason.BAD_SCHEMA, "'gateway' must be a string")
    if gateway != topic.gateway:
        raise ContractError(
            Reason.GATEWAY_MISMATCH,
            f"payload gateway {gateway!r} does not match topic gateway {topic.gateway!r}",
        )
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise ContractError(Reason.BAD_SCHEMA, "'seq' must be an integer in [0, 2^63 - 1]")
    items = doc.get("readings")
    if not isinstance(items, list):
        raise ContractError(Reason.BAD_SCHEMA, "'readings' must be an array")

    out = Readings(site=topic.site, gateway=topic.gateway, seq=seq)
    max_ts_us = now_us + int(limits.max_future_skew_s * 1_000_000)
    min_ts_us = (
        max(MIN_TS_US, now_us - int(limits.max_age_s * 1_000_000))
        if limits.max_age_s
        else MIN_TS_US
    )
    window = _Window(topic.gateway, min_ts_us, max_ts_us, limits)
    if fast and _decode_fast(items, sensors, window, out):
        return out
    out = Readings(site=topic.site, gateway=topic.gateway, seq=seq)
    seen: set[tuple[int, int]] = set()
    for i, item in enumerate(items):
        checked = _check_reading(i, item, sensors, window)
        if isinstance(checked, ReadingError):
            out.errors.append(checked)
            continue
        key, ts, value, quality = checked
        if (key, ts) in seen:
            out.errors.append(
                ReadingError(
                    i,
                    Reason.DUPLICATE_READING,
                    f"{item['sensor']!r} at {format_ts(ts)} appears earlier in the same message",
                )
            )
            continue
        seen.add((key, ts))
        out.sensor_keys.append(key)
        out.ts_us.append(ts)
        out.values.append(value)
        out.qualities.append(quality)
    return out


@dataclass(frozen=True, slots=True)
class _Window:
    gateway: str
    min_ts_us: int
    max_ts_us: int
    limits: DecodeLimits


def _decode_fast(
    items: list[Any], sensors: Mapping[str, SensorSpec], w: _Window, out: Readings
) -> bool:
    """The common case at full speed: integer times, numbers in range, known sensors. Any
    other reading goes through `_check_reading`. Returns False when the message repeats a
    (sensor, ts), which the careful path sorts out reading by reading."""
    keys, tss, values, quals, errors = (
        out.sensor_keys,
        out.ts_us,
        out.values,
        out.qualities,
        out.errors,
    )
    lo_ts, hi_ts = w.min_ts_us, w.max_ts_us
    for i, item in enumerate(items):
        try:
            spec = sensors[item["sensor"]]
            value = item["value"]
            raw_ts = item["ts"]
            tv = type(value)
            if (
                (tv is float or tv is int)
                and type(raw_ts) is int
                and lo_ts <= (ts := raw_ts * 1000) <= hi_ts
                and item["unit"] == spec.unit
                and spec.min_value <= value <= spec.max_value
            ):
                q = item.get("quality")
                quality = 0 if q is None or q == "good" else _QUALITY_BY_NAME.get(q, -1)
                if quality >= 0:
                    keys.append(spec.key)
                    tss.append(ts)
                    values.append(float(value))
                    quals.append(quality)
                    continue
        except (KeyError, TypeError):
            pass
        checked = _check_reading(i, item, sensors, w)
        if isinstance(checked, ReadingError):
            errors.append(checked)
        else:
            keys.append(checked[0])
            tss.append(checked[1])
            values.append(checked[2])
            quals.append(checked[3])
    return len(keys) < 2 or len(set(zip(keys, tss, strict=True))) == len(keys)


def _check_reading(
    i: int, item: Any, sensors: Mapping[str, SensorSpec], w: _Window
) -> tuple[int, int, float, int] | ReadingError:
    """One reading, checked rule by rule: its (key, ts_us, value, quality), or why not."""
    if not isinstance(item, dict):
        return ReadingError(i, Reason.BAD_SCHEMA, "reading must be a JSON object")
    sensor_id = item.get("sensor")
    spec = sensors.get(sensor_id) if isinstance(sensor_id, str) else None
    if spec is None:
        return ReadingError(
            i,
            Reason.UNKNOWN_SENSOR,
            f"sensor {sensor_id!r} is not registered on gateway {w.gateway!r}",
        )
    unit = item.get("unit")
    if unit != spec.unit:
        return ReadingError(
            i,
            Reason.WRONG_UNIT,
            f"sensor {sensor_id!r} reports in {spec.unit!r}, reading has unit {unit!r}",
        )
    raw = item.get("value")
    if type(raw) is not float and type(raw) is not int:
        return ReadingError(i, Reason.BAD_VALUE, f"value {raw!r} of {sensor_id!r} is not a number")
    # Compared before float(): an integer too large for a float is out of range, not a crash.
    if not spec.min_value <= raw <= spec.max_value:
        sample = None
        with contextlib.suppress(ValueError, OverflowError):
            sample = (spec.key, parse_ts(item.get("ts")), float(raw))
        return ReadingError(
            i,
            Reason.OUT_OF_RANGE,
            f"value {raw} of {sensor_id!r} is outside its physical range "
            f"[{spec.min_value}, {spec.max_value}] {spec.unit}",
            sample,
        )
    value = float(raw)
    if not math.isfinite(value):
        return ReadingError(i, Reason.BAD_VALUE, f"value of {sensor_id!r} is not finite")
    raw_ts = item.get("ts")
    try:
        ts = parse_ts(raw_ts)
    except ValueError as exc:
        return ReadingError(i, Reason.BAD_TIMESTAMP, f"{sensor_id!r}: {exc}")
    if ts < w.min_ts_us:
        return ReadingError(
            i,
            Reason.STALE_TIMESTAMP,
            f"{sensor_id!r}: timestamp {format_ts(ts)} is before 2000-01-01 or older "
            f"than {w.limits.max_age_s / 86_400:g} days",
        )
    if ts > w.max_ts_us:
        return ReadingError(
            i,
            Reason.FUTURE_TIMESTAMP,
            f"{sensor_id!r}: timestamp {format_ts(ts)} is more than "
            f"{w.limits.max_future_skew_s:g} s ahead of the service clock",
        )
    q = item.get("quality", "good")
    quality = _QUALITY_BY_NAME.get(q) if isinstance(q, str) else None
    if quality is None:
        return ReadingError(i, Reason.BAD_QUALITY, f"quality {q!r} is not good|uncertain|bad")
    return spec.key, ts, value, int(quality)


def encode_readings(gateway: str, seq: int, readings: list[dict[str, Any]]) -> bytes:
    """Encode a readings payload (the gateway side of the contract)."""
    return orjson.dumps({"gateway": gateway, "seq": seq, "readings": readings})


def encode_status(online: bool, ts_ms: int) -> bytes:
    """Encode a status payload; `online=False` is also what a gateway sets as its last will."""
    return orjson.dumps({"state": "online" if online else "offline", "ts": ts_ms})
