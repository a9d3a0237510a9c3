"""The PostgreSQL adapter against the real TimescaleDB."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ingest.batch import Batch, StatusRecord
from ingest.store import ReadingStore, StoreRejectedError
from tests.fix_ingest import make_site, register, unique_site

NOW_US = 1_795_000_000_000_000


def batch_with(keys: list[int], ts_us: list[int], values: list[float]) -> Batch:
    b = Batch(started_mono_s=0.0)
    b.sensor_keys, b.ts_us, b.values, b.qualities = keys, ts_us, values, [0] * len(keys)
    return b


@pytest.mark.asyncio
async def test_batch_with_duplicates_stores_each_key_once_and_first_value_wins(
    database_url: str, db_schema: str, db: psycopg.Connection[Any]
) -> None:
    """A batch repeating stored keys and itself inserts only the new rows, keeping first values."""
    register(database_url, db_schema, make_site(unique_site(), gateways=1, sensors=2))
    store = ReadingStore(database_url=database_url, schema=db_schema)
    try:
        assert await store.commit_batch(batch_with([1, 2], [NOW_US, NOW_US], [1.0, 2.0])) == 2
        again = batch_with(
            [1, 2, 2, 1], [NOW_US, NOW_US + 1, NOW_US + 1, NOW_US + 2], [9.0, 3.0, 8.0, 4.0]
        )
        assert await store.commit_batch(again) == 2
    finally:
        await store.close()
    rows = db.execute("SELECT sensor_key, value FROM readings ORDER BY sensor_key, ts").fetchall()
    assert rows == [(1, 1.0), (1, 4.0), (2, 2.0), (2, 3.0)]


@pytest.mark.asyncio
async def test_data_the_database_cannot_hold_is_reported_as_refused(
    database_url: str, db_schema: str
) -> None:
    """Rows PostgreSQL refuses (a time past its range) raise StoreRejectedError, not a retry."""
    store = ReadingStore(database_url=database_url, schema=db_schema)
    b = Batch(started_mono_s=0.0)
    b.statuses.append(StatusRecord(NOW_US, "s", "g", True, 10**19))
    try:
        with pytest.raises(StoreRejectedError):
            await store.commit_batch(b)
        # the connection is replaced and usable afterwards
        assert await store.commit_batch(batch_with([], [], [])) == 0
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_an_older_status_committed_later_does_not_overwrite_a_newer_one(
    database_url: str, db_schema: str, db: psycopg.Connection[Any]
) -> None:
    """Two writers may commit out of order: gateway state keeps the status received last."""
    store = ReadingStore(database_url=database_url, schema=db_schema)
    newer, older = Batch(started_mono_s=0.0), Batch(started_mono_s=0.0)
    newer.statuses.append(StatusRecord(NOW_US + 2, "s", "g", False, NOW_US))
    older.statuses.append(StatusRecord(NOW_US + 1, "s", "g", True, NOW_US))
    try:
        await store.commit_batch(newer)
        await store.commit_batch(older)
    finally:
        await store.close()
    assert db.execute("SELECT online FROM gateway_state").fetchall() == [(False,)]
