"""Webhook delivery of alert transitions: signed, retried with back-off, one per transition.

Owns the webhook payload (`render`), its signature (`sign` / `verify`), the endpoint settings
(`WebhookEndpoint`, `parse_endpoints`), the outbox rows (`enqueue`, `enqueue_sync`) and the
`WebhookSender` that drains the `webhook_outbox` table. It must not read settings or the
environment (settings arrive as plain dicts), nor write the journal: the alert engine calls
`enqueue` inside the transaction that appends the journal entries, so a transition and its
deliveries commit together or not at all.

Pure: `render`, `sign`, `verify`, `idempotency_key`, `verdict`, `backoff_s`, `parse_endpoints`.
Adapters: the outbox SQL (PostgreSQL) and `HttpxTransport` (HTTP), behind `WebhookTransport`.

Each delivery is an HTTP POST of the rendered entry with these headers:

    Content-Type: application/json
    Tungku-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of b"<t>." + body>
    Idempotency-Key: tungku-<journal seq>-<first 16 hex of sha256(body)>-<endpoint name>
    Tungku-Delivery-Attempt: <1, 2, ...>

The Idempotency-Key is the same on every retry of a transition to an endpoint, so a receiver
de-duplicates on it. It carries a digest of the body (which holds the journal hash) as well as
the seq, so a rebuilt database whose seq numbers start again never collides with keys a
receiver has already seen. Receivers check the signature with `verify` (or its equivalent),
rejecting a timestamp more than 5 minutes away from their clock, which stops replays.

Delivery policy (`verdict`):

- 2xx: delivered; `delivered_at` is set. `last_error` keeps the last failure, if any, so a
  row delivered on its third attempt still says why the first two failed.
- 408, 429 and 5xx, a timeout, or a connection failure: transient. The row is retried after
  a jittered exponential back-off: attempt n waits a uniform draw from [d/2, d] with
  d = min(cap, base * 2**(n-1)) (base 1 s, cap 300 s by default), or the receiver's
  `Retry-After` seconds when longer (still capped). Equal jitter keeps each wait, below the
  cap, at least as long as the one before, while spreading receivers' load after an outage.
- Any other status (3xx: redirects are not followed, a signed POST must not be forwarded
  elsewhere; other 4xx: the receiver refuses this request and will refuse it again):
  permanent. `last_error` records it, prefixed `permanent:`, and `next_attempt_at` is parked
  at `PARKED_AT` (9999-12-31, not 'infinity', which a Python datetime cannot hold), so the
  row stays undelivered and visible but is never claimed again. An operator re-queues it
  with `UPDATE webhook_outbox SET next_attempt_at = now() WHERE ...`.
- Transient failures are retried without limit by default (`max_attempts=None`): these are
  safety transitions, and a receiver that is down for a day should hear them when it is back;
  the cap bounds the cost to one request per row per 5 minutes. With `max_attempts` set, the
  last transient failure is recorded as permanent like a 4xx.

Claiming: a sender claims due rows in one short statement (`FOR UPDATE SKIP LOCKED`, so
two senders never take the same row) that also increments `attempts` and leases the row by
moving `next_attempt_at` past the longest endpoint timeout plus a margin. The POSTs then run
outside any transaction; outcomes are written with `attempts` as a fencing token, so a
sender whose lease ran out cannot overwrite a newer attempt's outcome. A sender that dies
mid-send leaves its rows to be retried when the lease ends: delivery is at least once, and
the Idempotency-Key makes it once for the receiver. Rows for endpoints this sender does
not know are left alone. Transitions to one endpoint may arrive out of order after a retry;
receivers order by `seq`.

Waking: the sender polls every `poll_interval_s` (0.5 s) while there is nothing due, and
claims again at once after a full batch. (LISTEN/NOTIFY would need the engine to notify;
half a second is well inside what an alarm webhook needs.) `stop` is observed while idle
and between batches; a batch in flight finishes first, bounded by the endpoint timeouts, so
its outcomes are recorded rather than re-sent.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import math
import os
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg
import structlog

from ingest.migrate import session_sql

log = structlog.get_logger("tungku.webhook")

#: Keys of a journal entry as rendered into a webhook body: exactly these, no more.
ENTRY_KEYS = frozenset(
    {
        "seq",
        "at",
        "alert_id",
        "site_id",
        "asset",
        "rule_id",
        "subject",
        "actor",
        "action",
        "from_state",
        "to_state",
        "severity",
        "priority",
        "value",
        "limit",
        "reason",
        "pack_version",
        "hash",
    }
)
#: `next_attempt_at` of a row that will not be retried (a permanent failure).
PARKED_AT = datetime(9999, 12, 31, tzinfo=UTC)
MIN_SECRET_BYTES = 16
SIGNATURE_HEADER = "Tungku-Signature"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_ENDPOINT_KEYS = frozenset({"name", "url", "secret", "timeout_s"})
_ERROR_TEXT_MAX = 300


class WebhookError(ValueError):
    """Raised when webhook settings or a journal entry to render are invalid."""


# --- endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """One receiver of alert transitions. The secret never appears in repr or logs."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    timeout_s: float = 5.0


