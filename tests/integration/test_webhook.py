"""Webhook delivery against a real HTTP receiver and the real outbox in TimescaleDB.

The receiver is a `ThreadingHTTPServer` on 127.0.0.1 in a thread, recording every request and
answering from a script (statuses, or "hang" to stall past the sender's timeout). Database
outages go through a real TCP proxy in front of PostgreSQL. Back-off bases are tens of
milliseconds so retries happen quickly; no assertion is tighter than "a later gap is longer".
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from alerting.webhook import (
    PARKED_AT,
    WebhookEndpoint,
    WebhookSender,
    enqueue_sync,
    idempotency_key,
    render,
    verify,
)

SECRET = b"integration-test-secret-0123"


# --- a real receiver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    at_s: float  # time.monotonic() on arrival


class Receiver:
    """An HTTP server answering POSTs from a script: one status (or "hang") per request in
    order, then `then` for every later request."""

    def __init__(
        self, script: Sequence[int | str] = (), *, then: int = 200, delay_s: float = 0.0
    ) -> None:
        self.requests: list[Received] = []
        self._script = list(script)
        self._then = then
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(Received(headers, body, time.monotonic()))
                    answer = receiver._script.pop(0) if receiver._script else receiver._then
                if answer == "hang":
                    receiver._release.wait(10)
                    return
                if receiver._delay_s:
                    receiver._release.wait(receiver._delay_s)
                payload = b"nope" if answer != 200 else b"ok"
                try:
                    self.send_response(int(answer))
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the sender gave up on us; nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def keys(self) -> list[str]:
        with self._lock:
            return [r.headers["idempotency-key"] for r in self.requests]


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start receivers on demand; all are shut down after the test."""
    started: list[Receiver] = []

    def start(script: Sequence[int | str] = (), **kwargs: Any) -> Receiver:
        r = Receiver(script, **kwargs)
        r.start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


# --- a real TCP proxy in front of PostgreSQL, to cut and restore the database -------------------


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the database; refused until started, `cut` drops all."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.WriteTransport] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._transports += [writer.transport, up_writer.transport]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for t in self._transports:
            t.abort()
        self._transports.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.sleep(0.05)  # let the piping tasks see their closed transports


# --- helpers ------------------------------------------------------------------------------------


def journal_entry(seq: int) -> dict[str, object]:
    """A journal entry as the engine would hand it to `enqueue`."""
    return {
        "seq": seq,
        "at": datetime(2026, 12, 1, 10, 0, tzinfo=UTC) + timedelta(seconds=seq),
        "alert_id": 1,
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
        "value": 60.0 + seq,
        "limit": 50.0,
        "reason": "level exceeded",
        "pack_version": "2026.12.1",
        "hash": seq.to_bytes(32, "big"),
    }


def add_entries(
    db: psycopg.Connection[Any], endpoints: list[WebhookEndpoint], seqs: range
) -> list[dict[str, object]]:
    """Enqueue entries for these seq numbers, as the engine does with its journal append."""
    entries = [journal_entry(s) for s in seqs]
    with db.transaction(), db.cursor() as cur:
        enqueue_sync(cur, endpoints, entries)
    return entries


def outbox(db: psycopg.Connection[Any], endpoint: str | None = None) -> list[dict[str, Any]]:
    """The outbox rows, optionally for one endpoint, in id order."""
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT *, next_attempt_at = %(parked)s AS parked FROM webhook_outbox"
            " WHERE %(ep)s::text IS NULL OR endpoint = %(ep)s ORDER BY id",
            {"ep": endpoint, "parked": PARKED_AT},
        )
        return cur.fetchall()


def endpoint(name: str, url: str, timeout_s: float = 2.0) -> WebhookEndpoint:
    """An endpoint signed with the test secret."""
    return WebhookEndpoint(name, url, SECRET, timeout_s)


def sender(
    database_url: str, schema: str, endpoints: list[WebhookEndpoint], **knobs: Any
) -> WebhookSender:
    """A sender with test-sized timings (overridable)."""
    settings: dict[str, Any] = {
        "poll_interval_s": 0.02,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 2.0,
        "db_retry_base_s": 0.05,
        "db_retry_cap_s": 0.2,
        **knobs,
    }
    return WebhookSender(database_url=database_url, schema=schema, endpoints=endpoints, **settings)


async def eventually(condition: Callable[[], bool], timeout_s: float) -> None:
    """Wait until `condition` (a database query, run off the loop) holds."""
    async with asyncio.timeout(timeout_s):
        while not await asyncio.to_thread(condition):  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.02)


