"""Versioned schema migrations: `NNNN_name.sql` files applied in order, each once.

Owns the `schema_migrations` table. Each migration runs in its own transaction under an
advisory lock, so two `tungku db migrate` runs at once are safe, and a second run is a no-op.
A migration that was applied and then edited is reported, never re-run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x74756E676B75  # "tungku"


class MigrationError(RuntimeError):
    """Raised when the schema cannot be brought to the current version."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql_text: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text."""
        return hashlib.sha256(self.sql_text.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found = []
    for entry in resources.files("ingest").joinpath("migrations").iterdir():
        m = _NAME_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def session_sql(schema: str) -> sql.Composed:
    """Statement that points a session at the service's schema."""
    return sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema))


def migrate(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> list[Migration]:
    """Apply pending migrations; return those applied. `conn` must be in autocommit mode."""
    applied_now: list[Migration] = []
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(session_sql(schema))
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            int(str(v)): str(c)
            for v, c in conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
        }
        for mig in available_migrations():
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.version:04d}_{mig.name} was changed after it was applied"
                    )
                continue
            with conn.transaction():
                conn.execute(mig.sql_text.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (mig.version, mig.name, mig.checksum),
                )
            applied_now.append(mig)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def schema_version(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> int:
    """Highest applied migration, 0 for an empty schema."""
    conn.execute(session_sql(schema))
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(str(row[0])) if row else 0
