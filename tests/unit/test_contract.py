"""Wire contract v1: topics, timestamps, decoding and validation (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.contract import (
    ContractError,
    DecodeLimits,
    Reason,
    SensorSpec,
    Topic,
    decode_readings,
    decode_status,
    encode_readings,
    encode_status,
    parse_topic,
    parse_ts,
    readings_topic,
)

NOW_US = 1_795_000_000_000_000
INDEX = {
    ("s1", "gw1"): {
        "t1": SensorSpec(key=7, unit="°C", min_value=-50.0, max_value=1800.0),
        "p1": SensorSpec(key=8, unit="Pa", min_value=-500.0, max_value=500.0),
    }
}
TOPIC = Topic("s1", "gw1", "readings")
LIMITS = DecodeLimits(max_payload_bytes=4096, max_future_skew_s=60)


def decode(doc: Any, topic: Topic = TOPIC) -> Any:
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return decode_readings(topic, payload, index=INDEX, now_us=NOW_US, limits=LIMITS)


def msg(*readings: dict[str, Any], gateway: str = "gw1", seq: int = 1) -> dict[str, Any]:
    return {"gateway": gateway, "seq": seq, "readings": list(readings)}


def r(
    sensor: str = "t1", value: Any = 100.0, ts: Any = NOW_US // 1000, unit: str = "°C", **kw: Any
) -> dict[str, Any]:
    return {"sensor": sensor, "ts": ts, "value": value, "unit": unit, **kw}


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("tungku/v1/s1/gw1/readings", Topic("s1", "gw1", "readings")),
        ("tungku/v1/s1/gw1/status", Topic("s1", "gw1", "status")),
    ],
)
def test_parse_topic_accepts_contract_topics(topic: str, expected: Topic) -> None:
    """Both v1 topics parse into site, gateway and channel."""
    assert parse_topic(topic) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "tungku/v2/s1/gw1/readings",
        "tungku/v1/s1/readings",
        "tungku/v1/s1/gw1/other",
        "tungku/v1//gw1/readings",
        "x/v1/s1/gw1/readings",
        "tungku/v1/s1/gw1/readings/extra",
    ],
)
def test_parse_topic_rejects_other_topics(topic: str) -> None:
    """Anything but tungku/v1/<site>/<gateway>/readings|status is a bad topic."""
    with pytest.raises(ContractError) as err:
        parse_topic(topic)
    assert err.value.reason is Reason.BAD_TOPIC


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1_700_000_000_123, 1_700_000_000_123_000),
        ("2023-11-14T22:13:20.123+00:00", 1_700_000_000_123_000),
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123_000),
        ("2023-11-15T06:13:20.123+08:00", 1_700_000_000_123_000),
        ("2023-11-14T22:13:20.123456-00:00", 1_700_000_000_123_456),
    ],
)
def test_parse_ts_gives_epoch_microseconds(raw: object, expected: int) -> None:
    """Epoch milliseconds and RFC 3339 with any offset give the same instant."""
    assert parse_ts(raw) == expected


@pytest.mark.parametrize(
    "raw", ["2023-11-14T22:13:20", "2023-11-14", "tomorrow", 1.5e12, True, None, [1]]
)
def test_parse_ts_refuses_ambiguous_or_unparsable_times(raw: object) -> None:
    """A time without an offset, a date alone, a float or junk is refused."""
    with pytest.raises(ValueError, match="timestamp"):
        parse_ts(raw)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 2),  # noqa: DTZ001 - hypothesis wants naive bounds
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_parse_ts_round_trips_rfc3339_in_any_offset(dt: datetime, offset_min: int) -> None:
    """Any instant written as RFC 3339 in any offset parses back to the same microsecond."""
    local = dt.astimezone(timezone(timedelta(minutes=offset_min)))
    expected = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert parse_ts(local.isoformat()) == expected


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "p1"]),
            st.floats(min_value=-50, max_value=500, allow_nan=False),
            st.integers(min_value=946_684_800_000, max_value=NOW_US // 1000),
            st.sampled_from(["good", "uncertain", "bad"]),
        ),
        max_size=50,
        unique_by=lambda item: (item[0], item[2]),
    ),
    st.integers(min_value=0, max_value=2**53),
)
def test_decode_of_encode_is_identity(items: list[tuple[str, float, int, str]], seq: int) -> None:
    """decode(encode(readings)) gives back every reading: key, instant, value and quality."""
    units = {"t1": "°C", "p1": "Pa"}
    payload = encode_readings(
        "gw1",
        seq,
        [
            {"sensor": s, "ts": ts, "value": v, "unit": units[s], "quality": q}
            for s, v, ts, q in items
        ],
    )
    out = decode_readings(
        TOPIC, payload, index=INDEX, now_us=NOW_US, limits=DecodeLimits(max_age_s=0)
    )
    assert out.errors == []
    assert out.seq == seq
    quality = {"good": 0, "uncertain": 1, "bad": 2}
    assert list(zip(out.sensor_keys, out.ts_us, out.values, out.qualities, strict=True)) == [
        (INDEX[("s1", "gw1")][s].key, ts * 1000, v, quality[q]) for s, v, ts, q in items
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", Reason.MALFORMED_JSON),
        (b"\xff\xfe", Reason.NOT_UTF8),
        (b"[]", Reason.BAD_SCHEMA),
        (orjson.dumps({"seq": 1, "readings": []}), Reason.BAD_SCHEMA),
        (orjson.dumps({"gateway": "gw1", "seq": -1, "readings": []}), Reason.BAD_SCHEMA),
        (orjson.dumps({"gateway": "gw1", "seq": True, "readings": []}), Reason.BAD_SCHEMA),
        (orjson.dumps({"gateway": "gw1", "seq": 2**63, "readings": []}), Reason.BAD_SCHEMA),
        (b'{"gateway": "gw1", "seq": 1, "readings": [{"value": NaN}]}', Reason.MALFORMED_JSON),
        (orjson.dumps({"gateway": "gw1", "seq": 1, "readings": {}}), Reason.BAD_SCHEMA),
        (orjson.dumps({"gateway": "gw2", "seq": 1, "readings": []}), Reason.GATEWAY_MISMATCH),
        (b"{" + b" " * 5000 + b"}", Reason.OVERSIZED),
    ],
)
def test_message_level_problems_reject_the_whole_message(payload: bytes, reason: Reason) -> None:
    """A message that is unreadable as a whole raises ContractError with its reason."""
    with pytest.raises(ContractError) as err:
        decode(payload)
    assert err.value.reason is reason


def test_unknown_gateway_is_rejected_before_parsing() -> None:
    """Messages from a gateway missing from the registry are rejected as unknown_gateway."""
    with pytest.raises(ContractError) as err:
        decode(msg(r()), topic=Topic("s1", "gw9", "readings"))
    assert err.value.reason is Reason.UNKNOWN_GATEWAY


@pytest.mark.parametrize(
    ("reading", "reason", "words"),
    [
        (r(sensor="zz"), Reason.UNKNOWN_SENSOR, "not registered"),
        (r(unit="°F"), Reason.WRONG_UNIT, "'°C'"),
        (r(value="1"), Reason.BAD_VALUE, "not a number"),
        (r(value=True), Reason.BAD_VALUE, "not a number"),
        (r(value=None), Reason.BAD_VALUE, "not a number"),
        (r(value=1801.0), Reason.OUT_OF_RANGE, "[-50.0, 1800.0]"),
        (r(value=-50.5), Reason.OUT_OF_RANGE, "physical range"),
        (r(ts="2026-01-01T00:00:00"), Reason.BAD_TIMESTAMP, "no UTC offset"),
        (r(ts=0), Reason.STALE_TIMESTAMP, "before 2000"),
        (r(ts=NOW_US // 1000 - 401 * 86_400_000), Reason.STALE_TIMESTAMP, "older than 400 days"),
        (r(ts=2**62), Reason.FUTURE_TIMESTAMP, "ahead of the service clock"),
        (r(ts="9999-12-31T23:59:59-23:59"), Reason.FUTURE_TIMESTAMP, "ahead"),
        (r(ts="2026-W48-5T10:00:00+00:00"), Reason.BAD_TIMESTAMP, "not RFC 3339"),
        (r(ts="2026-02-30T00:00:00Z"), Reason.BAD_TIMESTAMP, "not a valid date"),
        (r(ts=NOW_US // 1000 + 61_000), Reason.FUTURE_TIMESTAMP, "60 s ahead"),
        (r(quality="fine"), Reason.BAD_QUALITY, "good|uncertain|bad"),
        ("not an object", Reason.BAD_SCHEMA, "JSON object"),
    ],
)
def test_reading_level_problems_reject_only_that_reading(
    reading: Any, reason: Reason, words: str
) -> None:
    """A bad reading is rejected with a reason and a message naming the problem; its
    neighbours are kept."""
    out = decode(
        msg(r(value=1.0, ts=NOW_US // 1000 - 1), reading, r(value=2.0, ts=NOW_US // 1000 - 2))
    )
    assert out.values == [1.0, 2.0]
    assert len(out.errors) == 1
    assert (out.errors[0].index, out.errors[0].reason) == (1, reason)
    assert words in out.errors[0].message


def test_future_skew_is_configurable() -> None:
    """A reading just inside the configured clock skew is accepted."""
    out = decode(msg(r(ts=NOW_US // 1000 + 59_000)))
    assert out.errors == []


def test_status_round_trips() -> None:
    """A status payload decodes to the gateway's state and time."""
    st_ = decode_status(
        Topic("s1", "gw1", "status"),
        encode_status(False, 1_700_000_000_000),
        LIMITS,
        now_us=NOW_US,
    )
    assert (st_.online, st_.ts_us) == (False, 1_700_000_000_000_000)


