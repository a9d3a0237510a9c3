"""The rule engine in a child process of the ingest service: its own interpreter, its own core.

Owns the hand-over of committed batches from the ingest process to an `Evaluator` running in
a spawned child, and the child's life. Measured (bench/alert_bench.py): in the ingest
process, evaluation shared one interpreter lock with decoding and committing and cost most
of the ingest rate; in a process of its own it competes for CPU only.

The parent puts each committed batch on a bounded queue and reads progress reports from the
child: readings evaluated, condition events, refused packs. When the queue is full the batch
is not handed over: the child is told to read what it missed from the database, where it is
committed. So ingest never waits for alerting, and memory stays bounded. The child takes
what arrives within `batch_delay_s` into one evaluation (the engine's cost is mostly per
sensor per call), and runs a little below ingest in the scheduler (nice 5). Exactly once
holds across the process boundary as across a crash: batches lost with a dead child were
committed, and the restarted child evaluates them from the database after its checkpoint;
batches it sees twice are skipped by the engine. A dead child is restarted with back-off,
and the parent logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from alerting.evaluator import Committed, Evaluator, merge_committed, read_pack
from alerting.store import AlertStore
from alerting.webhook import parse_endpoints

log = structlog.get_logger("tungku.alerting")

_QUEUE_BATCHES = 64  # 10k-reading batches: about 20 MB at most
_NICE = 5
_BUSY_BATCH_ROWS = 5000  # a committed batch this large: ingest is draining a backlog
_BUSY_DELAY_S = 0.25
_READY_TIMEOUT_S = 600.0  # a child catching up on a long backlog may take a while


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the child needs to build its evaluator (picklable: it crosses a spawn)."""

    database_url: str
    schema: str
    rule_pack: str
    sites: tuple[str, ...]
    webhooks: tuple[tuple[str, str, str], ...]
    log_format: str
    log_level: str
    batch_delay_s: float = 0.05


class WorkerError(RuntimeError):
    """Raised when the alert worker cannot be started."""


