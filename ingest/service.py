"""The ingest service: MQTT in, TimescaleDB out, acknowledged only after commit.

Wiring of one running process: one `asyncio.TaskGroup` with named tasks —

    decode     takes received messages in arrival order, decodes them into a Batch,
               hands a Batch over when it is full (rows) or old enough (time)
    write      commits each Batch in one transaction, then acknowledges its messages
               in arrival order; retries with jittered back-off while the database is away
    registry   reloads the sensor index when the registry generation changes
    retention  drops chunks older than the retention period (Apache edition: no policies)
    housekeep  refreshes gauges and the metrics text file, logs a progress line
    alerts     (with alerting) runs the rule engine on committed batches in commit order
    alert-housekeep  refreshes permits and findings, expires shelves

The inbox holds at most mqtt_receive_maximum messages (paho's thread blocks, and so stops
reading the socket, when it is full) and the batch queue writers + 1 batches, so memory stays
bounded when the database stalls. A blind `except Exception` exists only where a message
or batch would otherwise stall ingest for good: decoding, and committing (see `_commit`).
"""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import suppress

import numpy as np
import structlog
from prometheus_client import start_http_server, write_to_textfile

from alerting.evaluator import Committed, Evaluator, merge_committed
from alerting.webhook import WebhookSender
from alerting.worker import EvaluatorProcess
from ingest.batch import AckSequencer, Batch, GatewaySeen
from ingest.contract import READINGS_SUBSCRIPTION, STATUS_SUBSCRIPTION, DecodeLimits, SensorSpec
from ingest.inbox import Inbox
from ingest.metrics import IngestMetrics
from ingest.mqtt import Inbound, MqttSource
from ingest.settings import Settings
from ingest.store import ReadingStore, StoreError, StoreUnavailableError

log = structlog.get_logger("tungku.ingest")

_SHUTDOWN_GRACE_S = 10.0
_EVAL_BACKLOG = 8


def subscriptions(settings: Settings) -> list[str]:
    """Topic filters for the configured sites (all sites when none is configured)."""
    if not settings.sites:
        return [READINGS_SUBSCRIPTION, STATUS_SUBSCRIPTION]
    return [f"tungku/v1/{s}/+/{ch}" for s in settings.sites for ch in ("readings", "status")]


def _now_us() -> int:
    return time.time_ns() // 1000


