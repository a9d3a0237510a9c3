"""Alerting inside the ingest process: the engine on committed batches, in commit order.

Owns the evaluator's life: loading the pack, the sensors and the facility record; resuming
from the engine's checkpoint and catching up on readings committed after it (so a restart
resumes with the same windows, the 8-hour TWA included, and a crash between commit and
evaluation loses nothing); evaluating each committed batch off the event loop; committing the
resulting transitions together with the new checkpoint, retried while the database is away;
and the housekeeping around it (registry and permit refresh, shelve expiry).

Exactly once: the engine skips readings at or before each sensor's last evaluated one, and
its checkpoint is saved in the same transaction as the journal entries it produced. After a
crash the engine restarts from the checkpoint and re-evaluates exactly the readings after it,
deriving the same transitions the journal is missing and none it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from alerting.engine import ConditionEvent, Engine, EngineError
from alerting.pack import Pack, default_pack_path, load_pack
from alerting.store import AlertStore, AlertStoreError, AlertStoreUnavailableError

log = structlog.get_logger("tungku.alerting")

_CHECKPOINT_EVERY_S = 5.0
_REFRESH_EVERY_S = 2.0


@dataclass(slots=True)
class Committed:
    """What the evaluator needs of a committed batch."""

    keys: npt.ArrayLike
    ts_us: npt.ArrayLike
    values: npt.ArrayLike
    qualities: npt.ArrayLike
    statuses: list[tuple[str, str, bool, int]] = field(default_factory=list)


def scope_of(sites: tuple[str, ...]) -> str:
    """The checkpoint scope of a process: the sites it owns, or every site."""
    return ",".join(sorted(sites)) if sites else "*"


def read_pack(path: str) -> tuple[Pack, str]:
    """The pack at path (the shipped default when empty) and its text."""
    p = Path(path) if path else default_pack_path()
    return load_pack(p), p.read_text("utf-8")


class Evaluator:
    """Runs one rule pack over the committed readings of one ingest process."""

    def __init__(
        self, *, store: AlertStore, pack: Pack, pack_body: str, sites: tuple[str, ...]
    ) -> None:
        self._store = store
        self._pack = pack
        self._body = pack_body
        self._sites = sites
        self._scope = scope_of(sites)
        self._engine: Engine | None = None
        self._last_checkpoint = 0.0
        self.events = 0
        self.readings = 0

    @property
    def engine(self) -> Engine:
        """The running engine (after `start`)."""
        assert self._engine is not None  # noqa: S101 - start() comes first
        return self._engine

    async def start(self) -> None:
        """Build the engine, resume from the checkpoint and catch up; retries the database."""
        delay = 0.5
        while True:
            try:
                await self._start()
            except AlertStoreUnavailableError as exc:
                log.warning("alerting waits for the database", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                delay = min(delay * 2, 10.0)
            else:
                return

    async def _start(self) -> None:
        await self._store.register_pack(self._pack, self._body)
        sensors = await self._store.sensors(self._sites)
        engine = Engine(self._pack, sensors, await self._store.compliance())
        saved = await self._store.checkpoint(self._scope)
        resumed = False
        if saved is not None:
            sha, blob = saved
            if sha == self._pack.sha256:
                try:
                    engine.load_state(blob)
                    resumed = True
                except EngineError as exc:
                    log.warning("engine checkpoint not restored; starting fresh", error=str(exc))
            else:
                log.info("rule pack changed since the checkpoint; starting its state fresh")
        self._engine = engine
        caught_up = 0
        if resumed:
            marks = engine.watermarks()
            if marks:
                floor = min(marks.values())
                for s in sensors:
                    marks.setdefault(s.key, floor)
                async for keys, ts, vals, qual in self._store.readings_after(marks):
                    await self._evaluate(Committed(keys, ts, vals, qual), force_save=False)
                    caught_up += int(np.size(keys))
        await self._commit([], force=True)
        log.info(
            "alerting started",
            pack=self._pack.name,
            version=self._pack.version,
            sensors=len(sensors),
            resumed=resumed,
            caught_up=caught_up,
        )

    async def evaluate(self, batch: Committed) -> int:
        """Evaluate one committed batch and commit its transitions; returns the events."""
        return await self._evaluate(batch, force_save=False)

    async def _evaluate(self, batch: Committed, *, force_save: bool) -> int:
        engine = self.engine
        events = await asyncio.to_thread(
            engine.process,
            np.asarray(batch.keys, dtype=np.int64),
            np.asarray(batch.ts_us, dtype=np.int64),
            np.asarray(batch.values, dtype=np.float64),
            np.asarray(batch.qualities, dtype=np.int64),
            statuses=batch.statuses,
        )
        self.readings += int(np.size(batch.keys))
        await self._commit(events, force=force_save)
        return len(events)

    async def _commit(self, events: list[ConditionEvent], *, force: bool) -> None:
        now = time.monotonic()
        due = force or now - self._last_checkpoint >= _CHECKPOINT_EVERY_S
        if not events and not due:
            return
        state = await asyncio.to_thread(self.engine.dump_state)
        delay = 0.2
        while True:
            try:
                await self._store.apply(events, pack=self._pack, scope=self._scope, state=state)
                break
            except AlertStoreUnavailableError as exc:
                log.warning("alert commit failed, will retry", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                delay = min(delay * 2, 10.0)
        self._last_checkpoint = now
        self.events += len(events)
        for e in events:
            log.info(
                "alert",
                site=e.site,
                rule=e.rule_id,
                subject=e.subject,
                change=e.kind.value,
                severity=e.severity.value if e.severity else None,
                value=e.value,
            )

    async def refresh(self) -> None:
        """Pick up new sensors and facility-record changes (permits, findings)."""
        try:
            sensors = await self._store.sensors(self._sites)
            compliance = await self._store.compliance()
        except AlertStoreError as exc:
            log.debug("alerting refresh skipped", error=str(exc))
            return
        self.engine.set_sensors(sensors)
        self.engine.set_compliance(compliance)

    async def housekeep(self, stop: asyncio.Event) -> None:
        """Refresh the facility record and expire shelves until stopped."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _REFRESH_EVERY_S)
            await self.refresh()
            try:
                n = await self._store.expire_shelves(time.time_ns() // 1000)
                if n:
                    log.info("shelves expired", alerts=n)
            except AlertStoreError as exc:
                log.debug("shelve expiry skipped", error=str(exc))

    async def close(self) -> None:
        """Save a final checkpoint (best effort) and close."""
        if self._engine is not None:
            try:
                state = self._engine.dump_state()
                await self._store.apply([], pack=self._pack, scope=self._scope, state=state)
            except AlertStoreError as exc:
                log.warning("final engine checkpoint not saved", error=str(exc))
        await self._store.close()