class EvaluatorProcess:
    """The parent's handle on the alert worker; the same surface as an `Evaluator`."""

    def __init__(self, config: WorkerConfig) -> None:
        self._cfg = config
        self._ctx = multiprocessing.get_context("spawn")
        self._in: Any = None
        self._out: Any = None
        self._proc: SpawnProcess | None = None
        self._restarts = 0
        self.readings = 0
        self.events = 0
        self.pack_refusals = 0
        self.via_database = 0  # batches the child read from the database instead
        self._overflow: Committed | None = None
        self._handed = 0  # items put on the child's queue (since it started)
        self._finished = 0  # items the child has reported evaluated and committed

    @property
    def backlog(self) -> int:
        """Batches handed to the child and not yet evaluated and committed by it, the one it
        is working on included, plus a pending request to read missed batches."""
        return self._handed - self._finished + (self._overflow is not None)

    async def start(self) -> None:
        """Spawn the child and wait until it has resumed and caught up."""
        self._in = self._ctx.Queue(maxsize=_QUEUE_BATCHES)
        self._handed = self._finished = 0  # a new child: what the old one held is re-read
        self._out = self._ctx.Queue()
        self._proc = self._ctx.Process(
            target=child_main, args=(self._cfg, self._in, self._out), name="tungku-alerts"
        )
        self._proc.start()
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = await asyncio.to_thread(self._get, 0.5)
            if msg is not None and msg[0] == "ready":
                log.info("alert worker ready", pid=self._proc.pid)
                return
            if msg is not None:
                self._account(msg)
            if not self._proc.is_alive():
                raise WorkerError(f"the alert worker exited with code {self._proc.exitcode}")
        raise WorkerError("the alert worker did not get ready in time")

    def _get(self, timeout_s: float) -> tuple[Any, ...] | None:
        try:
            msg: tuple[Any, ...] = self._out.get(timeout=timeout_s)
        except queue.Empty:
            return None
        return msg

    def _account(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "done":
            _, readings, events, refusals, items = msg
            self._finished += items
            self.readings += readings
            self.events += events
            self.pack_refusals = refusals

    async def evaluate(self, batch: Committed) -> int:
        """Hand a committed batch to the child; 0 events now (the child reports them).

        Never waits: when the child's queue is full, the batch is not handed over and the
        child is told to read what it missed from the database (where it is committed)
        once there is room. Ingest never waits for alerting; memory stays bounded."""
        await self._ensure_alive()
        if self._overflow is not None and not self._flush_overflow():
            self._overflow.statuses.extend(batch.statuses)
            self._overflow.add_upto(batch.keys, batch.ts_us)
            self.via_database += 1
            return 0
        try:
            self._in.put_nowait(batch)
            self._handed += 1
        except queue.Full:
            empty = np.empty(0, dtype=np.int64)
            self._overflow = Committed(
                empty, empty, np.empty(0), empty, list(batch.statuses), catch_up=True, upto={}
            )
            self._overflow.add_upto(batch.keys, batch.ts_us)
            self.via_database += 1
        return 0

    def _flush_overflow(self) -> bool:
        """Queue the pending catch-up request; True when it is queued."""
        if self._overflow is None:
            return True
        try:
            self._in.put_nowait(self._overflow)
            self._handed += 1
        except queue.Full:
            return False
        self._overflow = None
        return True

    async def _ensure_alive(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        code = self._proc.exitcode if self._proc is not None else None
        self._restarts += 1
        delay = min(0.5 * 2**self._restarts, 10.0)
        log.error("alert worker died; restarting", exitcode=code, restarts=self._restarts)
        await asyncio.sleep(delay)
        await self.start()

    async def housekeep(self, stop: asyncio.Event) -> None:
        """Read the child's progress reports; restart it if it died."""
        while not stop.is_set():
            self._flush_overflow()
            while (msg := self._get(0)) is not None:
                self._account(msg)
            if self._proc is not None and not self._proc.is_alive():
                await self._ensure_alive()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def close(self) -> None:
        """Let the child finish what is queued and save its checkpoint, then stop it."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(Exception):  # the queue may be broken if the child died
            if self._overflow is not None:
                await asyncio.to_thread(self._in.put, self._overflow, True, 5.0)
                self._overflow = None
            await asyncio.to_thread(self._in.put, None, True, 5.0)
        await asyncio.to_thread(proc.join, 15.0)
        while (msg := self._get(0)) is not None:
            self._account(msg)
        if proc.is_alive():
            log.warning("alert worker did not stop in time; terminating")
            proc.terminate()
            await asyncio.to_thread(proc.join, 5.0)


def child_main(cfg: WorkerConfig, inbox: Any, outbox: Any) -> None:
    """Entry point of the child process."""
    from ingest.logs import configure_logging  # noqa: PLC0415 - the child's own setup

    configure_logging(cfg.log_format, cfg.log_level)
    _watch_parent()
    # Below ingest in the scheduler: when the cores are short, storing readings (and so
    # acknowledging them) goes first; the worker then takes larger bites, which cost it less
    # per reading, and catches up.
    os.nice(_NICE)
    asyncio.run(_child(cfg, inbox, outbox))


def _watch_parent() -> None:
    """Exit at once when the ingest process is gone (a SIGKILL leaves the child behind).

    Checked by a thread every 0.5 s, whatever the child is doing; `os._exit` because
    nothing may hold the exit up (a queue's feeder thread, a database call): the checkpoint
    is not needed (the successor catches up from the database) and the scope's advisory
    lock goes with the connection, so the successor can start."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                log.warning("ingest process gone; the alert worker exits")
                os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


async def _child(cfg: WorkerConfig, inbox: Any, outbox: Any) -> None:
    pack, body = read_pack(cfg.rule_pack)
    hooks = parse_endpoints([{"name": n, "url": u, "secret": k} for n, u, k in cfg.webhooks])
    store = AlertStore(database_url=cfg.database_url, schema=cfg.schema, webhooks=hooks)
    ev = Evaluator(
        store=store,
        pack=pack,
        pack_body=body,
        sites=cfg.sites,
        pack_file=Path(cfg.rule_pack) if cfg.rule_pack else None,
    )
    await ev.start()
    outbox.put(("ready",))
    stop = asyncio.Event()

    # The parent's pid as this process started: when the parent dies (a SIGKILL), the child
    # is handed to another parent, which is the reliable sign on Linux (the multiprocessing
    # sentinel can be held open by another process of the family).
    parent_pid = os.getppid()

    def take() -> list[Committed | None]:
        """The next batch and whatever follows it within `batch_delay_s`: the engine's cost
        is mostly per sensor per call, so fewer, larger calls leave the cores to ingest."""
        while True:
            try:
                first: Committed | None = inbox.get(timeout=1.0)
                break
            except queue.Empty:
                if os.getppid() != parent_pid:
                    log.warning("ingest process gone; the alert worker stops")
                    return [None]
        items: list[Committed | None] = [first]
        # Full batches from ingest mean a backlog is being drained: take bigger bites then
        # (per reading the engine costs less in larger calls), and the usual short window
        # otherwise, where latency matters.
        busy = first is not None and int(np.size(first.keys)) >= _BUSY_BATCH_ROWS
        deadline = time.monotonic() + (_BUSY_DELAY_S if busy else cfg.batch_delay_s)
        while items[-1] is not None:
            left = deadline - time.monotonic()
            try:
                items.append(inbox.get(timeout=left) if left > 0 else inbox.get_nowait())
            except queue.Empty:
                break
        return items

    async def report() -> None:  # what happens between batches (a refused pack) too
        sent = ev.pack_refusals
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if ev.pack_refusals != sent:
                sent = ev.pack_refusals
                outbox.put(("done", 0, 0, sent, 0))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(ev.housekeep(stop), name="alert-housekeep")
        tg.create_task(report(), name="report")
        try:
            while True:
                items = await asyncio.to_thread(take)
                batches = [b for b in items if b is not None]
                if batches:
                    merged = batches[0] if len(batches) == 1 else merge_committed(batches)
                    before = ev.readings
                    # More batches waiting: their safety rules before this one's advisories.
                    events = await ev.evaluate(merged, advise=inbox.empty())
                    done = (ev.readings - before, events, ev.pack_refusals, len(batches))
                    outbox.put(("done", *done))
                if items[-1] is None:
                    break
        finally:
            stop.set()
    await ev.close()