async def run_until(
    senders: list[WebhookSender],
    condition: Callable[[], bool],
    *,
    timeout_s: float = 15.0,
    linger_s: float = 0.0,
) -> None:
    """Run the senders until `condition` holds (then `linger_s` longer), then stop them."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        for i, s in enumerate(senders):
            tg.create_task(s.run(stop), name=f"sender-{i}")
        try:
            await eventually(condition, timeout_s)
            await asyncio.sleep(linger_s)
        finally:
            stop.set()


def all_delivered(db: psycopg.Connection[Any], endpoint: str | None = None) -> Callable[[], bool]:
    """Condition: every (matching) row has been delivered."""
    return lambda: all(r["delivered_at"] is not None for r in outbox(db, endpoint))


# --- tests --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_transition_is_delivered_once_signed(
    db: psycopg.Connection[Any], database_url: str, db_schema: str, receivers: Any
) -> None:
    """A 2xx receiver gets each transition once, signed, with its stable Idempotency-Key."""
    rx = receivers()
    ep = endpoint("ops", rx.url)
    entries = add_entries(db, [ep], range(1, 4))
    await run_until([sender(database_url, db_schema, [ep])], all_delivered(db), linger_s=0.3)

    # Deliveries in one batch run concurrently: match requests to entries by key, not order.
    by_key = {r.headers["idempotency-key"]: r for r in rx.requests}
    assert len(rx.requests) == len(by_key) == 3
    for entry in entries:
        body = render(entry)
        got = by_key[idempotency_key(int(str(entry["seq"])), body, "ops")]
        assert got.body == body
        assert got.headers["content-type"] == "application/json"
        assert got.headers["tungku-delivery-attempt"] == "1"
        assert verify(SECRET, got.headers["tungku-signature"], got.body, now_s=time.time())
    assert [(r["attempts"], r["last_error"]) for r in outbox(db)] == [(1, "")] * 3


@pytest.mark.asyncio
async def test_failed_attempts_are_retried_with_the_same_key(
    db: psycopg.Connection[Any], database_url: str, db_schema: str, receivers: Any
) -> None:
    """Two 500s then a 200: three requests, one Idempotency-Key, each validly signed."""
    rx = receivers([500, 500])
    ep = endpoint("ops", rx.url)
    add_entries(db, [ep], range(1, 2))
    await run_until([sender(database_url, db_schema, [ep])], all_delivered(db), linger_s=0.2)

    assert len(rx.requests) == 3
    assert len(set(rx.keys())) == 1
    assert [r.headers["tungku-delivery-attempt"] for r in rx.requests] == ["1", "2", "3"]
    for got in rx.requests:
        assert verify(SECRET, got.headers["tungku-signature"], got.body, now_s=time.time())
    (row,) = outbox(db)
    assert row["attempts"] == 3
    assert row["delivered_at"] is not None
    assert row["last_error"].startswith("HTTP 500")


@pytest.mark.asyncio
async def test_backoff_between_attempts_grows(
    db: psycopg.Connection[Any], database_url: str, db_schema: str, receivers: Any
) -> None:
    """With a 0.2 s base the third wait outlasts the first, and none is shorter than base/2."""
    rx = receivers([500, 500, 500])
    ep = endpoint("ops", rx.url)
    add_entries(db, [ep], range(1, 2))
    await run_until([sender(database_url, db_schema, [ep], backoff_base_s=0.2)], all_delivered(db))

    times = [r.at_s for r in rx.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    assert all(g >= 0.1 for g in gaps)  # attempt n waits at least base * 2**(n-1) / 2
    assert gaps[2] > gaps[0]
    assert gaps[0] < 5.0


@pytest.mark.parametrize("status", [408, 429, 503])
@pytest.mark.asyncio
async def test_transient_statuses_are_retried(
    db: psycopg.Connection[Any], database_url: str, db_schema: str, receivers: Any, status: int
) -> None:
    """408, 429 and 5xx are transient: the next attempt delivers."""
    rx = receivers([status])
    ep = endpoint("ops", rx.url)
    add_entries(db, [ep], range(1, 2))
    await run_until([sender(database_url, db_schema, [ep])], all_delivered(db))

    (row,) = outbox(db)
    assert row["attempts"] == 2
    assert row["last_error"].startswith(f"HTTP {status}")
    assert len(rx.requests) == 2


@pytest.mark.asyncio
async def test_permanent_4xx_does_not_block_another_endpoint(
    db: psycopg.Connection[Any], database_url: str, db_schema: str, receivers: Any
) -> None:
    """A receiver answering 404 is tried once per row and parked; the other gets everything."""
    refusing, good = receivers(then=404), receivers()
    eps = [endpoint("refusing", refusing.url), endpoint("good", good.url)]
    add_entries(db, eps, range(1, 4))
    await run_until(
        [sender(database_url, db_schema, eps)],
        lambda: all_delivered(db, "good")() and all(r["parked"] for r in outbox(db, "refusing")),
        linger_s=0.3,
    )

    assert len(good.requests) == 3
    assert len(refusing.requests) == 3
    for row in outbox(db, "refusing"):
        assert row["attempts"] == 1
        assert row["delivered_at"] is None
        assert row["last_error"].startswith("permanent: HTTP 404")


@pytest.mark.asyncio
async def test_unreachable_receiver_keeps_the_row_pending(
    db: psycopg.Connection[Any], database_url: str, db_schema: str
) -> None:
    """Connection refused is transient: the row stays pending, last_error says refused."""
    ep = endpoint("down", f"http://127.0.0.1:{free_port()}/hook")
    add_entries(db, [ep], range(1, 2))
    await run_until([sender(database_url, db_schema, [ep])], lambda: outbox(db)[0]["attempts"] >= 2)

    (row,) = outbox(db)
    assert row["delivered_at"] is None
    assert not row["parked"]
    assert "Connection refused" in row["last_error"]


@pytest.mark.asyncio
async def test_hanging_receiver_times_out_and_is_retried(
    db: psycopg.Connection[Any], database_url: str, db_schema: str, receivers: Any
) -> None:
    """A receiver that never answers is abandoned after timeout_s and the retry delivers."""
    rx = receivers(["hang"])
    ep = endpoint("slow", rx.url, timeout_s=0.3)
    add_entries(db, [ep], range(1, 2))
    await run_until([sender(database_url, db_schema, [ep])], all_delivered(db))

    (row,) = outbox(db)
    assert row["attempts"] == 2
    assert "no answer within 0.3 s" in row["last_error"]
    assert len(set(rx.keys())) == 1


@pytest.mark.asyncio
async def test_two_senders_never_deliver_the_same_row_twice(
    db: psycopg.Connection[Any], database_url: str, db_schema: str, receivers: Any
) -> None:
    """Two senders draining one outbox at once send each row exactly once between them."""
    rx = receivers(delay_s=0.01)
    ep = endpoint("ops", rx.url)
    add_entries(db, [ep], range(1, 61))
    both = [sender(database_url, db_schema, [ep], batch_size=4) for _ in range(2)]
    await run_until(both, all_delivered(db), linger_s=0.2)

    counts = Counter(rx.keys())
    assert len(counts) == 60
    assert set(counts.values()) == {1}
    assert {r["attempts"] for r in outbox(db)} == {1}


@pytest.mark.asyncio
async def test_database_outage_is_waited_out(
    db: psycopg.Connection[Any], database_url: str, db_schema: str, receivers: Any
) -> None:
    """A sender whose database is down or cut keeps retrying, then delivers once it is back."""
    rx = receivers()
    ep = endpoint("ops", rx.url)
    target = conninfo_to_dict(database_url)
    proxy = TcpProxy(str(target.get("host", "127.0.0.1")), int(str(target.get("port", 5432))))
    via_proxy = make_conninfo(database_url, host="127.0.0.1", port=str(proxy.port))
    add_entries(db, [ep], range(1, 3))
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(sender(via_proxy, db_schema, [ep]).run(stop), name="sender")
            await asyncio.sleep(0.5)  # refused all along
            assert not task.done()
            assert rx.requests == []
            await proxy.start()
            await eventually(all_delivered(db), 15)
            proxy.cut()
            add_entries(db, [ep], range(3, 5))
            await eventually(all_delivered(db), 15)
            stop.set()
    finally:
        stop.set()
        await proxy.stop()

    assert sorted(Counter(rx.keys()).values()) == [1, 1, 1, 1]


@pytest.mark.asyncio
async def test_stop_is_prompt_during_an_outage(db_schema: str) -> None:
    """Setting stop ends run within a second even while the database is unreachable."""
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    s = sender(down, db_schema, [endpoint("ops", "http://127.0.0.1:9/hook")], db_retry_cap_s=30)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(s.run(stop), name="sender")
        await asyncio.sleep(0.3)
        assert not task.done()
        stop.set()
        async with asyncio.timeout(1.0):
            await asyncio.shield(task)
