"""Registry files, settings and batching decisions (pure)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.batch import AckSequencer, Batch
from ingest.contract import DecodeLimits, SensorSpec
from ingest.registry import Gateway, RegistryError, Sensor, Site, dump_site, parse_site
from ingest.settings import Settings, SettingsError, load_settings
from ingest.store import copy_rows

SITE_TOML = """
[site]
id = "morowali-a"
name = "Plant A"

[[gateways]]
id = "f1-gw1"

[[gateways.sensors]]
id = "f1.power"
kind = "furnace_power"
unit = "MW"
range = [-1.0, 120.0]
period_s = 1.0
asset = "F1"
"""


def test_site_file_parses() -> None:
    """A valid site file gives its site, gateways and sensors."""
    site = parse_site(SITE_TOML)
    assert site.id == "morowali-a"
    assert [(g.id, s.id, s.unit, s.min_value, s.max_value) for g, s in site.sensors()] == [
        ("f1-gw1", "f1.power", "MW", -1.0, 120.0)
    ]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (('id = "morowali-a"', 'id = "Morowali A"'), "[site].id 'Morowali A'"),
        (
            ("range = [-1.0, 120.0]", "range = [120.0, -1.0]"),
            "gateways[0] (f1-gw1).sensors[0]: 'range' min 120.0",
        ),
        (('unit = "MW"', "unit = 3"), "'unit' must be a non-empty string"),
        (("period_s = 1.0", "period_s = 0"), "'period_s' must be a positive number"),
        (('asset = "F1"', 'asset = "F1"\ncolour = "red"'), "unknown keys ['colour']"),
        (("[[gateways]]", "[[gateways]"), "not valid TOML"),
    ],
)
def test_site_file_problems_name_their_location(edit: tuple[str, str], problem: str) -> None:
    """Every problem in a site file is reported with where it is."""
    with pytest.raises(RegistryError) as err:
        parse_site(SITE_TOML.replace(*edit), "plant-a.toml")
    assert any(problem in p for p in err.value.problems), err.value.problems
    assert str(err.value).startswith("plant-a.toml: ")


def test_duplicate_sensor_ids_are_refused() -> None:
    """A sensor id used twice in a site is refused, naming both places."""
    text = SITE_TOML + SITE_TOML.split("[[gateways]]")[1].replace('"f1-gw1"', '"f1-gw2"')
    text = text.replace('id = "f1-gw2"', '[[gateways]]\nid = "f1-gw2"', 1)
    with pytest.raises(RegistryError) as err:
        parse_site(text)
    assert any("already used at gateways[0]" in p for p in err.value.problems)


sensors = st.builds(
    Sensor,
    id=st.from_regex(r"[a-z][a-z0-9.]{0,20}", fullmatch=True),
    kind=st.sampled_from(["furnace_power", "area_co"]),
    unit=st.sampled_from(["MW", "ppm", "°C"]),
    min_value=st.floats(-1000, 0),
    max_value=st.floats(1, 5000),
    period_s=st.floats(0.1, 60),
    asset=st.sampled_from(["", "F1"]),
)


@given(st.lists(sensors, min_size=1, max_size=8, unique_by=lambda s: s.id))
def test_dump_then_parse_gives_the_same_site(items: list[Sensor]) -> None:
    """parse_site(dump_site(site)) == site."""
    site = Site(id="s", name="S", gateways=(Gateway(id="g", sensors=tuple(items)),))
    assert parse_site(dump_site(site)) == site


def test_settings_precedence_env_over_file_over_default() -> None:
    """Environment beats the TOML file, which beats the default."""
    s = load_settings(
        {"TUNGKU_MAX_BATCH_ROWS": "123", "TUNGKU_SITES": "a, b"},
        "[ingest]\nmax_batch_rows = 50\nmax_batch_delay_ms = 20\n",
    )
    assert (s.max_batch_rows, s.max_batch_delay_ms, s.sites, s.mqtt_port) == (
        123,
        20,
        ("a", "b"),
        Settings().mqtt_port,
    )


@pytest.mark.parametrize(
    ("env", "toml", "message"),
    [
        ({"TUNGKU_MAX_BATCH_ROWS": "lots"}, None, "TUNGKU_MAX_BATCH_ROWS: max_batch_rows = 'lots'"),
        ({"TUNGKU_MAX_BATCH_ROWS": "0"}, None, "max_batch_rows must be positive"),
        ({}, "[ingest]\nmax_batch_rowz = 5\n", "unknown setting [ingest].max_batch_rowz"),
        ({}, "[ingest\n", "not valid TOML"),
        ({"TUNGKU_DB_SCHEMA": "Robert'); DROP"}, None, "db_schema"),
        ({"TUNGKU_MQTT_RECEIVE_MAXIMUM": "70000"}, None, "at most 65535"),
        ({"TUNGKU_LOG_FORMAT": "xml"}, None, "log_format"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], toml: str | None, message: str) -> None:
    """A broken setting is refused with a message naming it."""
    with pytest.raises(SettingsError) as err:
        load_settings(env, toml)
    assert message in str(err.value)


INDEX = {("s", "g"): {"a": SensorSpec(1, "MW", 0.0, 100.0)}}


def test_batch_collects_readings_rejects_and_refs_in_arrival_order() -> None:
    """Each message's ack handle is kept in arrival order, whatever its fate."""
    b = Batch(started_mono_s=0.0)
    ok = orjson.dumps(
        {
            "gateway": "g",
            "seq": 1,
            "readings": [{"sensor": "a", "ts": 1_700_000_000_000, "value": 5, "unit": "MW"}],
        }
    )
    for i, payload in enumerate([ok, b"junk", ok]):
        b.add_message(
            i,
            "tungku/v1/s/g/readings",
            payload,
            received_at_us=1_700_000_001_000_000,
            index=INDEX,
            limits=DecodeLimits(),
        )
    b.add_message(3, "elsewhere", b"{}", received_at_us=1, index=INDEX, limits=DecodeLimits())
    assert b.refs == [0, 1, 2, 3]
    assert b.rows == 2
    assert [r.reason for r in b.rejects] == ["malformed_json", "bad_topic"]


