"""The record history: every change made through the API, append-only and hash-chained.

Owns what a history entry's hash covers and how the chain is checked, like the alert journal
(`alerting.journal`): each entry's hash is sha256(previous hash || canonical entry), the
canonical entry being its fields as sorted-key JSON with times in integer microseconds.
`before` and `after` are hashed as PostgreSQL's jsonb gives them back (numbers normalised), so
a verification that reads them again computes the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import orjson
import psycopg
import psycopg.rows
from psycopg.rows import tuple_row

from alerting import journal
from alerting.journal import Verification
from alerting.store import to_dt, to_us

FIELDS: Final = (
    "seq",
    "at_us",
    "actor",
    "site_id",
    "entity",
    "entity_id",
    "action",
    "before",
    "after",
)


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers."""
    return orjson.dumps({f: entry.get(f) for f in FIELDS}, option=orjson.OPT_SORT_KEYS)


def entry_hash(prev: bytes, entry: Mapping[str, Any]) -> bytes:
    """The hash of an entry that follows the entry whose hash is prev."""
    return hashlib.sha256(prev + canonical(entry)).digest()


async def append(
    conn: psycopg.AsyncConnection[Any],
    *,
    at: datetime,
    actor: str,
    site_id: str,
    entity: str,
    entity_id: str,
    action: str,
    before: Any,
    after: Any,
) -> int:
    """Append one entry inside the caller's transaction; returns its seq.

    Locks the chain's head, so entries get contiguous seq numbers whoever appends."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(
        "SELECT seq, hash, %s::jsonb AS before, %s::jsonb AS after"
        " FROM record_history_head FOR UPDATE",
        (_json(before), _json(after)),
    )
    head = await cur.fetchone()
    assert head is not None  # noqa: S101 - the migration inserts the head row
    seq, prev, before_n, after_n = int(head[0]) + 1, bytes(head[1]), head[2], head[3]
    entry = {
        "seq": seq,
        "at_us": to_us(at),
        "actor": actor,
        "site_id": site_id,
        "entity": entity,
        "entity_id": entity_id,
        "action": action,
        "before": before_n,
        "after": after_n,
    }
    h = entry_hash(prev, entry)
    await cur.execute(
        "INSERT INTO record_history (seq, at, actor, site_id, entity, entity_id, action, before,"
        " after, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s,"
        " %s)",
        (seq, at, actor, site_id, entity, entity_id, action, _json(before), _json(after), prev, h),
    )
    await cur.execute("UPDATE record_history_head SET seq = %s, hash = %s", (seq, h))
    return seq


def verify(rows: Iterable[Mapping[str, Any]], head: tuple[int, bytes] | None) -> Verification:
    """Check the history read in seq order (rows with FIELDS, prev_hash and hash): the alert
    journal's checker with this chain's hash."""
    return journal.verify(rows, head=head, hasher=entry_hash, noun="change", chain="history")


async def read(
    conn: psycopg.AsyncConnection[Any],
    *,
    site: str | None = None,
    entity: str | None = None,
    entity_id: str | None = None,
) -> list[dict[str, Any]]:
    """History rows (with at_us) in seq order: all, or those of a site, entity or entry."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    await cur.execute(
        "SELECT seq, at, actor, site_id, entity, entity_id, action, before, after, prev_hash,"
        " hash FROM record_history WHERE (%(s)s::text IS NULL OR site_id = %(s)s)"
        " AND (%(e)s::text IS NULL OR entity = %(e)s)"
        " AND (%(i)s::text IS NULL OR entity_id = %(i)s) ORDER BY seq",
        {"s": site, "e": entity, "i": entity_id},
    )
    rows = await cur.fetchall()
    for r in rows:
        r["at_us"] = to_us(r["at"])
    return rows


async def verify_all(conn: psycopg.AsyncConnection[Any]) -> Verification:
    """Recompute the whole history chain and compare with its head; the hashing runs in a
    worker thread, off the event loop."""
    rows = await read(conn)
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute("SELECT seq, hash FROM record_history_head")
    h = await cur.fetchone()
    return await asyncio.to_thread(verify, rows, (int(h[0]), bytes(h[1])) if h else None)


def _json(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v, default=_default).decode()


def _default(v: Any) -> Any:
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


__all__ = ["append", "canonical", "entry_hash", "read", "to_dt", "verify", "verify_all"]
