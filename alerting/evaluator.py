"""Alerting inside the ingest process: the engine on committed batches, in commit order.

Owns the evaluator's life: loading the pack, the sensors and the facility record; resuming
from the engine's checkpoint and catching up on readings committed after it (so a restart
resumes with the same windows, the 8-hour TWA included, and a crash between commit and
evaluation loses nothing); evaluating each committed batch off the event loop; committing the
resulting transitions together with the new checkpoint, retried while the database is away;
and the housekeeping around it (registry and permit refresh, shelve expiry). A batch's safety
transitions are committed before the anomaly detector scores it; its advisories follow in a
commit of their own.

Exactly once: the engine skips readings at or before each sensor's last evaluated one; its
checkpoint is saved every 30 s, on a connection of its own.
After a crash the engine restarts from the checkpoint and re-evaluates exactly the readings
after it, deriving again the transitions since then; each alert remembers the last engine
event applied to it, so those already journaled are skipped and the missing ones applied.

Rule pack changes: the pack file is checked every few seconds. A pack with any problem is
refused (logged with every problem, counted in `pack_refusals`) and the running one stays in
force; so does the running one while a new pack's effective date is still in the future.
A valid pack in force replaces the running one: its engine is rebuilt from the last
`REBUILD_S` of stored readings (so its windows, the 8-hour TWA included, are full), and the
alerts are reconciled with what it finds true now — conditions the new pack no longer sees
are cleared, new ones raised — each journaled with the new pack's version. The same happens
at start when the checkpoint belongs to another pack.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from alerting.engine import ConditionEvent, Engine, EngineError, EventKind, SensorInfo
from alerting.pack import Pack, PackError, Priority, default_pack_path, load_pack, parse_pack
from alerting.store import AlertStore, AlertStoreError, AlertStoreUnavailableError

log = structlog.get_logger("tungku.alerting")

#: Pickling the state (2-5 MB) holds the worker ~40-80 ms; every 5 s it showed in the alert
#: latency p99 (373 ms), every 30 s it does not (171 ms). Marks keep restarts exact either way.
_CHECKPOINT_EVERY_S = 30.0
_REFRESH_EVERY_S = 2.0
#: History replayed into a new pack's engine: the longest window (8-h TWA) and a margin.
REBUILD_S = 8 * 3600 + 600
#: Readings the anomaly detector may fall behind the safety rules while batches wait.
_MAX_PENDING = 100_000


@dataclass(slots=True)
class Committed:
    """What the evaluator needs of a committed batch."""

    keys: npt.ArrayLike
    ts_us: npt.ArrayLike
    values: npt.ArrayLike
    qualities: npt.ArrayLike
    statuses: list[tuple[str, str, bool, int]] = field(default_factory=list)
    #: Batches were not handed over (the worker was behind): evaluate what the database holds
    #: after the engine's watermarks first. Carries the dropped batches' status changes.
    catch_up: bool = False
    #: With catch_up: per sensor key, the latest reading time of the dropped batches. The
    #: catch-up reads up to these only: with two ingest writers a later batch can be
    #: committed before an earlier one, and reading past the dropped ones would make the
    #: earlier batch, handed over next, look like a redelivery.
    upto: dict[int, int] | None = None

    def add_upto(self, keys: npt.ArrayLike, ts_us: npt.ArrayLike) -> None:
        """Widen `upto` by a dropped batch's readings."""
        k = np.asarray(keys, dtype=np.int64)
        if not k.size:
            return
        t = np.asarray(ts_us, dtype=np.int64)
        order = np.lexsort((t, k))
        k, t = k[order], t[order]
        last = np.append(np.flatnonzero(k[1:] != k[:-1]), k.size - 1)
        upto = self.upto if self.upto is not None else {}
        for key, ts in zip(k[last].tolist(), t[last].tolist(), strict=True):
            if ts > upto.get(key, -1):
                upto[key] = ts
        self.upto = upto


