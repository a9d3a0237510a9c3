"""The pure parts of webhook delivery: signature, endpoint settings, payload, retry policy."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerting.webhook import (
    ENTRY_KEYS,
    Verdict,
    WebhookEndpoint,
    WebhookError,
    backoff_s,
    idempotency_key,
    parse_endpoints,
    render,
    sign,
    verdict,
    verify,
)

SECRET = b"0123456789abcdef-secret"
BODY = b'{"seq":1}'
NOW = 1_800_000_000


def entry(**overrides: object) -> dict[str, object]:
    """A complete journal entry as the engine hands it over."""
    base: dict[str, object] = {
        "seq": 7,
        "at": datetime(2026, 12, 1, 10, 0, 0, 250_000, tzinfo=UTC),
        "alert_id": 3,
        "site_id": "smelter-a",
        "asset": "F1",
        "rule_id": "freeboard.positive",
        "subject": "F1-PT-01",
        "actor": "engine",
        "action": "activate",
        "from_state": "normal",
        "to_state": "unack_alarm",
        "severity": "critical",
        "priority": "high",
        "value": 62.5,
        "limit": 50.0,
        "reason": "level 50.0 exceeded for 3.0 s",
        "pack_version": "2026.12.1",
        "hash": bytes.fromhex("ab" * 32),
    }
    base.update(overrides)
    return base


# --- sign / verify ------------------------------------------------------------------------------


def test_sign_then_verify_round_trips() -> None:
    """A signature made with a secret verifies with that secret, body and time."""
    header = sign(SECRET, NOW, BODY)
    assert header.startswith(f"t={NOW},v1=")
    assert verify(SECRET, header, BODY, now_s=NOW + 10)


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    """The v1 value is the hex HMAC-SHA256 of b"<ts>." + body, as receivers compute it."""
    expected = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"


@pytest.mark.parametrize(
    ("secret", "body", "now_s"),
    [
        pytest.param(SECRET, BODY + b" ", NOW, id="tampered-body"),
        pytest.param(b"another-secret-of-16+", BODY, NOW, id="wrong-secret"),
        pytest.param(SECRET, BODY, NOW + 301, id="too-old"),
        pytest.param(SECRET, BODY, NOW - 301, id="from-the-future"),
    ],
)
def test_verify_refuses_tampering_and_replay(secret: bytes, body: bytes, now_s: int) -> None:
    """A changed body, another secret or a timestamp outside the tolerance fails."""
    assert not verify(secret, sign(SECRET, NOW, BODY), body, now_s=now_s)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={NOW}",
        "v1=abc",
        f"t=x{NOW},v1=abc",
        f"t={NOW},t={NOW},v1=abc",
        "t=\u00b2,v1=abc",
    ],
)
def test_verify_refuses_malformed_headers(header: str) -> None:
    """A header without exactly one numeric t and at least one v1 is not valid."""
    assert not verify(SECRET, header, BODY, now_s=NOW)


def test_verify_accepts_any_of_several_signatures() -> None:
    """During a secret rotation a header may carry one v1 per secret; one match suffices."""
    other = sign(b"the-old-secret-value", NOW, BODY).split(",")[1]
    header = f"{sign(SECRET, NOW, BODY)},{other}"
    assert verify(SECRET, header, BODY, now_s=NOW)
    assert verify(b"the-old-secret-value", header, BODY, now_s=NOW)


# --- endpoints ----------------------------------------------------------------------------------

GOOD = {"name": "ops", "url": "https://hooks.example.com/tungku", "secret": "s" * 16}


def test_parse_endpoints_accepts_valid_settings() -> None:
    """Valid tables become endpoints; a str secret is encoded, timeout_s defaults to 5 s."""
    eps = parse_endpoints(
        [
            GOOD,
            {
                **GOOD,
                "name": "pager",
                "url": "http://10.0.0.5:8080/h",
                "secret": b"b" * 32,
                "timeout_s": 2,
            },
        ]
    )
    assert eps == [
        WebhookEndpoint("ops", "https://hooks.example.com/tungku", b"s" * 16, 5.0),
        WebhookEndpoint("pager", "http://10.0.0.5:8080/h", b"b" * 32, 2.0),
    ]
    assert "sss" not in repr(eps[0])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{**GOOD, "url": "ftp://x/y"}], r"\[0\] \(ops\)\.url: must be an http or https URL"),
        ([{**GOOD, "url": "hooks.example.com"}], r"\.url: must be an http or https URL"),
        ([{**GOOD, "url": "https:///path"}], r"\.url: has no host"),
        ([{**GOOD, "url": "https://u:p@h/x"}], r"\.url: must not carry credentials"),
        ([{**GOOD, "url": 5}], r"\.url: must be a string"),
        ([{**GOOD, "secret": ""}], r"\.secret: must be at least 16 bytes, got 0"),
        ([{**GOOD, "secret": "short"}], r"\.secret: must be at least 16 bytes, got 5"),
        ([{k: v for k, v in GOOD.items() if k != "secret"}], r"\.secret: missing"),
        ([GOOD, GOOD], r"\[1\] \(ops\)\.name: duplicate endpoint name 'ops'"),
        ([{**GOOD, "name": ""}], r"\[0\]\.name: must be 1-64 characters"),
        ([{**GOOD, "name": "Ops Team"}], r"\.name: must be 1-64 characters"),
        ([{**GOOD, "name": "ops\n"}], r"\.name: must be 1-64 characters"),
        ([{**GOOD, "timeout_s": 0}], r"\.timeout_s: must be > 0 and <= 60"),
        ([{**GOOD, "timeout_s": "5"}], r"\.timeout_s: must be a number"),
        ([{**GOOD, "timeout_s": True}], r"\.timeout_s: must be a number"),
        ([{**GOOD, "retries": 3}], r"\[0\]: unknown key\(s\) retries"),
        (["https://x"], r"\[0\]: expected a table, got str"),
    ],
)
def test_parse_endpoints_names_each_problem(raw: list[Any], message: str) -> None:
    """Each invalid setting is refused with a message naming the item and the key."""
    with pytest.raises(WebhookError, match=message):
        parse_endpoints(raw)


def test_parse_endpoints_never_quotes_the_secret() -> None:
    """A refused secret does not appear in the error message."""
    with pytest.raises(WebhookError) as info:
        parse_endpoints([{**GOOD, "secret": "hunter2-short"}])
    assert "hunter2" not in str(info.value)


# --- render -------------------------------------------------------------------------------------


def test_render_is_canonical() -> None:
    """The same entry renders to the same bytes, keys sorted, whatever the mapping's order."""
    forward = entry()
    backward = dict(reversed(list(forward.items())))
    body = render(forward)
    assert body == render(backward)
    doc = orjson.loads(body)
    assert list(doc) == sorted(ENTRY_KEYS)
    assert b" " not in body.replace(b"level 50.0 exceeded for 3.0 s", b"")