def parse_endpoints(raw: Sequence[Mapping[str, object]]) -> list[WebhookEndpoint]:
    """Validate endpoint settings (`[[alerting.webhooks]]` tables or the like).

    Each item has `name` ([a-z0-9][a-z0-9_.-]*, at most 64, unique), `url` (http or https,
    with a host and no credentials), `secret` (str or bytes, at least 16 bytes) and an
    optional `timeout_s` (> 0, at most 60). The first problem found is raised as a
    `WebhookError` naming the item and key; secrets are never quoted.
    """
    endpoints: list[WebhookEndpoint] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"alerting.webhooks[{i}]"
        if not isinstance(item, Mapping):
            raise WebhookError(f"{where}: expected a table, got {type(item).__name__}")
        unknown = sorted(str(k) for k in item if k not in _ENDPOINT_KEYS)
        if unknown:
            raise WebhookError(f"{where}: unknown key(s) {', '.join(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise WebhookError(
                f"{where}.name: must be 1-64 characters of [a-z0-9_.-] starting with a letter"
                f" or digit, got {name!r}"
            )
        where = f"alerting.webhooks[{i}] ({name})"
        if name in seen:
            raise WebhookError(f"{where}.name: duplicate endpoint name {name!r}")
        seen.add(name)
        url = item.get("url")
        if not isinstance(url, str):
            raise WebhookError(f"{where}.url: must be a string, got {type(url).__name__}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise WebhookError(f"{where}.url: must be an http or https URL, got {url!r}")
        if not parts.hostname:
            raise WebhookError(f"{where}.url: has no host: {url!r}")
        if parts.username is not None or parts.password is not None:
            raise WebhookError(
                f"{where}.url: must not carry credentials (they would be logged);"
                " the signature authenticates the sender"
            )
        secret = item.get("secret")
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes):
            raise WebhookError(f"{where}.secret: missing or not a string")
        if len(secret) < MIN_SECRET_BYTES:
            raise WebhookError(
                f"{where}.secret: must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}"
            )
        timeout = item.get("timeout_s", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise WebhookError(f"{where}.timeout_s: must be a number, got {timeout!r}")
        if not (0 < timeout <= 60):
            raise WebhookError(f"{where}.timeout_s: must be > 0 and <= 60, got {timeout!r}")
        endpoints.append(WebhookEndpoint(name, url, secret, float(timeout)))
    return endpoints


# --- payload and signature (pure) ---------------------------------------------------------------


def render(entry: Mapping[str, object]) -> bytes:
    """Canonical JSON body of one journal entry: sorted keys, no whitespace, UTC times.

    `at` may be an aware datetime or an ISO 8601 string; either way it is rendered in UTC
    ending in `Z`. `hash` may be bytes or hex; it is rendered as lowercase hex. The same entry
    always renders to the same bytes.
    """
    keys = set(entry)
    missing = sorted(ENTRY_KEYS - keys)
    if missing:
        raise WebhookError(f"journal entry lacks key(s) {', '.join(missing)}")
    extra = sorted(keys - ENTRY_KEYS)
    if extra:
        raise WebhookError(f"journal entry has unknown key(s) {', '.join(extra)}")
    doc: dict[str, object] = dict(entry)
    at = entry["at"]
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError as exc:
            raise WebhookError(f"journal entry 'at' is not ISO 8601: {at!r}") from exc
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise WebhookError(f"journal entry 'at' must be a timezone-aware datetime, got {at!r}")
    doc["at"] = at.astimezone(UTC)
    digest = entry["hash"]
    if isinstance(digest, bytes | bytearray | memoryview):
        doc["hash"] = bytes(digest).hex()
    elif isinstance(digest, str):
        doc["hash"] = digest.lower()
    else:
        raise WebhookError(f"journal entry 'hash' must be bytes or hex, got {digest!r}")
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)
    except TypeError as exc:
        raise WebhookError(f"journal entry cannot be rendered as JSON: {exc}") from exc


