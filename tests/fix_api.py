"""API fixtures: the real app, started through its lifespan by a real uvicorn server on a free
port (in a thread of the test process), over the test's own freshly migrated schema."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from dashboards import auth
from dashboards.app import create_app
from ingest.migrate import session_sql
from ingest.settings import Settings

PASSWORD = "correct-horse-battery"  # noqa: S105 - a test user's password


@dataclass
class Api:
    """A running API and ways to talk to it."""

    url: str
    schema: str
    database_url: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client, with a bearer token when given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self.clients.append(c)
        return c

    def db(self, fn: Callable[[psycopg.AsyncConnection[Any]], Coroutine[Any, Any, Any]]) -> Any:
        """Run fn on a connection to the API's schema."""

        async def run() -> Any:
            async with await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True
            ) as conn:
                await conn.execute(session_sql(self.schema))
                return await fn(conn)

        return in_thread(run)

    def user(
        self, username: str, role: str, sites: tuple[str, ...] = (), password: str = PASSWORD
    ) -> httpx.Client:
        """Create a user straight in the database and return a client logged in as it."""
        self.db(
            lambda conn: auth.create_user(
                conn,
                username=username,
                role=auth.Role(role),
                password=password,
                sites=list(sites),
                actor="test",
                now=datetime.now(UTC),
            )
        )
        return self.client(self.login(username, password))

    def login(self, username: str, password: str = PASSWORD) -> str:
        """A token for this user."""
        r = self.client().post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


def in_thread(fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """asyncio.run(fn()) in a thread of its own: callers may have a running loop of their own
    (Playwright's sync API runs one in the test's thread)."""
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, fn()).result()


def serve(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Start the app on a free port; returns when its lifespan has started."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,  # live event streams never end by themselves
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def api_settings(database_url: str, db_schema: str) -> Settings:
    """Settings of the API under test (a test may replace fields before `api` starts it)."""
    return Settings(database_url=database_url, db_schema=db_schema)


@contextmanager
def running(settings: Settings) -> Iterator[Api]:
    """The API over these settings, running until the block ends."""
    server, thread, url = serve(settings)
    a = Api(url, settings.db_schema, settings.database_url)
    try:
        yield a
    finally:
        for c in a.clients:
            c.close()
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def api(api_settings: Settings) -> Iterator[Api]:
    """The API, running."""
    with running(api_settings) as a:
        yield a
