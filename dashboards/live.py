"""Live alert events for the control room: NOTIFY fanned out to Server-Sent Events.

One connection per app LISTENs on the alert store's channel (`tungku_alerts`, sent on commit
with every journal entry, engine transitions and operator actions alike) and wakes every
subscriber of the entry's site. A woken subscriber reads the journal after the last entry it
sent (`seq > last`, that site, in seq order), so nothing is lost or repeated whatever
notifications were missed: a subscriber also reads every `POLL_S` seconds, and a reconnecting
client resumes from its Last-Event-ID. Each event's id is the journal entry's seq; its data is
the entry with the alert's current row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from alerting.store import NOTIFY_CHANNEL
from ingest.migrate import session_sql

log = structlog.get_logger("tungku.api.live")

POLL_S: Final = 5.0
#: A client connecting without Last-Event-ID first gets this much recent history, so its
#: list of recent transitions and its flood banner are right from the start.
RECENT: Final = timedelta(minutes=10)
_BATCH: Final = 500

EVENT_SQL: Final = (
    "SELECT j.seq, j.at, j.alert_id, j.site_id, j.asset, j.rule_id, j.subject, j.actor,"
    " j.action, j.from_state, j.to_state, j.severity, j.priority, j.value,"
    " j.limit_value AS limit, j.reason, a.title, a.state, a.acked, a.latched,"
    " a.condition_active, a.shelved_until, a.shelve_reason, a.first_active_at,"
    " a.last_change_at, a.value AS alert_value, a.limit_value AS alert_limit,"
    " a.priority AS alert_priority, a.severity AS alert_severity, a.escalated_by,"
    " (SELECT max(x.at) FROM alert_journal x WHERE x.alert_id = a.id AND x.actor = 'engine'"
    "  AND x.to_state = 'unack' AND x.from_state NOT IN ('unack', 'ack')) AS annunciated_at"
    " FROM alert_journal j JOIN alerts a ON a.id = j.alert_id"
    " WHERE j.site_id = %(site)s AND j.seq > %(after)s ORDER BY j.seq LIMIT %(n)s"
)


class Broadcaster:
    """Wakes the subscribers of a site when its journal grows."""

    def __init__(self, database_url: str, schema: str) -> None:
        self._url = database_url
        self._schema = schema
        self._subscribers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening (in the running event loop)."""
        self._task = asyncio.create_task(self._listen(), name="tungku-live-listen")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscribe(self, site: str) -> Any:
        """An event set whenever the site's journal may have grown."""
        ev = asyncio.Event()
        self._subscribers.setdefault(site, set()).add(ev)
        try:
            yield ev
        finally:
            self._subscribers[site].discard(ev)

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=10,
                    # A half-open connection (NAT timeout, failover) is found within a minute.
                    keepalives=1,
                    keepalives_idle=20,
                    keepalives_interval=5,
                    keepalives_count=4,
                ) as conn:
                    await conn.execute(session_sql(self._schema))
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 0.5
                    self._wake_all()  # whatever was missed while not listening
                    async for n in conn.notifies():
                        site = _site_of(n.payload)
                        for ev in self._subscribers.get(site, ()) if site else ():
                            ev.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any fault
                log.warning(
                    "live listener failed; streams poll meanwhile", error=str(exc), retry_s=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _wake_all(self) -> None:
        for evs in self._subscribers.values():
            for ev in evs:
                ev.set()


def _site_of(payload: str) -> str | None:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    site = doc.get("site_id") if isinstance(doc, dict) else None
    return site if isinstance(site, str) else None


async def events(
    pool: AsyncConnectionPool[Any],
    broadcaster: Broadcaster,
    site: str,
    *,
    last_event_id: int | None,
    now: datetime,
    allowed: Callable[[], Awaitable[bool]],
) -> AsyncIterator[dict[str, Any]]:
    """The site's journal entries after `last_event_id` (or of the last RECENT when None), then
    each new one as it is committed; until the consumer stops, or `allowed()` (asked before
    every read: the token still valid, the site still the user's) says no."""
    with broadcaster.subscribe(site) as woken:
        if last_event_id is None:
            async with pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT coalesce(min(seq) - 1, (SELECT seq FROM alert_journal_head))"
                    " AS s FROM alert_journal WHERE site_id = %s AND at >= %s",
                    (site, now - RECENT),
                )
                row = await cur.fetchone()
                last = int(row["s"]) if row and row["s"] is not None else 0
        else:
            last = last_event_id
        while await allowed():
            woken.clear()
            async with pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(EVENT_SQL, {"site": site, "after": last, "n": _BATCH})
                rows = await cur.fetchall()
            for r in rows:
                last = int(r["seq"])
                yield r
            if len(rows) == _BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), POLL_S)