def _mac(secret: bytes, timestamp_s: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """The `Tungku-Signature` header value: `t=<ts>,v1=<hex HMAC-SHA256 of b"<ts>." + body>`."""
    return f"t={timestamp_s},v1={_mac(secret, timestamp_s, body)}"


def verify(secret: bytes, header: str, body: bytes, now_s: float, tolerance_s: float = 300) -> bool:
    """True if `header` signs `body` with `secret` at a time within `tolerance_s` of `now_s`.

    Accepts several `v1=` values (a sender rotating secrets may send one per secret); any
    match suffices. A malformed header is simply not valid.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now_s - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body)
    # Compare every candidate in constant time, so timing says nothing about which matched.
    return any([hmac.compare_digest(expected, c) for c in candidates])  # noqa: C419


def idempotency_key(journal_seq: int, body: bytes, endpoint: str) -> str:
    """The `Idempotency-Key` of a transition for an endpoint: the same on every retry."""
    return f"tungku-{journal_seq}-{hashlib.sha256(body).hexdigest()[:16]}-{endpoint}"


# --- delivery policy (pure) ---------------------------------------------------------------------


class Verdict(StrEnum):
    """What a delivery's HTTP status means for its outbox row."""

    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"


def verdict(status: int) -> Verdict:
    """2xx delivered; 408, 429 and 5xx retried; anything else (3xx, 4xx) is permanent."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (408, 429) or 500 <= status < 600:
        return Verdict.RETRY
    return Verdict.GIVE_UP


def backoff_s(attempts: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Wait before the next try after `attempts` failed tries: uniform in [d/2, d],
    d = min(cap_s, base_s * 2**(attempts-1)). Below the cap, never shorter than the wait before."""
    exponent = min(max(attempts - 1, 0), 62)  # 2**62 s is past any cap; avoids overflow
    ceiling = min(cap_s, base_s * float(2**exponent))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


# --- HTTP boundary ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A receiver's answer: status, `Retry-After` seconds if given, the start of its body."""

    status: int
    retry_after_s: float | None
    text: str


class DeliveryError(RuntimeError):
    """Raised by a transport when no HTTP answer came back (refused, reset, timed out)."""


class WebhookTransport(Protocol):
    """Sends one POST. Raises `DeliveryError` when no answer came back."""

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> HttpReply:
        """POST `body` to `url`, giving up after `timeout_s` in all."""
        ...


def _retry_after(value: str | None) -> float | None:
    # Seconds only; an HTTP-date is rare from webhook receivers and then the back-off rules.
    if value is None or not (value.strip().isascii() and value.strip().isdigit()):
        return None
    return float(value.strip())


def _describe(exc: BaseException) -> str:
    """The most specific reason in an exception chain: httpx's 'All connection attempts
    failed' hides the ConnectionRefusedError beneath it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            name = errno.errorcode.get(seen.errno, str(seen.errno))
            return f"{os.strerror(seen.errno)} ({name})"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


class HttpxTransport:
    """`WebhookTransport` over one shared `httpx.AsyncClient`. Use as an async context.

    Redirects are not followed and proxy settings are not read from the environment: the
    endpoint URL is where the signed body goes, and settings are passed down, never read here.
    """

    def __init__(self, *, user_agent: str = "tungku-webhook/1") -> None:
        self._client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, headers={"User-Agent": user_agent}
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> HttpReply:
        """POST, reading at most the first KiB of the answer (for `last_error`)."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self._client.stream(
                    "POST", url, content=body, headers=dict(headers), timeout=timeout_s
                ) as response:
                    head = b""
                    async for chunk in response.aiter_bytes():
                        head += chunk
                        if len(head) >= 1024:
                            break
                    return HttpReply(
                        response.status_code,
                        _retry_after(response.headers.get("Retry-After")),
                        head[:1024].decode("utf-8", "replace"),
                    )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise DeliveryError(f"no answer within {timeout_s:g} s") from exc
        except httpx.ConnectError as exc:
            raise DeliveryError(f"cannot connect: {_describe(exc)}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {_describe(exc)}") from exc


