"""The spool: one gateway's store-and-forward buffer on disk (SQLite, WAL mode).

Owns the messages a gateway could not hand to the broker — kept as encoded (topic, payload,
seq), so their timestamps and bytes are exactly what was first built — and the gateway's next
message sequence number, so `seq` keeps increasing across process restarts. Messages are read
back in seq order and deleted only once the broker acknowledged them; whatever is left at exit
is backfilled at the next start.

It must not know MQTT, the plant or the clock. One Spool is used from one thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SEQ_BLOCK: Final = 1000  # seq numbers reserved per write of the high-water mark

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS message (
    seq      INTEGER PRIMARY KEY,
    topic    TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    readings INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class SpoolError(OSError):
    """Raised when the spool database cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """One stored message."""

    seq: int
    topic: str
    payload: bytes
    readings: int


class Spool:
    """A gateway's on-disk message buffer and its persisted sequence counter."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL survives a process crash; only a power cut may lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
            stored = int(row[0]) if row else 0
            top = self._db.execute("SELECT MAX(seq) FROM message").fetchone()[0]
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc
        self._next_seq = max(stored, (top + 1) if top is not None else 0)
        self._reserved = self._next_seq

    # -- sequence numbers -------------------------------------------------------------------

    def take_seq(self) -> int:
        """Return the next message seq; seqs never repeat, even across restarts."""
        if self._next_seq >= self._reserved:
            self._reserved = self._next_seq + SEQ_BLOCK
            self._write_meta("next_seq", self._reserved)
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _write_meta(self, key: str, value: int) -> None:
        try:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc

    # -- messages ---------------------------------------------------------------------------

    def append(self, messages: Iterable[SpooledMessage]) -> int:
        """Store messages (in one transaction); return how many were stored."""
        rows = [(m.seq, m.topic, m.payload, m.readings) for m in messages]
        if not rows:
            return 0
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO message (seq, topic, payload, readings) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc
        self._next_seq = max(self._next_seq, max(r[0] for r in rows) + 1)
        return len(rows)

    def read(self, after_seq: int = -1, limit: int = 1000) -> list[SpooledMessage]:
        """Up to `limit` stored messages with seq > after_seq, in seq order."""
        try:
            rows = self._db.execute(
                "SELECT seq, topic, payload, readings FROM message WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc
        return [SpooledMessage(int(s), str(t), bytes(p), int(r)) for s, t, p, r in rows]

    def delete(self, seqs: Iterable[int]) -> None:
        """Forget acknowledged messages."""
        rows = [(s,) for s in seqs]
        if not rows:
            return
        try:
            with self._transaction():
                self._db.executemany("DELETE FROM message WHERE seq = ?", rows)
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc

    def counts(self) -> tuple[int, int]:
        """(messages, readings) currently stored."""
        try:
            n, r = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(readings), 0) FROM message"
            ).fetchone()
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from exc
        return int(n), int(r)

    def close(self) -> None:
        """Persist the exact next seq and close the database."""
        self._write_meta("next_seq", self._next_seq)
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN … COMMIT, ROLLBACK on error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