@pytest.mark.parametrize(
    ("rows", "age_s", "due"), [(0, 0.0, False), (3, 0.0, False), (5, 0.0, True), (1, 0.2, True)]
)
def test_batch_is_due_when_full_or_old(rows: int, age_s: float, due: bool) -> None:
    """A batch is due at max_batch_rows readings or max delay after its first message."""
    b = Batch(started_mono_s=10.0)
    payload = orjson.dumps(
        {
            "gateway": "g",
            "seq": 1,
            "readings": [
                {"sensor": "a", "ts": 1_700_000_000_000 + i, "value": 1, "unit": "MW"}
                for i in range(rows)
            ],
        }
    )
    b.add_message(
        0,
        "tungku/v1/s/g/readings",
        payload,
        received_at_us=1_700_000_001_000_000,
        index=INDEX,
        limits=DecodeLimits(),
    )
    assert b.is_due(now_mono_s=10.0 + age_s, max_rows=5, max_delay_s=0.1) is due


def test_empty_batch_is_never_due() -> None:
    """Nothing to commit means nothing is due, however long we wait."""
    assert not Batch(started_mono_s=0.0).is_due(now_mono_s=1e9, max_rows=1, max_delay_s=0.0)


def test_copy_rows_layout_matches_postgres_binary_format() -> None:
    """The binary COPY stream has PostgreSQL's header, 40-byte tuples and the trailer."""
    data = copy_rows([1, 2], [946_684_800_000_001, 946_684_800_000_002], [1.5, -2.0], [0, 2])
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00"
    assert data[-2:] == b"\xff\xff"
    body = data[19:-2]
    assert len(body) == 80
    assert np.frombuffer(body[:2], ">i2")[0] == 4
    assert np.frombuffer(body[14:22], ">i8")[0] == 1  # microseconds after 2000-01-01
    assert np.frombuffer(body[26:34], ">f8")[0] == 1.5


@given(st.permutations(list(range(12))))
def test_ack_sequencer_releases_in_formation_order_whatever_the_commit_order(
    order: list[int],
) -> None:
    """However concurrent commits finish, acknowledgements come out as 0, 1, 2, ..."""
    seq: AckSequencer[int] = AckSequencer()
    released: list[int] = []
    for n in order:
        released.extend(seq.committed(n, n))
        assert released == list(range(len(released)))
    assert released == list(range(12))
    assert seq.waiting == 0


def test_ack_sequencer_refuses_a_batch_committed_twice() -> None:
    """Committing the same batch twice is a bug and is refused."""
    seq: AckSequencer[str] = AckSequencer()
    seq.committed(0, "a")
    with pytest.raises(ValueError, match="already committed"):
        seq.committed(0, "a")
