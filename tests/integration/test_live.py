"""Live alert events (Server-Sent Events) against the real app and database: what a control
room page reads, with resumption, facility scoping and an ended session."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from alerting.engine import ConditionEvent, EventKind
from alerting.pack import Priority, Severity, default_pack_path, load_pack
from alerting.store import AlertStore, to_us
from tests.fix_api import Api, in_thread

PACK = load_pack(default_pack_path())


def apply(api: Api, site: str, at: datetime, kind: EventKind) -> None:
    ev = ConditionEvent(
        to_us(at),
        site,
        "bay",
        "gas.co.level",
        "bay.co",
        "CO",
        kind,
        severity=None if kind is EventKind.CLEAR else Severity.CRITICAL,
        priority=Priority.HIGH,
        value=250.0,
        limit=None if kind is EventKind.CLEAR else 200.0,
        reason="test",
    )

    async def run() -> None:
        store = AlertStore(database_url=api.database_url, schema=api.schema)
        try:
            await store.apply([ev], pack=PACK, scope="*", state=b"x")
        finally:
            await store.close()

    in_thread(run)


def read_events(
    api: Api, token: str, site: str, *, last_id: str | None, until: int, timeout_s: float = 20
) -> tuple[list[dict[str, Any]], bool]:
    """Events from the stream until `until` arrived (or it ended); (events, ended by server)."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    got: list[dict[str, Any]] = []
    ended = True
    with (
        httpx.Client(base_url=api.url, timeout=timeout_s) as c,
        c.stream("GET", f"/api/v1/facilities/{site}/events", headers=headers) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        ev: dict[str, Any] = {}
        for line in r.iter_lines():
            if line.startswith("id:"):
                ev["id"] = line[3:].strip()
            elif line.startswith("event:"):
                ev["event"] = line[6:].strip()
            elif line.startswith("data:"):
                ev["data"] = json.loads(line[5:].strip())
            elif line == "" and "data" in ev:
                got.append(ev)
                ev = {}
                if len(got) >= until:
                    ended = False
                    break
    return got, ended


def test_events_arrive_in_order_and_resume_from_the_last_id(api: Api) -> None:
    """The stream replays the last 10 minutes, then each transition as it is committed (id =
    journal seq, data = the entry and the alert's state); Last-Event-ID resumes after it."""
    api.user("admin", "admin")
    token = api.login("admin")
    now = datetime.now(UTC)
    apply(api, "s1", now - timedelta(minutes=1), EventKind.ACTIVATE)
    apply(api, "s2", now - timedelta(minutes=1), EventKind.ACTIVATE)  # another facility
    got: list[dict[str, Any]] = []

    def listen() -> None:
        got.extend(read_events(api, token, "s1", last_id=None, until=2)[0])

    t = threading.Thread(target=listen)
    t.start()
    time.sleep(1.0)
    apply(api, "s1", now, EventKind.CLEAR)
    t.join(30)
    assert [(e["event"], e["data"]["action"], e["data"]["site_id"]) for e in got] == [
        ("alert", "activate", "s1"),
        ("alert", "clear", "s1"),
    ]
    assert [int(e["id"]) for e in got] == [e["data"]["seq"] for e in got]
    assert got[1]["data"]["state"] == "latched" or got[1]["data"]["state"] == "rtn_unack"
    assert got[0]["data"]["annunciated_at"] is not None
    # A client that saw the first event and dropped gets exactly the rest.
    rest, _ = read_events(api, token, "s1", last_id=got[0]["id"], until=1)
    assert [e["id"] for e in rest] == [got[1]["id"]]


def test_the_stream_is_scoped_and_ends_with_the_session(api: Api) -> None:
    """Another facility's stream is refused before it starts; a revoked token ends it."""
    api.user("admin", "admin")
    op = api.user("op1", "operator", ("s1",))
    token = str(op.headers["Authorization"]).removeprefix("Bearer ")
    r = op.get("/api/v1/facilities/s2/events")
    assert r.status_code == 403
    assert "not assigned to facility 's2'" in r.text
    result: list[bool] = []

    def listen() -> None:
        result.append(read_events(api, token, "s1", last_id=None, until=99, timeout_s=30)[1])

    t = threading.Thread(target=listen)
    t.start()
    time.sleep(1.0)
    assert op.post("/api/v1/auth/logout").status_code == 204
    apply(api, "s1", datetime.now(UTC), EventKind.ACTIVATE)  # wakes the stream
    t.join(30)
    assert result == [True], "the stream should end once its token is revoked"