class IngestService:
    """One ingest process. Construct, then `await run(stop)`; set `stop` to shut down."""

    def __init__(
        self,
        *,
        settings: Settings,
        metrics: IngestMetrics,
        evaluator: Evaluator | EvaluatorProcess | None = None,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self._s = settings
        self._m = metrics
        self._evaluator = evaluator
        self._webhooks = webhooks
        #: Committed batches for the evaluator, in commit order (put without awaiting, so two
        #: writers cannot reorder them; writers wait while it is longer than _EVAL_BACKLOG).
        self._committed: asyncio.Queue[Committed | None] = asyncio.Queue()
        self._eval_room = asyncio.Event()
        self._limits = DecodeLimits(
            max_payload_bytes=settings.max_payload_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            max_age_s=settings.max_age_days * 86_400,
        )
        self._index: dict[tuple[str, str], dict[str, SensorSpec]] = {}
        self._generation = -1
        self._unacked = 0
        #: Highest seq and last arrival per gateway, committed but not yet written down.
        self._seen: dict[tuple[str, str], GatewaySeen] = {}
        self._abandon = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then commit and acknowledge what was received, and exit."""
        loop = asyncio.get_running_loop()
        inbound: Inbox[Inbound] = Inbox(self._s.mqtt_receive_maximum, loop)
        batches: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self._s.writers + 1)
        # A connection per writer, and one for side queries: a writer's transaction must never
        # interleave with anything else.
        stores = [
            ReadingStore(database_url=self._s.database_url, schema=self._s.db_schema)
            for _ in range(self._s.writers)
        ]
        sequencer: AckSequencer[tuple[Batch, int, float]] = AckSequencer()
        aux = ReadingStore(database_url=self._s.database_url, schema=self._s.db_schema)
        # Metrics first: the process is observable while it waits for the database or for
        # the alert worker to resume.
        if self._s.metrics_port:
            start_http_server(self._s.metrics_port, self._s.metrics_host, self._m.registry)
        await self._load_index_until_ready(aux, stop)
        if stop.is_set():
            return
        if self._evaluator is not None:
            # Resuming can wait (for the database, for a predecessor's worker to end): a stop
            # meanwhile ends the wait.
            starting = asyncio.create_task(self._evaluator.start(), name="alert-start")
            stopping = asyncio.create_task(stop.wait(), name="stop-wait")
            await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                with suppress(asyncio.CancelledError):
                    await starting
                await self._evaluator.close()
                await aux.close()
                return
            starting.result()

        def deliver(msg: Inbound) -> None:  # paho's thread; blocks while the inbox is full
            inbound.put(msg)

        def connection(up: bool, why: str) -> None:  # paho's thread
            self._m.mqtt_connected.set(1 if up else 0)
            log.info("mqtt", connected=up, detail=why)

        source = MqttSource(
            host=self._s.mqtt_host,
            port=self._s.mqtt_port,
            client_id=self._s.mqtt_client_id,
            subscriptions=subscriptions(self._s),
            on_message=deliver,
            on_connection=connection,
            keepalive_s=self._s.mqtt_keepalive_s,
            session_expiry_s=self._s.mqtt_session_expiry_s,
            receive_maximum=self._s.mqtt_receive_maximum,
            username=self._s.mqtt_username,
            password=self._s.mqtt_password,
        )
        source.start()
        log.info("started", subscriptions=subscriptions(self._s), schema=self._s.db_schema)
        try:
            async with asyncio.TaskGroup() as tg:
                decode = tg.create_task(self._decode_loop(inbound, batches, stop), name="decode")
                writers = [
                    tg.create_task(
                        self._write_loop(batches, store, source, sequencer), name=f"write-{i}"
                    )
                    for i, store in enumerate(stores)
                ]
                side = [
                    tg.create_task(self._registry_loop(aux, stop), name="registry"),
                    tg.create_task(self._retention_loop(aux, stop), name="retention"),
                    tg.create_task(self._housekeep_loop(aux, inbound, stop), name="housekeep"),
                ]
                alerts = None
                if self._webhooks is not None:
                    side.append(tg.create_task(self._webhooks.run(stop), name="webhooks"))
                if self._evaluator is not None:
                    alerts = tg.create_task(self._alert_loop(self._evaluator), name="alerts")
                    side.append(
                        tg.create_task(self._evaluator.housekeep(stop), name="alert-housekeep")
                    )
                await stop.wait()
                # Commit and acknowledge what was received, within a grace period. When the
                # database is away, decode can be stuck handing over a batch and a writer
                # stuck in a commit: both are cancelled. Nothing uncommitted was
                # acknowledged, so the broker redelivers it to the next run.
                _, pending = await asyncio.wait([decode, *writers], timeout=_SHUTDOWN_GRACE_S)
                if pending:
                    log.warning("shutdown without commit", unacked=self._unacked)
                    self._abandon.set()
                    for t in pending:
                        t.cancel()
                if alerts is not None:
                    self._committed.put_nowait(None)
                    _, late = await asyncio.wait([alerts], timeout=_SHUTDOWN_GRACE_S)
                    for t in late:
                        t.cancel()
                for t in side:
                    t.cancel()
        finally:
            inbound.close()
            source.stop()
            for store in stores:
                await store.close()
            with suppress(StoreError):
                await aux.record_gateways_seen(self._seen)
            await aux.close()
            if self._evaluator is not None:
                await self._evaluator.close()
            self._write_textfile()
            log.info("stopped", unacked=self._unacked)

    async def _load_index_until_ready(self, store: ReadingStore, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                gen, index = await store.fetch_index()
            except StoreUnavailableError as exc:
                log.warning("database unavailable at start", error=str(exc), retry_in_s=delay)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
                continue
            self._set_index(gen, index)
            return

    def _set_index(self, gen: int, index: dict[tuple[str, str], dict[str, SensorSpec]]) -> None:
        self._index, self._generation = index, gen
        self._m.registry_generation.set(gen)
        log.info(
            "registry loaded",
            generation=gen,
            gateways=len(index),
            sensors=sum(len(v) for v in index.values()),
        )

    async def _decode_loop(
        self,
        inbound: Inbox[Inbound],
        batches: asyncio.Queue[Batch | None],
        stop: asyncio.Event,
    ) -> None:
        max_rows = self._s.max_batch_rows
        max_delay_s = self._s.max_batch_delay_ms / 1000
        batch: Batch | None = None
        number = 0
        while True:
            now = time.monotonic()
            if batch is not None and (
                stop.is_set()
                or batch.is_due(now_mono_s=now, max_rows=max_rows, max_delay_s=max_delay_s)
            ):
                await batches.put(batch)
                batch = None
                continue
            if stop.is_set():
                for _ in range(self._s.writers):
                    await batches.put(None)
                return
            msg = inbound.get_nowait()
            if msg is None:
                wait_s = (
                    0.2 if batch is None else max(0.0, batch.started_mono_s + max_delay_s - now)
                )
                await inbound.wait(wait_s)
                continue
            if batch is None:
                batch = Batch(started_mono_s=time.monotonic(), number=number)
                number += 1
            self._unacked += 1
            self._m.messages_received.inc()
            try:
                batch.add_message(
                    msg.ref,
                    msg.topic,
                    msg.payload,
                    received_at_us=_now_us(),
                    index=self._index,
                    limits=self._limits,
                )
            except Exception as exc:
                log.exception("decoder failed", topic=msg.topic)
                batch.add_internal_error(
                    msg.ref,
                    msg.topic,
                    msg.payload,
                    received_at_us=_now_us(),
                    message=f"decoder failed: {exc!r}",
                )
            # Let the writers run between messages. Decoding a batch takes tens of ms, and a
            # commit is several round trips, each of which waits for the loop: without this,
            # PostgreSQL sat idle half the time (measured: ~65-85k -> see bench/README).
            await asyncio.sleep(0)

    async def _write_loop(
        self,
        batches: asyncio.Queue[Batch | None],
        store: ReadingStore,
        source: MqttSource,
        sequencer: AckSequencer[tuple[Batch, int, float]],
    ) -> None:
        while (batch := await batches.get()) is not None:
            t0 = time.monotonic()
            inserted = await self._commit(store, batch)
            if inserted is None:
                return  # shutting down without the database
            commit_s = time.monotonic() - t0
            # Commits of concurrent writers finish in any order; PUBACKs may not.
            for ready, ready_inserted, ready_commit_s in sequencer.committed(
                batch.number, (batch, inserted, commit_s)
            ):
                acked = source.ack(ready.refs)
                self._account(ready, ready_inserted, ready_commit_s, time.monotonic(), acked)
                if self._evaluator is not None:
                    self._committed.put_nowait(_committed(ready))
            while self._committed.qsize() > _EVAL_BACKLOG:  # the evaluator is behind: hold on
                self._eval_room.clear()
                await self._eval_room.wait()

    async def _commit(self, store: ReadingStore, batch: Batch) -> int | None:
        """Commit a batch; new rows, or None when abandoned at shutdown.

        When the database refuses the batch's data (or committing it fails in a way nobody
        foresaw), retrying it whole would stall ingest for good, since nothing after it
        could be acknowledged. Its messages are then committed one by one, and a message
        that still fails is kept whole in `rejects` as internal_error, and acknowledged.
        """
        try:
            return await self._commit_retrying(store, batch)
        except Exception:  # supervised: a poison batch must not stop ingest
            log.exception("batch refused; committing its messages one by one")
        inserted = 0
        for ref, topic, payload, received_at_us in batch.raw:
            one = Batch(started_mono_s=batch.started_mono_s)
            one.add_message(
                ref,
                topic,
                payload,
                received_at_us=received_at_us,
                index=self._index,
                limits=self._limits,
            )
            try:
                n = await self._commit_retrying(store, one)
            except Exception as exc:  # supervised, as above
                log.exception("message refused by the database", topic=topic)
                kept = Batch(started_mono_s=batch.started_mono_s)
                kept.add_internal_error(
                    ref,
                    topic,
                    payload,
                    received_at_us=received_at_us,
                    message=f"the database refused this message: {exc}",
                )
                n = await self._commit_retrying(store, kept)
            if n is None:
                return None
            inserted += n
        return inserted

    async def _commit_retrying(self, store: ReadingStore, batch: Batch) -> int | None:
        """Commit, retrying with jittered back-off while the database is unavailable."""
        delay = 0.2
        while True:
            try:
                return await store.commit_batch(batch)
            except StoreUnavailableError as exc:
                log.warning("commit failed, will retry", error=str(exc), retry_in_s=delay)
            self._m.db_errors.inc()
            jitter = random.uniform(0.5, 1.5)  # noqa: S311 - back-off jitter, not crypto
            with suppress(TimeoutError):
                await asyncio.wait_for(self._abandon.wait(), delay * jitter)
            if self._abandon.is_set():
                return None
            delay = min(delay * 2, 10.0)

    def _account(
        self, batch: Batch, inserted: int, commit_s: float, now_mono: float, acked: int
    ) -> None:
        m = self._m
        self._unacked -= batch.messages
        m.unacked_messages.set(self._unacked)
        m.messages_acked.inc(acked)
        m.batches_committed.inc()
        m.batch_rows.observe(batch.rows)
        m.commit_seconds.observe(commit_s)
        m.ingest_lag_seconds.observe(now_mono - batch.started_mono_s)
        m.readings_accepted.inc(batch.rows)
        m.readings_inserted.inc(inserted)
        m.readings_duplicate.inc(max(0, batch.rows - inserted))
        for reason, n in batch.rejected_readings.items():
            m.readings_rejected.labels(reason=reason).inc(n)
        for reason, n in batch.rejected_messages.items():
            m.messages_rejected.labels(reason=reason).inc(n)
        for key, seen in batch.gateways.items():
            prev = self._seen.get(key)
            if prev is None:
                self._seen[key] = GatewaySeen(seen.max_seq, seen.last_received_us)
            else:
                prev.max_seq = max(prev.max_seq, seen.max_seq)
                prev.last_received_us = max(prev.last_received_us, seen.last_received_us)
        if batch.ts_us:
            m.event_lag_seconds.set(max(0.0, (_now_us() - max(batch.ts_us)) / 1e6))

    async def _alert_loop(self, evaluator: Evaluator | EvaluatorProcess) -> None:
        while (committed := await self._committed.get()) is not None:
            # Whatever else has been committed meanwhile is evaluated with it: the engine's
            # cost is mostly per sensor per call, so a busy evaluator takes larger bites and
            # catches up instead of falling further behind.
            more: list[Committed] = []
            while not self._committed.empty():
                nxt = self._committed.get_nowait()
                if nxt is None:
                    self._committed.put_nowait(None)
                    break
                more.append(nxt)
            if more:
                committed = merge_committed([committed, *more])
            self._eval_room.set()
            try:
                await evaluator.evaluate(committed)
            except Exception:  # supervised: a bug in a rule must not stop ingest
                self._m.alert_errors.inc()
                log.exception("alert evaluation failed; readings are stored, alerts may be missed")
        self._eval_room.set()

    def _alert_metrics(self) -> None:
        ev = self._evaluator
        if ev is None:
            return
        m = self._m
        m.alert_readings.inc(max(0, ev.readings - self._sample("tungku_alert_readings_total")))
        m.alert_events.inc(max(0, ev.events - self._sample("tungku_alert_events_total")))
        m.alert_backlog.set(self._committed.qsize() + ev.backlog)
        m.pack_refusals.set(ev.pack_refusals)
        m.alert_via_database.set(getattr(ev, "via_database", 0))

    async def _registry_loop(self, store: ReadingStore, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._s.registry_refresh_s)
            try:
                if await store.generation() != self._generation:
                    self._set_index(*await store.fetch_index())
            except StoreError as exc:
                log.debug("registry refresh skipped", error=str(exc))

    async def _retention_loop(self, store: ReadingStore, stop: asyncio.Event) -> None:
        if self._s.retention_days <= 0:
            return
        while not stop.is_set():
            try:
                dropped = await store.drop_old_chunks(self._s.retention_days)
                log.info(
                    "retention", dropped_chunks=dropped, older_than_days=self._s.retention_days
                )
            except StoreError as exc:
                log.warning("retention skipped", error=str(exc))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._s.retention_check_interval_s)

    async def _housekeep_loop(
        self, store: ReadingStore, inbound: Inbox[Inbound], stop: asyncio.Event
    ) -> None:
        last_log = time.monotonic()
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            seen, self._seen = self._seen, {}
            try:
                await store.record_gateways_seen(seen)
                self._m.gateways_online.set(await store.gateways_online())
            except StoreError as exc:
                self._merge_back(seen)
                log.warning("gateway state not recorded, will retry", error=str(exc))
            self._m.unacked_messages.set(self._unacked)
            self._m.inbox_messages.set(len(inbound))
            self._alert_metrics()
            self._m.inbox_stalls.set(inbound.blocked_puts)
            self._write_textfile()
            if time.monotonic() - last_log >= 10:
                last_log = time.monotonic()
                log.info(
                    "progress",
                    readings=self._sample("tungku_readings_accepted_total"),
                    batches=self._sample("tungku_batches_committed_total"),
                    unacked=self._unacked,
                )

    def _merge_back(self, seen: dict[tuple[str, str], GatewaySeen]) -> None:
        for key, old in seen.items():
            cur = self._seen.setdefault(key, old)
            cur.max_seq = max(cur.max_seq, old.max_seq)
            cur.last_received_us = max(cur.last_received_us, old.last_received_us)

    def _sample(self, name: str) -> float:
        return self._m.registry.get_sample_value(name) or 0.0

    def _write_textfile(self) -> None:
        if self._s.metrics_file:
            write_to_textfile(self._s.metrics_file, self._m.registry)


def _committed(batch: Batch) -> Committed:
    """What alerting sees of a committed batch, as arrays (cheap to hand to the worker): its
    readings, the readings refused as out of their physical range (as bad quality), and
    gateway status changes."""
    keys = np.fromiter(batch.sensor_keys, dtype=np.int64, count=len(batch.sensor_keys))
    ts = np.fromiter(batch.ts_us, dtype=np.int64, count=len(batch.ts_us))
    values = np.fromiter(batch.values, dtype=np.float64, count=len(batch.values))
    qualities = np.fromiter(batch.qualities, dtype=np.int64, count=len(batch.qualities))
    if batch.faults:
        f = batch.faults
        keys = np.concatenate((keys, np.array([x[0] for x in f], dtype=np.int64)))
        ts = np.concatenate((ts, np.array([x[1] for x in f], dtype=np.int64)))
        values = np.concatenate((values, np.array([x[2] for x in f], dtype=np.float64)))
        qualities = np.concatenate((qualities, np.full(len(f), 2, dtype=np.int64)))
    statuses = [
        (st.site, st.gateway, st.online, st.ts_us if st.ts_us is not None else st.received_at_us)
        for st in batch.statuses
    ]
    return Committed(keys, ts, values, qualities, statuses)