def merge_committed(batches: list[Committed]) -> Committed:
    """Several committed batches as one, in commit order (the engine sorts by time)."""
    upto: dict[int, int] | None = None
    for b in batches:
        if b.catch_up:
            upto = upto if upto is not None else {}
            for key, ts in (b.upto or {}).items():
                upto[key] = max(ts, upto.get(key, -1))
    return Committed(
        np.concatenate([np.asarray(b.keys, dtype=np.int64) for b in batches]),
        np.concatenate([np.asarray(b.ts_us, dtype=np.int64) for b in batches]),
        np.concatenate([np.asarray(b.values, dtype=np.float64) for b in batches]),
        np.concatenate([np.asarray(b.qualities, dtype=np.int64) for b in batches]),
        [st for b in batches for st in b.statuses],
        catch_up=any(b.catch_up for b in batches),
        upto=upto,
    )


def scope_of(sites: tuple[str, ...]) -> str:
    """The checkpoint scope of a process: the sites it owns, or every site."""
    return ",".join(sorted(sites)) if sites else "*"


def pack_path(path: str) -> Path:
    """The pack file a setting names (the shipped default when empty)."""
    return Path(path) if path else default_pack_path()


def read_pack(path: str) -> tuple[Pack, str]:
    """The pack at path (the shipped default when empty) and its text."""
    p = pack_path(path)
    return load_pack(p), p.read_text("utf-8")


def now_utc() -> datetime:
    """The wall clock, for judging a pack's effective date (never for rules)."""
    return datetime.now(UTC)