def test_render_normalises_time_and_hash() -> None:
    """`at` becomes UTC ISO 8601 with Z from any offset or string; `hash` becomes hex."""
    wib = timezone(timedelta(hours=7))
    local = entry(at=datetime(2026, 12, 1, 17, 0, 0, 250_000, tzinfo=wib), hash="AB" * 32)
    as_text = entry(at="2026-12-01T10:00:00.250000+00:00")
    assert render(local) == render(entry()) == render(as_text)
    doc = orjson.loads(render(entry()))
    assert doc["at"] == "2026-12-01T10:00:00.250000Z"
    assert doc["hash"] == "ab" * 32


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"at": datetime(2026, 12, 1, 10, 0)}, "timezone-aware"),  # noqa: DTZ001 - the point
        ({"at": "yesterday"}, "not ISO 8601"),
        ({"hash": 5}, "'hash' must be bytes or hex"),
        ({"pack_name": "x"}, r"unknown key\(s\) pack_name"),
        ({"value": object()}, "cannot be rendered"),
    ],
)
def test_render_refuses_bad_entries(bad: dict[str, object], message: str) -> None:
    """Naive times, odd hashes, unknown keys and unserialisable values are refused."""
    with pytest.raises(WebhookError, match=message):
        render(entry(**bad))


def test_render_requires_every_key() -> None:
    """An entry missing keys is refused, naming them."""
    partial = entry()
    del partial["limit"], partial["actor"]
    with pytest.raises(WebhookError, match=r"lacks key\(s\) actor, limit"):
        render(partial)


# --- policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (301, Verdict.GIVE_UP),
        (400, Verdict.GIVE_UP),
        (401, Verdict.GIVE_UP),
        (404, Verdict.GIVE_UP),
        (408, Verdict.RETRY),
        (410, Verdict.GIVE_UP),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
    ],
)
def test_verdict_by_status(status: int, expected: Verdict) -> None:
    """2xx delivers; 408, 429 and 5xx retry; other statuses are permanent."""
    assert verdict(status) is expected


@given(attempts=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_backoff_stays_in_its_band_and_never_shrinks(attempts: int, seed: int) -> None:
    """Waits lie in [d/2, d] for d = min(cap, base*2**(n-1)); below the cap they never shrink."""
    rng = random.Random(seed)  # noqa: S311 - jitter, seeded for the property
    d = min(300.0, 1.0 * 2.0 ** min(attempts - 1, 62))
    this = backoff_s(attempts, base_s=1.0, cap_s=300.0, rng=rng)
    nxt = backoff_s(attempts + 1, base_s=1.0, cap_s=300.0, rng=rng)
    assert d / 2 <= this <= d
    assert min(300.0, 2 * d) / 2 <= nxt <= 300.0
    if 2 * d <= 300.0:
        assert nxt >= this


def test_idempotency_key_is_stable_per_transition_and_endpoint() -> None:
    """The key depends only on seq, body and endpoint, and differs between endpoints."""
    body = render(entry())
    assert idempotency_key(7, body, "ops") == idempotency_key(7, body, "ops")
    assert idempotency_key(7, body, "ops") != idempotency_key(7, body, "pager")
    assert idempotency_key(7, body, "ops").startswith("tungku-7-")
