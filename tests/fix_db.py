"""Database fixtures: a real TimescaleDB, one fresh schema per test.

The server is named by TUNGKU_TEST_DATABASE_URL (default: the local PostgreSQL, database
tungku_test). A server that cannot be reached fails the run; it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ingest.migrate import migrate, session_sql

ADMIN_URL = os.environ.get("TUNGKU_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_DB = os.environ.get("TUNGKU_TEST_DB_NAME", "tungku_test")
TEST_URL = os.environ.get(
    "TUNGKU_TEST_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/{TEST_DB}"
)


@pytest.fixture(scope="session")
def database_url() -> str:
    """URL of the test database, created with the TimescaleDB extension if missing."""
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (TEST_DB,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEST_DB)))
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_URL}: {exc}")
    with psycopg.connect(TEST_URL, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
    return TEST_URL


@pytest.fixture
def db_schema(database_url: str) -> Iterator[str]:
    """A freshly migrated schema of its own for one test, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn, schema)
    yield schema
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def db(database_url: str, db_schema: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection whose search_path is the test's schema."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(session_sql(db_schema))
        yield conn