def test_status_with_unknown_state_is_refused() -> None:
    """A status other than online|offline is a schema error."""
    with pytest.raises(ContractError) as err:
        decode_status(Topic("s1", "gw1", "status"), b'{"state": "asleep"}', LIMITS, now_us=NOW_US)
    assert err.value.reason is Reason.BAD_SCHEMA


def test_readings_topic_is_what_parse_topic_reads() -> None:
    """The topic builder and parser agree."""
    assert parse_topic(readings_topic("a", "b")) == Topic("a", "b", "readings")


@pytest.mark.parametrize("ts", [10**16, 0, "2026-11-28T07:00:00"])
def test_status_with_an_impossible_time_keeps_its_state_and_drops_the_time(ts: object) -> None:
    """A status stamped outside [2000, now + skew] still says offline; its time is dropped
    and the reason given, so it never reaches the database."""
    payload = orjson.dumps({"state": "offline", "ts": ts})
    st_ = decode_status(Topic("s1", "gw1", "status"), payload, LIMITS, now_us=NOW_US)
    assert (st_.online, st_.ts_us) == (False, None)
    assert st_.ts_error is not None


def test_same_sensor_and_time_twice_in_one_message_keeps_the_first() -> None:
    """A repeated (sensor, ts) inside one message is refused as duplicate_reading."""
    out = decode(msg(r(value=1.0), r(value=2.0)))
    assert out.values == [1.0]
    assert [(e.index, e.reason) for e in out.errors] == [(1, Reason.DUPLICATE_READING)]