# --- outbox (PostgreSQL) ------------------------------------------------------------------------

_ENQUEUE_SQL = (
    "INSERT INTO webhook_outbox (journal_seq, endpoint, body) VALUES (%s, %s, %s)"
    " ON CONFLICT (journal_seq, endpoint) DO NOTHING"
)
# One statement, so one short transaction: lock due rows no other sender holds, count the
# attempt and lease them past the time a POST may take.
_CLAIM_SQL = """
WITH due AS (
    SELECT id FROM webhook_outbox
    WHERE delivered_at IS NULL AND next_attempt_at <= now() AND endpoint = ANY(%(names)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_outbox o
SET attempts = o.attempts + 1, next_attempt_at = now() + %(lease_s)s * interval '1 second'
FROM due WHERE o.id = due.id
RETURNING o.id, o.journal_seq, o.endpoint, o.body, o.attempts
"""
_DELIVERED_SQL = (
    "UPDATE webhook_outbox SET delivered_at = now()"
    " WHERE id = %s AND attempts = %s AND delivered_at IS NULL"
)
_RETRY_SQL = (
    "UPDATE webhook_outbox SET next_attempt_at = now() + %s * interval '1 second',"
    " last_error = %s WHERE id = %s AND attempts = %s AND delivered_at IS NULL"
)
_GIVE_UP_SQL = (
    "UPDATE webhook_outbox SET next_attempt_at = %s, last_error = %s"
    " WHERE id = %s AND attempts = %s AND delivered_at IS NULL"
)


