"""PostgreSQL adapter for alerting: alerts, the journal, the facility record, checkpoints.

Does I/O and nothing clever: the lifecycle (`alerting.lifecycle`) decides every transition,
the hash chain (`alerting.journal`) decides every hash; this module reads rows into them and
writes their results back, each batch of transitions in one transaction that also saves the
engine's checkpoint, queues webhook deliveries and notifies listeners (NOTIFY is delivered
on commit, so a listener never hears of a transition that was rolled back).

Appending to the journal locks its head row: entries get contiguous seq numbers whichever
process appends. Foreign errors are translated once, here: a lost or refused connection
becomes `AlertStoreUnavailableError`, which callers retry.

Live consumers: `LISTEN tungku_alerts`; each payload is JSON
{"seq", "alert_id", "site_id", "asset", "rule_id", "subject", "action", "to_state", "at"}.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import numpy as np
import orjson
import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerting import journal, lifecycle
from alerting.compliance import Compliance, Finding, Permit, Report
from alerting.engine import ConditionEvent, EventKind, SensorInfo
from alerting.lifecycle import AlertState, State
from alerting.pack import Pack, Priority, Severity
from alerting.replay import lifecycle_event
from alerting.webhook import WebhookEndpoint, enqueue
from ingest.migrate import session_sql

log = structlog.get_logger("tungku.alerting")

NOTIFY_CHANNEL: Final = "tungku_alerts"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class AlertStoreError(RuntimeError):
    """Raised when the database refuses an alerting operation (a retry will not help)."""


class AlertStoreUnavailableError(AlertStoreError):
    """Raised when the database cannot be reached or the connection was lost."""


class ActionError(AlertStoreError):
    """Raised when an operator action is refused: no such alert, or not allowed in its state."""


def to_dt(us: int) -> datetime:
    """Event-time microseconds as an aware UTC datetime (exact)."""
    return EPOCH + timedelta(microseconds=us)


def to_us(dt: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact)."""
    return (dt - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert as stored: identity plus its lifecycle state."""

    id: int
    site_id: str
    asset: str
    rule_id: str
    subject: str
    title: str
    state: AlertState
    value: float | None
    limit: float | None
    escalated_by: tuple[str, ...]
    pack_version: str
    first_active_us: int | None
    #: The last engine event applied: (event time, order within that time); see `event_mark`.
    engine_mark: tuple[int, int] = (-1, -1)


def _row_state(r: Mapping[str, Any]) -> AlertState:
    return AlertState(
        state=State(r["state"]),
        condition_active=r["condition_active"],
        severity=Severity(r["severity"]) if r["severity"] else None,
        priority=Priority(r["priority"]),
        latched=r["latched"],
        shelved_until_us=to_us(r["shelved_until"]) if r["shelved_until"] else None,
        shelve_reason=r["shelve_reason"],
        suppressed=r["suppressed"],
        out_of_service=r["out_of_service"],
        acked=r["acked"],
        last_change_us=to_us(r["last_change_at"]),
        activations=r["activations"],
    )


def _alert_row(r: Mapping[str, Any]) -> AlertRow:
    return AlertRow(
        id=r["id"],
        site_id=r["site_id"],
        asset=r["asset"],
        rule_id=r["rule_id"],
        subject=r["subject"],
        title=r["title"],
        state=_row_state(r),
        value=r["value"],
        limit=r["limit_value"],
        escalated_by=tuple(r["escalated_by"]),
        pack_version=r["pack_version"],
        first_active_us=to_us(r["first_active_at"]) if r["first_active_at"] else None,
        engine_mark=(r["engine_mark_us"], r["engine_mark_ord"]),
    )


_KIND_RANK: Final = {
    EventKind.SUPPRESS: 0,
    EventKind.ACTIVATE: 1,
    EventKind.CLEAR: 2,
    EventKind.UNSUPPRESS: 3,
}


def event_mark(ev: ConditionEvent) -> tuple[int, int]:
    """An engine event's place in its alert's sequence: event time, then kind and severity.
    The engine produces each alert's events in this order, so a re-derived event is one at
    or before the alert's mark."""
    sev = 0 if ev.severity is None else (1 if ev.severity is Severity.WARNING else 2)
    return ev.at_us, _KIND_RANK[ev.kind] * 4 + sev


def action_name(event: lifecycle.Event) -> str:
    """The journal's name for an event: its class name in snake case."""
    name = type(event).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


@dataclass(frozen=True, slots=True)
class Subject:
    """Which alert: site, rule and subject (a sensor id, a derived signal, a gateway)."""

    site_id: str
    rule_id: str
    subject: str


_ALERT_COLS: Final = (
    "id, site_id, asset, rule_id, subject, title, state, condition_active, severity, priority,"
    " latched, acked, suppressed, out_of_service, shelved_until, shelve_reason, activations,"
    " value, limit_value, escalated_by, pack_version, first_active_at, last_change_at,"
    " engine_mark_us, engine_mark_ord"
)


class AlertStore:
    """Alerting's database access over one connection; reconnects on demand."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        webhooks: Sequence[WebhookEndpoint] = (),
    ) -> None:
        self._url = database_url
        self._schema = schema
        self._webhooks = tuple(webhooks)
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._scope_lock: str | None = None
        self._borrowed = False

    @classmethod
    def on(cls, conn: psycopg.AsyncConnection[dict[str, Any]], schema: str) -> AlertStore:
        """A store over a connection someone else owns (e.g. from a pool), whose search_path
        is the schema's and whose rows are dicts. `close` leaves it open."""
        store = cls(database_url="", schema=schema)
        store._conn = conn
        store._borrowed = True
        return store

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, row_factory=dict_row, connect_timeout=5
            )
            await conn.execute(session_sql(self._schema))
            if self._scope_lock is not None:
                # Held as long as this session lives; taken again on every reconnect, so two
                # evaluators of one scope never run at once (e.g. a killed service's worker
                # still finishing while its successor starts). Advisory locks are per
                # database, so the key names the schema too.
                key = f"tungku-alerts:{self._schema}:{self._scope_lock}"
                got = await (
                    await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
                ).fetchone()
                if not got or not got["pg_try_advisory_lock"]:
                    log.warning(
                        "another evaluator of this scope holds its lock; waiting for it to end",
                        scope=self._scope_lock,
                        schema=self._schema,
                    )
                    await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            self._conn = conn
        return self._conn

    async def lock_scope(self, scope: str) -> None:
        """Become the only evaluator of this scope (waits while another holds it)."""
        self._scope_lock = scope
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        async with self._guard():
            pass

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None and not self._borrowed:
            await self._conn.close()
            self._conn = None

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        try:
            yield await self._connection()
        except psycopg.OperationalError as exc:
            if self._conn is not None and not self._borrowed:
                await self._conn.close()
                self._conn = None
            raise AlertStoreUnavailableError(str(exc)) from exc
        except psycopg.Error as exc:
            raise AlertStoreError(str(exc)) from exc

    async def _stream(
        self, query: str, params: Sequence[Any], chunk_rows: int
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Rows of a large query in chunks, on a connection of its own (a server-side cursor
        needs a transaction, which must not hold up this store's other work)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise AlertStoreUnavailableError(str(exc)) from exc
        try:
            await conn.execute(session_sql(self._schema))
            async with conn.transaction(), conn.cursor(name="stream") as cur:
                await cur.execute(query, params)
                while rows := await cur.fetchmany(chunk_rows):
                    yield rows
        except psycopg.OperationalError as exc:
            raise AlertStoreUnavailableError(str(exc)) from exc
        except psycopg.Error as exc:
            raise AlertStoreError(str(exc)) from exc
        finally:
            await conn.close()

    # -- what the engine needs -------------------------------------------------------------

    async def sensors(self, sites: Sequence[str] = ()) -> list[SensorInfo]:
        """Registered, not retired sensors (of the given sites; all when none)."""
        q = (
            "SELECT s.key, s.site_id, s.gateway_id, s.id, s.kind, s.unit, s.period_s, s.asset,"
            " s.min_value, s.max_value FROM sensors s WHERE s.retired_at IS NULL"
            " AND (cardinality(%(sites)s::text[]) = 0 OR s.site_id = ANY(%(sites)s))"
            " ORDER BY s.key"
        )
        async with self._guard() as conn:
            rows = await (await conn.execute(q, {"sites": list(sites)})).fetchall()
        return [
            SensorInfo(
                r["key"], r["site_id"], r["gateway_id"], r["id"], r["kind"], r["unit"],
                r["period_s"], r["asset"], r["min_value"], r["max_value"],
            )
            for r in rows
        ]  # fmt: skip

    async def compliance(self) -> Compliance:
        """The facility record as the engine sees it."""
        async with self._guard() as conn:
            permits = await (
                await conn.execute(
                    "SELECT id, site_id, asset, areas, opened_at, closed_at FROM permits"
                    " WHERE kind = 'hot_work' ORDER BY id"
                )
            ).fetchall()
            findings = await (
                await conn.execute(
                    "SELECT id, site_id, asset, opened_at, closed_at, due_at FROM findings"
                    " ORDER BY id"
                )
            ).fetchall()
            reports = await (
                await conn.execute(
                    "SELECT site_id, period, due_at, submitted_at FROM periodic_reports ORDER BY id"
                )
            ).fetchall()
            smk3 = await (
                await conn.execute(
                    "SELECT site_id, smk3_expires_on FROM facilities"
                    " WHERE smk3_expires_on IS NOT NULL"
                )
            ).fetchall()

        def opt(dt: datetime | None) -> int | None:
            return to_us(dt) if dt is not None else None

        return Compliance(
            permits=tuple(
                Permit(
                    p["site_id"],
                    p["asset"],
                    tuple(p["areas"]),
                    to_us(p["opened_at"]),
                    opt(p["closed_at"]),
                    p["id"],
                )
                for p in permits
            ),
            findings=tuple(
                Finding(
                    f["site_id"],
                    f["asset"],
                    to_us(f["opened_at"]),
                    opt(f["closed_at"]),
                    opt(f["due_at"]),
                    f["id"],
                )
                for f in findings
            ),
            reports=tuple(
                Report(r["site_id"], r["period"], to_us(r["due_at"]), opt(r["submitted_at"]))
                for r in reports
            ),
            smk3_expires_us={
                s["site_id"]: to_us(
                    datetime.combine(s["smk3_expires_on"], datetime.min.time(), UTC)
                )
                + 86_400_000_000
                for s in smk3
            },
        )

    async def register_pack(self, pack: Pack, body: str) -> None:
        """Record the pack the engine runs (once per content hash)."""
        async with self._guard() as conn:
            await conn.execute(
                "INSERT INTO rule_packs (sha256, name, version, effective, body)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
                (pack.sha256, pack.name, pack.version, pack.effective, body),
            )

    async def checkpoint(self, scope: str) -> tuple[str, bytes] | None:
        """The engine state saved for this scope: (pack sha256, state), or None."""
        async with self._guard() as conn:
            row = await (
                await conn.execute(
                    "SELECT pack_sha256, state FROM engine_state WHERE scope = %s", (scope,)
                )
            ).fetchone()
        return (row["pack_sha256"], bytes(row["state"])) if row else None

    async def readings_after(
        self, watermarks: Mapping[int, int], *, chunk_rows: int = 50_000
    ) -> AsyncIterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Readings committed after each sensor's watermark, in (ts, key) order, in chunks:
        what a restarted engine has not evaluated yet."""
        if not watermarks:
            return
        keys = list(watermarks)
        marks = [to_dt(watermarks[k]) for k in keys]
        q = (
            "SELECT r.sensor_key, r.ts, r.value, r.quality FROM readings r"
            " JOIN unnest(%s::int[], %s::timestamptz[]) AS w(key, mark)"
            " ON r.sensor_key = w.key AND r.ts > w.mark ORDER BY r.ts, r.sensor_key"
        )
        async for rows in self._stream(q, (keys, marks), chunk_rows):
            yield _columns(rows)

    async def readings_between(
        self,
        keys: Sequence[int],
        start_us: int | None,
        end_us: int | None,
        *,
        chunk_rows: int = 50_000,
    ) -> AsyncIterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Stored readings of these sensors in [start, end), in (ts, key) order, in chunks."""
        q = (
            "SELECT sensor_key, ts, value, quality FROM readings WHERE sensor_key = ANY(%s)"
            " AND (%s::timestamptz IS NULL OR ts >= %s) AND (%s::timestamptz IS NULL OR ts < %s)"
            " ORDER BY ts, sensor_key"
        )
        lo = to_dt(start_us) if start_us is not None else None
        hi = to_dt(end_us) if end_us is not None else None
        async for rows in self._stream(q, (list(keys), lo, lo, hi, hi), chunk_rows):
            yield _columns(rows)

    async def readings_in(
        self, spans: Mapping[int, tuple[int, int]], *, chunk_rows: int = 50_000
    ) -> AsyncIterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Readings of each sensor within its (after, up to and including) span, in (ts, key)
        order, in chunks: the history a new pack's engine is rebuilt from."""
        if not spans:
            return
        keys = list(spans)
        lo = [to_dt(spans[k][0]) for k in keys]
        hi = [to_dt(spans[k][1]) for k in keys]
        q = (
            "SELECT r.sensor_key, r.ts, r.value, r.quality FROM readings r"
            " JOIN unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS w(key, lo, hi)"
            " ON r.sensor_key = w.key AND r.ts > w.lo AND r.ts <= w.hi"
            " ORDER BY r.ts, r.sensor_key"
        )
        async for rows in self._stream(q, (keys, lo, hi), chunk_rows):
            yield _columns(rows)

    async def latest_readings(self, keys: Sequence[int]) -> dict[int, int]:
        """Per sensor, the time of its latest stored reading."""
        q = (
            "SELECT k.key, (SELECT max(ts) FROM readings r WHERE r.sensor_key = k.key)"
            " FROM unnest(%s::int[]) AS k(key)"
        )
        async with self._guard() as conn:
            rows = await (await conn.execute(q, (list(keys),))).fetchall()
        return {r["key"]: to_us(r["max"]) for r in rows if r["max"] is not None}

    async def active_conditions(
        self, sites: Sequence[str]
    ) -> dict[tuple[str, str, str], tuple[str, str, Severity | None]]:
        """Alerts whose condition is active: (site, rule, subject) -> (asset, title, severity)."""
        q = (
            "SELECT site_id, rule_id, subject, asset, title, severity FROM alerts"
            " WHERE condition_active"
            " AND (cardinality(%(sites)s::text[]) = 0 OR site_id = ANY(%(sites)s))"
        )
        async with self._guard() as conn:
            rows = await (await conn.execute(q, {"sites": list(sites)})).fetchall()
        return {
            (r["site_id"], r["rule_id"], r["subject"]): (
                r["asset"], r["title"], Severity(r["severity"]) if r["severity"] else None
            )
            for r in rows
        }  # fmt: skip

    # -- applying transitions -----------------------------------------------------------

    async def apply(
        self,
        events: Sequence[ConditionEvent],
        *,
        pack: Pack,
        scope: str,
        state: bytes | None,
    ) -> list[dict[str, Any]]:
        """Apply engine events through the lifecycle and journal them, and save the engine
        state, in one transaction. Returns the journal entries written."""
        async with self._guard() as conn, conn.transaction():
            entries = await self._apply(conn, events, pack)
            if state is not None:
                await conn.execute(
                    "INSERT INTO engine_state (scope, pack_sha256, state, saved_at)"
                    " VALUES (%s, %s, %s, now()) ON CONFLICT (scope) DO UPDATE"
                    " SET pack_sha256 = excluded.pack_sha256, state = excluded.state,"
                    " saved_at = excluded.saved_at",
                    (scope, pack.sha256, state),
                )
        return entries

    def sibling(self) -> AlertStore:
        """Another store on the same database and schema, with a connection of its own."""
        return AlertStore(database_url=self._url, schema=self._schema)

    async def save_state(self, *, scope: str, pack: Pack, state: bytes) -> None:
        """Save the engine's checkpoint on its own (not with transitions)."""
        await self.apply([], pack=pack, scope=scope, state=state)

    async def _apply(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        events: Sequence[ConditionEvent],
        pack: Pack,
    ) -> list[dict[str, Any]]:
        if not events:
            return []
        head = await self._lock_head(conn)
        rows: dict[tuple[str, str, str], AlertRow] = {}
        entries: list[dict[str, Any]] = []
        for ev in events:
            key = ev.instance
            row = rows.get(key) or await self._lock_alert(conn, ev, pack)
            mark = event_mark(ev)
            if mark <= row.engine_mark:
                rows[key] = row  # applied before a crash; re-derived since the checkpoint
                continue
            row = replace(row, engine_mark=mark)
            try:
                tr = lifecycle.apply(row.state, lifecycle_event(ev))
            except lifecycle.LifecycleError as exc:  # engine events never raise; guard anyway
                raise AlertStoreError(f"lifecycle refused an engine event: {exc}") from exc
            if not tr.changed:
                rows[key] = row
                continue
            row = replace(
                row,
                state=tr.after,
                value=ev.value if ev.value is not None else row.value,
                limit=ev.limit if ev.limit is not None else row.limit,
                escalated_by=ev.escalated_by if ev.kind is EventKind.ACTIVATE else row.escalated_by,
                pack_version=pack.version,
                first_active_us=(
                    ev.at_us
                    if ev.kind is EventKind.ACTIVATE and row.first_active_us is None
                    else row.first_active_us
                ),
            )
            rows[key] = row
            detail: dict[str, Any] = {"note": tr.note} if tr.note else {}
            if ev.escalated_by:
                detail["escalated_by"] = list(ev.escalated_by)
            if ev.detail:
                detail.update(ev.detail)
            head = await self._journal(
                conn, head, row, tr, actor="engine", action=ev.kind.value, at_us=ev.at_us,
                value=ev.value, limit=ev.limit, reason=ev.reason, severity=ev.severity,
                pack_name=pack.name, pack_version=pack.version, detail=detail, entries=entries,
            )  # fmt: skip
        for row in rows.values():
            await self._save_alert(conn, row)
        await self._finish(conn, head, entries)
        return entries

    async def _lock_head(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> tuple[int, bytes]:
        r = await (
            await conn.execute("SELECT seq, hash FROM alert_journal_head FOR UPDATE")
        ).fetchone()
        assert r is not None  # noqa: S101 - the migration inserts the head row
        return int(r["seq"]), bytes(r["hash"])

    async def _lock_alert(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], ev: ConditionEvent, pack: Pack
    ) -> AlertRow:
        await conn.execute(
            "INSERT INTO alerts (site_id, asset, rule_id, subject, title, state,"
            " condition_active, acked, priority, pack_version, last_change_at)"
            " VALUES (%s, %s, %s, %s, %s, 'normal', false, true, %s, %s, %s)"
            " ON CONFLICT (site_id, rule_id, subject) DO NOTHING",
            (
                ev.site, ev.asset, ev.rule_id, ev.subject, ev.title,
                (ev.priority or Priority.LOW).value, pack.version, to_dt(ev.at_us),
            ),
        )  # fmt: skip
        r = await (
            await conn.execute(
                f"SELECT {_ALERT_COLS} FROM alerts"  # noqa: S608 - constant column list
                " WHERE site_id = %s AND rule_id = %s AND subject = %s FOR UPDATE",
                (ev.site, ev.rule_id, ev.subject),
            )
        ).fetchone()
        assert r is not None  # noqa: S101 - inserted just above
        return _alert_row(r)

    async def _save_alert(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], row: AlertRow
    ) -> None:
        s = row.state
        await conn.execute(
            "UPDATE alerts SET state = %s, condition_active = %s, severity = %s, priority = %s,"
            " latched = %s, acked = %s, suppressed = %s, out_of_service = %s,"
            " shelved_until = %s, shelve_reason = %s, activations = %s, value = %s,"
            " limit_value = %s, escalated_by = %s, pack_version = %s, first_active_at = %s,"
            " last_change_at = %s, engine_mark_us = %s, engine_mark_ord = %s WHERE id = %s",
            (
                s.state.value, s.condition_active, s.severity.value if s.severity else None,
                s.priority.value, s.latched, s.acked, s.suppressed, s.out_of_service,
                to_dt(s.shelved_until_us) if s.shelved_until_us is not None else None,
                s.shelve_reason, s.activations, _finite(row.value), _finite(row.limit),
                list(row.escalated_by), row.pack_version,
                to_dt(row.first_active_us) if row.first_active_us is not None else None,
                to_dt(s.last_change_us), row.engine_mark[0], row.engine_mark[1], row.id,
            ),
        )  # fmt: skip

    async def _journal(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        head: tuple[int, bytes],
        row: AlertRow,
        tr: lifecycle.Transition,
        *,
        actor: str,
        action: str,
        at_us: int,
        value: float | None,
        limit: float | None,
        reason: str,
        severity: Severity | None,
        pack_name: str,
        pack_version: str,
        detail: dict[str, Any],
        entries: list[dict[str, Any]],
    ) -> tuple[int, bytes]:
        seq, prev = head[0] + 1, head[1]
        entry: dict[str, Any] = {
            "seq": seq,
            "at_us": at_us,
            "alert_id": row.id,
            "site_id": row.site_id,
            "asset": row.asset,
            "rule_id": row.rule_id,
            "subject": row.subject,
            "actor": actor,
            "action": action,
            "from_state": tr.before.state.value,
            "to_state": tr.after.state.value,
            "severity": (severity or tr.after.severity or tr.before.severity or None)
            and (severity or tr.after.severity or tr.before.severity).value,  # type: ignore[union-attr]
            "priority": tr.after.priority.value,
            "value": _finite(value),
            "limit": _finite(limit),
            "reason": reason,
            "pack_name": pack_name,
            "pack_version": pack_version,
            "detail": detail,
        }
        h = journal.entry_hash(prev, entry)
        await conn.execute(
            "INSERT INTO alert_journal (seq, at, alert_id, site_id, asset, rule_id, subject,"
            " actor, action, from_state, to_state, severity, priority, value, limit_value,"
            " reason, pack_name, pack_version, detail, prev_hash, hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s)",
            (
                seq, to_dt(at_us), row.id, row.site_id, row.asset, row.rule_id, row.subject,
                actor, action, entry["from_state"], entry["to_state"], entry["severity"],
                entry["priority"], entry["value"], entry["limit"], reason, pack_name,
                pack_version, Jsonb(detail), prev, h,
            ),
        )  # fmt: skip
        entry["hash"] = h
        entries.append(entry)
        return seq, h

    async def _finish(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        head: tuple[int, bytes],
        entries: list[dict[str, Any]],
    ) -> None:
        if not entries:
            return
        await conn.execute("UPDATE alert_journal_head SET seq = %s, hash = %s", (head[0], head[1]))
        if self._webhooks:
            async with conn.cursor() as cur:
                await enqueue(cur, self._webhooks, [_public(e) for e in entries])
        for e in entries:
            payload = {
                k: e[k]
                for k in ("seq", "alert_id", "site_id", "asset", "rule_id", "subject", "action")
            }
            payload["to_state"] = e["to_state"]
            payload["at"] = to_dt(e["at_us"]).isoformat()
            await conn.execute(
                "SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, orjson.dumps(payload).decode())
            )

    # -- operator actions -----------------------------------------------------------------

    async def act(
        self, alert_id: int, event: lifecycle.Event, *, max_shelve_s: float = 86_400
    ) -> dict[str, Any]:
        """Apply an operator action to an alert and journal it; returns the journal entry.

        Raises ActionError when there is no such alert or the action is not allowed now."""
        async with self._guard() as conn, conn.transaction():
            head = await self._lock_head(conn)
            r = await (
                await conn.execute(
                    f"SELECT {_ALERT_COLS} FROM alerts WHERE id = %s FOR UPDATE",  # noqa: S608
                    (alert_id,),
                )
            ).fetchone()
            if r is None:
                raise ActionError(f"there is no alert {alert_id}")
            row = _alert_row(r)
            try:
                tr = lifecycle.apply(row.state, event, max_shelve_s=max_shelve_s)
            except lifecycle.LifecycleError as exc:
                raise ActionError(f"alert {alert_id}: {exc}") from exc
            row = replace(row, state=tr.after)
            entries: list[dict[str, Any]] = []
            detail: dict[str, Any] = {"note": tr.note} if tr.note else {}
            if isinstance(event, lifecycle.Shelve):
                detail["until"] = to_dt(event.until_us).isoformat()
            if isinstance(event, lifecycle.RemoveFromService):
                detail["authorised_by"] = event.authorised_by
            head = await self._journal(
                conn, head, row, tr, actor=event.actor, action=action_name(event),
                at_us=event.at_us, value=None, limit=None, reason=_reason(event),
                severity=None, pack_name="", pack_version=row.pack_version, detail=detail,
                entries=entries,
            )  # fmt: skip
            await self._save_alert(conn, row)
            await self._finish(conn, head, entries)
        return entries[0]

    async def expire_shelves(self, now_us: int) -> int:
        """Unshelve every alert whose shelve expired by now; returns how many."""
        async with self._guard() as conn:
            ids = [
                r["id"]
                for r in await (
                    await conn.execute(
                        "SELECT id FROM alerts WHERE state = 'shelved' AND shelved_until <= %s",
                        (to_dt(now_us),),
                    )
                ).fetchall()
            ]
        n = 0
        for alert_id in ids:
            try:
                await self.act(alert_id, lifecycle.ShelveExpired(at_us=now_us))
                n += 1
            except ActionError:
                continue  # unshelved by an operator meanwhile
        return n

    async def alerts(self, *, site: str | None = None, active_only: bool = False) -> list[AlertRow]:
        """Alerts, most urgent first (priority, then unacknowledged, then oldest)."""
        q = (
            f"SELECT {_ALERT_COLS} FROM alerts"  # noqa: S608 - constant column list
            " WHERE (%(site)s::text IS NULL OR site_id = %(site)s)"
            " AND (NOT %(active)s OR state <> 'normal')"
            " ORDER BY array_position(ARRAY['urgent','high','medium','low'], priority),"
            " acked, last_change_at, id"
        )
        async with self._guard() as conn:
            rows = await (await conn.execute(q, {"site": site, "active": active_only})).fetchall()
        return [_alert_row(r) for r in rows]

    async def find_alert(self, subject: Subject) -> AlertRow | None:
        """The alert of this (site, rule, subject), or None."""
        async with self._guard() as conn:
            r = await (
                await conn.execute(
                    f"SELECT {_ALERT_COLS} FROM alerts"  # noqa: S608 - constant column list
                    " WHERE site_id = %s AND rule_id = %s AND subject = %s",
                    (subject.site_id, subject.rule_id, subject.subject),
                )
            ).fetchone()
        return _alert_row(r) if r else None

    async def journal_rows(
        self, *, alert_id: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Journal entries in seq order (of one alert, when given), with at_us."""
        q = sql.SQL(
            "SELECT seq, at, alert_id, site_id, asset, rule_id, subject, actor, action,"
            " from_state, to_state, severity, priority, value, limit_value AS limit, reason,"
            " pack_name, pack_version, detail, prev_hash, hash FROM alert_journal"
            " WHERE (%(alert)s::bigint IS NULL OR alert_id = %(alert)s) ORDER BY seq"
            " {}"
        ).format(sql.SQL("LIMIT {}").format(sql.Literal(limit)) if limit else sql.SQL(""))
        async with self._guard() as conn:
            rows = await (await conn.execute(q, {"alert": alert_id})).fetchall()
        for r in rows:
            r["at_us"] = to_us(r.pop("at"))
        return rows

    async def verify_journal(self) -> journal.Verification:
        """Recompute the whole hash chain and compare with the head; the hashing runs in a
        worker thread, so a long journal does not stall the event loop (the API's)."""
        rows = await self.journal_rows()
        async with self._guard() as conn:
            h = await (await conn.execute("SELECT seq, hash FROM alert_journal_head")).fetchone()
        head = (int(h["seq"]), bytes(h["hash"])) if h else None
        return await asyncio.to_thread(journal.verify, rows, head=head)

    # -- the facility record (minimal) -----------------------------------------------------

    async def open_permit(
        self,
        *,
        site: str,
        asset: str,
        areas: Iterable[str],
        opened_us: int,
        closed_us: int | None,
        issued_by: str,
        description: str = "",
    ) -> int:
        """Record a hot-work permit; returns its id."""
        async with self._guard() as conn:
            r = await (
                await conn.execute(
                    "INSERT INTO permits (site_id, asset, areas, opened_at, closed_at,"
                    " issued_by, description) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        site,
                        asset,
                        list(areas),
                        to_dt(opened_us),
                        to_dt(closed_us) if closed_us is not None else None,
                        issued_by,
                        description,
                    ),
                )
            ).fetchone()
        assert r is not None  # noqa: S101 - RETURNING gives a row
        return int(r["id"])

    async def close_permit(self, permit_id: int, closed_us: int) -> None:
        """Close an open permit at the given time."""
        async with self._guard() as conn:
            cur = await conn.execute(
                "UPDATE permits SET closed_at = %s WHERE id = %s AND closed_at IS NULL",
                (to_dt(closed_us), permit_id),
            )
            if cur.rowcount != 1:
                raise ActionError(f"permit {permit_id} does not exist or is already closed")

    async def add_finding(
        self, *, site: str, asset: str, opened_us: int, description: str, agency: str = ""
    ) -> int:
        """Record an open inspection finding on an asset; returns its id."""
        async with self._guard() as conn:
            r = await (
                await conn.execute(
                    "INSERT INTO findings (site_id, asset, opened_at, agency, description)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (site, asset, to_dt(opened_us), agency, description),
                )
            ).fetchone()
        assert r is not None  # noqa: S101 - RETURNING gives a row
        return int(r["id"])

    async def record_report(
        self, *, site: str, period: str, due_us: int, submitted_us: int | None
    ) -> None:
        """Record a periodic report's due date and (when given) its submission."""
        async with self._guard() as conn:
            await conn.execute(
                "INSERT INTO periodic_reports (site_id, period, due_at, submitted_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (site_id, period) DO UPDATE"
                " SET due_at = excluded.due_at, submitted_at = excluded.submitted_at",
                (
                    site, period, to_dt(due_us),
                    to_dt(submitted_us) if submitted_us is not None else None,
                ),
            )  # fmt: skip

    async def set_identity(self, *, site: str, company: str, iui_number: str, estate: str) -> None:
        """Set the facility's identity (company, IUI licence number, industrial estate)."""
        async with self._guard() as conn:
            await conn.execute(
                "INSERT INTO facilities (site_id, company, iui_number, estate)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (site_id) DO UPDATE"
                " SET company = excluded.company, iui_number = excluded.iui_number,"
                " estate = excluded.estate, updated_at = now()",
                (site, company, iui_number, estate),
            )

    async def set_smk3_expiry(self, site: str, expires_on: date) -> None:
        """Set the site's SMK3 certificate expiry date (valid through that day)."""
        async with self._guard() as conn:
            await conn.execute(
                "INSERT INTO facilities (site_id, smk3_expires_on) VALUES (%s, %s)"
                " ON CONFLICT (site_id) DO UPDATE SET smk3_expires_on = excluded.smk3_expires_on,"
                " updated_at = now()",
                (site, expires_on),
            )


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _reason(event: lifecycle.Event) -> str:
    for attr in ("reason", "comment", "text"):
        v = getattr(event, attr, None)
        if isinstance(v, str) and v:
            return v
    return ""


def _public(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k not in ("hash", "at_us", "pack_name", "detail")}
    out["at"] = to_dt(entry["at_us"]).isoformat()
    out["hash"] = bytes(entry["hash"]).hex()
    return out


def _columns(
    rows: Sequence[tuple[Any, ...]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    ts = np.fromiter((to_us(r[1]) for r in rows), dtype=np.int64, count=len(rows))
    vals = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    qual = np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows))
    return keys, ts, vals, qual