reading_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
reading_times = st.one_of(
    st.integers(min_value=0, max_value=2 * NOW_US // 1000),
    st.sampled_from(["2026-11-28T07:00:00Z", "2026-11-28T07:00:00", "junk", "2026-02-30T00:00Z"]),
    st.none(),
)
readings = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "sensor": st.sampled_from(["t1", "p1", "zz"]),
                "ts": reading_times,
                "value": reading_values,
                "unit": st.sampled_from(["°C", "Pa", "K"]),
            },
            optional={"quality": st.sampled_from(["good", "bad", "uncertain", "meh", 3])},
        ),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ),
    max_size=20,
)


@given(readings)
def test_fast_path_decides_exactly_like_the_rule_by_rule_path(items: list[Any]) -> None:
    """For any mix of good and bad readings, the fast decoder keeps and refuses exactly what
    the careful one does, for the same reasons."""
    payload = orjson.dumps({"gateway": "gw1", "seq": 1, "readings": items})
    fast = decode_readings(TOPIC, payload, index=INDEX, now_us=NOW_US, limits=LIMITS)
    slow = decode_readings(TOPIC, payload, index=INDEX, now_us=NOW_US, limits=LIMITS, fast=False)
    assert (fast.sensor_keys, fast.ts_us, fast.values, fast.qualities) == (
        slow.sensor_keys,
        slow.ts_us,
        slow.values,
        slow.qualities,
    )
    assert [(e.index, e.reason) for e in fast.errors] == [(e.index, e.reason) for e in slow.errors]