class Evaluator:
    """Runs one rule pack over the committed readings of one ingest process."""

    def __init__(
        self,
        *,
        store: AlertStore,
        pack: Pack,
        pack_body: str,
        sites: tuple[str, ...],
        pack_file: Path | None = None,
    ) -> None:
        self._store = store
        self._pack = pack
        self._body = pack_body
        self._pack_file = pack_file
        self._refused: set[str] = set()  # sha256 of pack files already refused
        self._lock = asyncio.Lock()  # one engine operation at a time
        self._ckpt = store.sibling()  # checkpoints go on a connection of their own
        self._saving: asyncio.Task[None] | None = None
        self.pack_refusals = 0
        self._sites = sites
        self._scope = scope_of(sites)
        self._engine: Engine | None = None
        self._last_checkpoint = 0.0
        self.events = 0
        self.readings = 0

    @property
    def backlog(self) -> int:
        """Batches waiting inside the evaluator (none: it evaluates as it is called)."""
        return 0

    @property
    def engine(self) -> Engine:
        """The running engine (after `start`)."""
        assert self._engine is not None  # noqa: S101 - start() comes first
        return self._engine

    async def start(self) -> None:
        """Build the engine, resume from the checkpoint and catch up; retries the database."""
        await self._retry(self._start, what="alerting waits for the database", delay=0.5)

    async def _start(self) -> None:
        await self._store.lock_scope(self._scope)
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
                    if engine.detector_note:
                        log.warning(engine.detector_note)
                except EngineError as exc:
                    log.warning("engine checkpoint not restored; rebuilding", error=str(exc))
            if not resumed:
                # Another pack (or an unreadable state): rebuild from stored history up to
                # each sensor's latest reading, and reconcile the alerts with it.
                latest = await self._store.latest_readings([s.key for s in sensors])
                self._engine = engine
                await self._rebuild(
                    engine, {k: (t - REBUILD_S * 1_000_000, t) for k, t in latest.items()}
                )
                await self._reconcile(engine, self._pack, "rule pack changed while stopped")
                log.info("alerting started on a rebuilt engine", pack=self._pack.version)
                return
        self._engine = engine
        caught_up = await self._catch_up(sensors) if resumed else 0
        await self._commit([], force=True)
        log.info(
            "alerting started",
            pack=self._pack.name,
            version=self._pack.version,
            sensors=len(sensors),
            resumed=resumed,
            caught_up=caught_up,
        )

    async def evaluate(self, batch: Committed, *, advise: bool = True) -> int:
        """Evaluate one committed batch and commit its transitions; returns the events.

        `advise` False: more batches are waiting, so the anomaly detector waits too (its
        readings are kept, up to `_MAX_PENDING`) and the next batch's safety rules run first;
        the detector does not depend on how readings are grouped, so nothing changes but
        when the advisories come."""
        async with self._lock:
            if batch.catch_up:
                await self._catch_up(await self._store.sensors(self._sites), upto=batch.upto)
            return await self._evaluate(batch, force_save=False, advise=advise)

    async def _catch_up(
        self, sensors: list[SensorInfo], *, upto: dict[int, int] | None = None
    ) -> int:
        """Evaluate the readings committed after each sensor's last evaluated one (up to
        `upto` per sensor when given: the readings of batches that were not handed over)."""
        marks = self.engine.watermarks()
        # A sensor the engine never evaluated (a checkpoint taken before its first reading,
        # a new sensor): from REBUILD_S before its latest stored reading, so its windows
        # (the 8-h TWA included) are rebuilt from the database.
        unseen = [s.key for s in sensors if s.key not in marks]
        if unseen:
            latest = await self._store.latest_readings(unseen)
            for key, t in latest.items():
                marks[key] = t - REBUILD_S * 1_000_000
        if not marks:
            return 0
        n = 0
        if upto is not None:
            spans = {k: (marks[k], t) for k, t in upto.items() if k in marks and t > marks[k]}
            async for keys, ts, vals, qual in self._store.readings_in(spans):
                await self._evaluate(Committed(keys, ts, vals, qual), force_save=False)
                n += int(np.size(keys))
            return n
        async for keys, ts, vals, qual in self._store.readings_after(marks):
            await self._evaluate(Committed(keys, ts, vals, qual), force_save=False)
            n += int(np.size(keys))
        return n

    async def check_pack(self) -> None:
        """Switch to the pack file's new content when it is valid and in force; otherwise
        keep the running pack and say why (once per file content)."""
        if self._pack_file is None:
            return
        try:
            data = self._pack_file.read_bytes()
        except OSError as exc:
            log.warning("rule pack file unreadable; the running pack stays", error=str(exc))
            return
        sha = hashlib.sha256(data).hexdigest()
        if sha == self._pack.sha256 or sha in self._refused:
            return
        try:
            pack = dataclasses.replace(
                parse_pack(data.decode("utf-8"), str(self._pack_file)), sha256=sha
            )
        except (PackError, UnicodeDecodeError) as exc:
            self._refused.add(sha)
            self.pack_refusals += 1
            problems = exc.problems if isinstance(exc, PackError) else [str(exc)]
            log.error(  # noqa: TRY400 - a refused file, not a crash: no traceback wanted
                "rule pack refused; the running pack stays in force",
                running=self._pack.version,
                problems=problems,
            )
            return
        if pack.effective > now_utc():
            log.info(
                "rule pack not yet in force; the running pack stays",
                version=pack.version,
                effective=pack.effective.isoformat(),
            )
            return
        async with self._lock:
            await self._switch(pack, data.decode("utf-8"))

    async def _switch(self, pack: Pack, body: str) -> None:
        old = self.engine
        # The running pack's advisories for readings it has evaluated, before it goes.
        await self._commit(await self._advise(old), force=False)
        await self._store.register_pack(pack, body)
        sensors = await self._store.sensors(self._sites)
        engine = Engine(pack, sensors, await self._store.compliance())
        marks = old.watermarks()
        await self._rebuild(
            engine, {k: (t - REBUILD_S * 1_000_000, t) for k, t in marks.items()}, learn=False
        )
        # What the detector learnt per sensor does not depend on the rules: it carries over.
        engine.adopt_detector(old)
        previous = self._pack
        self._pack, self._body, self._engine = pack, body, engine
        await self._reconcile(engine, pack, f"rule pack {previous.version} -> {pack.version}")
        log.info("rule pack switched", previous=previous.version, version=pack.version)

    async def _rebuild(
        self, engine: Engine, spans: dict[int, tuple[int, int]], *, learn: bool = True
    ) -> None:
        """Feed an engine stored history silently: its windows fill, nothing is raised.
        `learn`: its anomaly detector learns from the history too (else it is taken over)."""
        n = 0
        async for keys, ts, vals, qual in self._store.readings_in(spans):
            await asyncio.to_thread(engine.process, keys, ts, vals, qual, advise=False)
            if learn:
                await self._advise(engine)  # silently: the events are dropped
            n += int(np.size(keys))
        log.info("engine rebuilt from stored readings", readings=n)

    async def _advise(self, engine: Engine) -> list[ConditionEvent]:
        """The detector's advisories for the readings evaluated so far. A failure drops them,
        logged, and never stops the safety rules (whose events are already committed)."""
        try:
            return await asyncio.to_thread(engine.advise)
        except Exception:  # any detector fault: its advisories are dropped, not the batch
            log.exception("anomaly detector failed; these advisories are dropped")
            return []

    async def _reconcile(self, engine: Engine, pack: Pack, why: str) -> None:
        """Raise what the rebuilt engine finds true and the alerts do not show, clear what
        they show and it does not find; journaled with the pack's version; checkpointed."""
        now = engine.latest_us()
        want = engine.conditions()
        have = await self._store.active_conditions(self._sites)
        events: list[ConditionEvent] = []
        for key, (asset, title, _severity) in sorted(have.items()):
            if key not in want:
                events.append(
                    ConditionEvent(
                        max(now, 0), key[0], asset, key[1], key[2], title, EventKind.CLEAR,
                        reason=f"{why}: not active under the new pack",
                    )
                )  # fmt: skip
        for key, (asset, title, severity, value) in sorted(want.items()):
            if have.get(key, (None, None, None))[2] is not severity:
                rule = pack.rule(key[1])
                lvl = rule.level(severity) if rule else None
                events.append(
                    ConditionEvent(
                        max(now, 0), key[0], asset, key[1], key[2], title, EventKind.ACTIVATE,
                        severity=severity, priority=lvl.priority if lvl else Priority.MEDIUM,
                        latch=lvl.latch if lvl else False, value=value,
                        limit=lvl.level if lvl else None, reason=f"{why}: active under it",
                    )
                )  # fmt: skip
        await self._commit(events, force=True)

    async def _evaluate(self, batch: Committed, *, force_save: bool, advise: bool = True) -> int:
        engine = self.engine
        events = await asyncio.to_thread(
            engine.process,
            np.asarray(batch.keys, dtype=np.int64),
            np.asarray(batch.ts_us, dtype=np.int64),
            np.asarray(batch.values, dtype=np.float64),
            np.asarray(batch.qualities, dtype=np.int64),
            statuses=batch.statuses,
            advise=False,
        )
        self.readings += int(np.size(batch.keys))  # evaluated: counted once committed below
        await self._commit(events, force=force_save)
        # Advisories after the safety transitions are committed: the detector never delays a
        # safety alarm. A detector failure drops this batch's advisories, never the batch.
        if not advise and engine.pending_readings < _MAX_PENDING:
            return len(events)
        advisories = await self._advise(engine)
        if advisories:
            await self._commit(advisories, force=False)
        return len(events) + len(advisories)

    async def _commit(self, events: list[ConditionEvent], *, force: bool) -> None:
        now = time.monotonic()
        due = force or now - self._last_checkpoint >= _CHECKPOINT_EVERY_S
        if events:
            await self._retry(
                lambda: self._store.apply(events, pack=self._pack, scope=self._scope, state=None)
            )
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
        if not due:
            return
        # The state (megabytes: exposure windows, histories) is saved every 30 s on a
        # connection of its own, while evaluation goes on: a restarted engine re-derives the
        # transitions since its checkpoint, and each alert's engine mark makes the store
        # apply them once. At most one save is in flight; `force` waits for it.
        if self._saving is not None and not self._saving.done():
            if not force:
                return
            await self._saving
        state = await asyncio.to_thread(self.engine.dump_state)
        pack, scope = self._pack, self._scope
        self._last_checkpoint = now
        self._saving = asyncio.create_task(
            self._retry(lambda: self._ckpt.save_state(scope=scope, pack=pack, state=state))
        )
        if force:
            await self._saving

    async def _retry(
        self,
        op: Callable[[], Awaitable[object]],
        *,
        what: str = "alert commit failed, will retry",
        delay: float = 0.2,
    ) -> None:
        """Run op, retrying with jittered back-off while the database is unavailable."""
        while True:
            try:
                await op()
            except AlertStoreUnavailableError as exc:
                log.warning(what, error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                delay = min(delay * 2, 10.0)
            else:
                return

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
                await self.check_pack()
            except AlertStoreError as exc:
                log.warning("rule pack switch failed; will retry", error=str(exc))
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
                advisories = await self._advise(self._engine)  # deferred ones, if any
                if advisories:
                    await self._store.apply(
                        advisories, pack=self._pack, scope=self._scope, state=None
                    )
                if self._saving is not None:
                    await self._saving
                state = self._engine.dump_state()
                await self._ckpt.save_state(scope=self._scope, pack=self._pack, state=state)
            except AlertStoreError as exc:
                log.warning("final engine checkpoint not saved", error=str(exc))
        await self._ckpt.close()
        await self._store.close()