def _outbox_rows(
    endpoints: Sequence[WebhookEndpoint], entries: Iterable[Mapping[str, object]]
) -> list[tuple[int, str, bytes]]:
    rows: list[tuple[int, str, bytes]] = []
    for entry in entries:
        body = render(entry)
        seq = entry["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise WebhookError(f"journal entry 'seq' must be an integer, got {seq!r}")
        rows.extend((seq, ep.name, body) for ep in endpoints)
    return rows


async def enqueue(
    cur: psycopg.AsyncCursor[Any],
    endpoints: Sequence[WebhookEndpoint],
    entries: Iterable[Mapping[str, object]],
) -> None:
    """Insert one outbox row per (entry, endpoint), in the caller's transaction.

    The cursor's search_path must name the service schema. Rows already there are kept.
    """
    rows = _outbox_rows(endpoints, entries)
    if rows:
        await cur.executemany(_ENQUEUE_SQL, rows)


def enqueue_sync(
    cur: psycopg.Cursor[Any],
    endpoints: Sequence[WebhookEndpoint],
    entries: Iterable[Mapping[str, object]],
) -> None:
    """`enqueue` for synchronous connections (CLI, tests)."""
    rows = _outbox_rows(endpoints, entries)
    if rows:
        cur.executemany(_ENQUEUE_SQL, rows)


class OutboxUnavailableError(RuntimeError):
    """Raised when the outbox's database cannot be reached or the connection was lost."""


@dataclass(frozen=True, slots=True)
class _Claim:
    id: int
    journal_seq: int
    endpoint: str
    body: bytes
    attempts: int  # including this one; the fencing token for its outcome


@dataclass(frozen=True, slots=True)
class _Outcome:
    claim: _Claim
    verdict: Verdict
    error: str
    retry_in_s: float


class _Outbox:
    """The sender's connection to the outbox. Translates lost connections once, here."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, database_url: str, schema: str) -> _Outbox:
        try:
            conn = await psycopg.AsyncConnection.connect(
                database_url, autocommit=True, connect_timeout=5, application_name="tungku-webhook"
            )
        except psycopg.OperationalError as exc:
            raise OutboxUnavailableError(str(exc).strip()) from exc
        try:
            await conn.execute(session_sql(schema))
        except psycopg.OperationalError as exc:
            await conn.close()
            raise OutboxUnavailableError(str(exc).strip()) from exc
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def claim(self, names: list[str], limit: int, lease_s: float) -> list[_Claim]:
        try:
            cur = await self._conn.execute(
                _CLAIM_SQL, {"names": names, "limit": limit, "lease_s": lease_s}
            )
            rows = await cur.fetchall()
        except psycopg.OperationalError as exc:
            raise OutboxUnavailableError(str(exc).strip()) from exc
        claims = [_Claim(int(r[0]), int(r[1]), str(r[2]), bytes(r[3]), int(r[4])) for r in rows]
        claims.sort(key=lambda c: c.id)  # RETURNING order is not guaranteed
        return claims

    async def record(self, outcomes: list[_Outcome]) -> None:
        try:
            async with self._conn.transaction(), self._conn.cursor() as cur:
                for o in outcomes:
                    c = o.claim
                    if o.verdict is Verdict.DELIVERED:
                        await cur.execute(_DELIVERED_SQL, (c.id, c.attempts))
                    elif o.verdict is Verdict.RETRY:
                        await cur.execute(_RETRY_SQL, (o.retry_in_s, o.error, c.id, c.attempts))
                    else:
                        await cur.execute(_GIVE_UP_SQL, (PARKED_AT, o.error, c.id, c.attempts))
        except psycopg.OperationalError as exc:
            raise OutboxUnavailableError(str(exc).strip()) from exc


# --- the sender ---------------------------------------------------------------------------------


class WebhookSender:
    """Drains `webhook_outbox`: claims due rows, POSTs them signed, records the outcome.

    Run one or more per deployment (`run` under the process's TaskGroup); they share the
    work safely. See the module docstring for the retry policy.
    """

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        endpoints: Sequence[WebhookEndpoint],
        poll_interval_s: float = 0.5,
        batch_size: int = 50,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        max_attempts: int | None = None,
        lease_margin_s: float = 30.0,
        db_retry_base_s: float = 0.5,
        db_retry_cap_s: float = 30.0,
        transport: WebhookTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not schema:
            raise WebhookError("schema must be named")
        names = [ep.name for ep in endpoints]
        if len(set(names)) != len(names):
            raise WebhookError(f"endpoint names must be unique, got {names}")
        for knob, value in (
            ("poll_interval_s", poll_interval_s),
            ("backoff_base_s", backoff_base_s),
            ("backoff_cap_s", backoff_cap_s),
            ("db_retry_base_s", db_retry_base_s),
            ("db_retry_cap_s", db_retry_cap_s),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise WebhookError(f"{knob} must be a positive number, got {value!r}")
        if backoff_cap_s < backoff_base_s:
            raise WebhookError("backoff_cap_s must be at least backoff_base_s")
        if batch_size < 1:
            raise WebhookError(f"batch_size must be at least 1, got {batch_size}")
        if max_attempts is not None and max_attempts < 1:
            raise WebhookError(f"max_attempts must be at least 1 or None, got {max_attempts}")
        if lease_margin_s < 0:
            raise WebhookError(f"lease_margin_s must not be negative, got {lease_margin_s}")
        self._url = database_url
        self._schema = schema
        self._endpoints = {ep.name: ep for ep in endpoints}
        self._poll_s = poll_interval_s
        self._batch = batch_size
        self._base_s = backoff_base_s
        self._cap_s = backoff_cap_s
        self._max_attempts = max_attempts
        self._lease_s = max((ep.timeout_s for ep in endpoints), default=0.0) + lease_margin_s
        self._db_base_s = db_retry_base_s
        self._db_cap_s = db_retry_cap_s
        self._transport = transport
        self._db_failures = 0
        # Jitter only; seeded by the caller for reproducible runs, never the global generator.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not crypto

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set. Database outages are waited out with back-off."""
        if not self._endpoints:
            log.info("no webhook endpoints configured; sender idle")
            await stop.wait()
            return
        async with AsyncExitStack() as stack:
            transport = self._transport
            if transport is None:
                transport = await stack.enter_async_context(HttpxTransport())
            self._db_failures = 0
            while not stop.is_set():
                # The supervised loop: whatever goes wrong, wait and start over.
                try:
                    outbox = await _Outbox.connect(self._url, self._schema)
                    try:
                        await self._drain(outbox, transport, stop)
                    finally:
                        await outbox.close()
                except OutboxUnavailableError as exc:
                    wait_s = self._db_backoff_s()
                    log.warning("outbox unavailable", error=str(exc), retry_in_s=round(wait_s, 3))
                except Exception:  # the top of the supervised loop: log, back off, go on
                    wait_s = self._db_backoff_s()
                    log.exception("webhook sender failed", retry_in_s=round(wait_s, 3))
                else:
                    return
                await _wait(stop, wait_s)

    def _db_backoff_s(self) -> float:
        self._db_failures += 1
        return backoff_s(
            self._db_failures, base_s=self._db_base_s, cap_s=self._db_cap_s, rng=self._rng
        )

    async def _drain(
        self, outbox: _Outbox, transport: WebhookTransport, stop: asyncio.Event
    ) -> None:
        names = sorted(self._endpoints)
        while not stop.is_set():
            claims = await outbox.claim(names, self._batch, self._lease_s)
            self._db_failures = 0  # the outbox answered: the next outage backs off from base
            if claims:
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(self._deliver(c, transport), name=f"webhook-{c.id}")
                        for c in claims
                    ]
                await outbox.record([t.result() for t in tasks])
            if len(claims) < self._batch:
                await _wait(stop, self._poll_s)

    async def _deliver(self, claim: _Claim, transport: WebhookTransport) -> _Outcome:
        endpoint = self._endpoints[claim.endpoint]
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(endpoint.secret, int(time.time()), claim.body),
            "Idempotency-Key": idempotency_key(claim.journal_seq, claim.body, endpoint.name),
            "Tungku-Delivery-Attempt": str(claim.attempts),
        }
        bound = log.bind(endpoint=endpoint.name, seq=claim.journal_seq, attempt=claim.attempts)
        retry_after: float | None = None
        try:
            reply = await transport.post(endpoint.url, headers, claim.body, endpoint.timeout_s)
        except DeliveryError as exc:
            result, error = Verdict.RETRY, str(exc)
        else:
            result = verdict(reply.status)
            text = " ".join(reply.text.split())
            error = f"HTTP {reply.status}" + (f": {text}" if text else "")
            retry_after = reply.retry_after_s
        error = error[:_ERROR_TEXT_MAX]
        if result is Verdict.DELIVERED:
            bound.info("webhook delivered")
            return _Outcome(claim, result, "", 0.0)
        limit = self._max_attempts
        if result is Verdict.RETRY and limit is not None and claim.attempts >= limit:
            result, error = Verdict.GIVE_UP, f"after {claim.attempts} attempts: {error}"
        if result is Verdict.GIVE_UP:
            bound.error("webhook failed permanently", error=error)
            return _Outcome(claim, result, f"permanent: {error}", 0.0)
        wait_s = backoff_s(claim.attempts, base_s=self._base_s, cap_s=self._cap_s, rng=self._rng)
        if retry_after is not None:
            wait_s = min(self._cap_s, max(wait_s, retry_after))
        bound.warning("webhook failed, will retry", error=error, retry_in_s=round(wait_s, 3))
        return _Outcome(claim, result, error, wait_s)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
