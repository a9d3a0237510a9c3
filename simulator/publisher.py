"""The publisher: runs the plant model and sends its readings over MQTT, one client per gateway.

Owns the MQTT side of a simulated gateway under wire contract v1 (`ingest.contract`): a stable
client id `tungku-sim-<site>-<gateway>`, MQTT 5 with a persistent session, a retained QoS 1
status with the offline status as last will (stamped in plant time, like the readings, so an
accelerated run's statuses and readings share one clock; a scenario's `status_changes` add
offline/online announcements mid-run), QoS 1 readings with a per-gateway `seq`; the
pacing of plant time (real time, accelerated, or as fast as possible for an exact count); the
packing of readings into messages; store-and-forward through each gateway's `Spool` while the
broker is unreachable; and the run report.

A reading counts as acknowledged only when its message got a PUBACK with a success reason
code. At the end the publisher waits (bounded) for every acknowledgement, publishes the offline
status, disconnects cleanly (so the will does not fire) and spools whatever is still unacked,
to be backfilled at the next start.

This is an edge: it reads the clock and does network and disk I/O, and nothing clever. The
values come from `plant`, topics and payloads from `ingest.contract`. Progress goes to stderr.

Threads: paho runs one network thread per client. Its callbacks only append to a deque and set
an event; everything else (spool, counters, paho calls) happens on the caller's thread, which
never holds a lock while calling paho (paho calls `on_publish` under its own mutex).
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, Protocol

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.contract import encode_readings, encode_status, readings_topic, status_topic
from simulator.fleet import Fleet
from simulator.plant import GatewayReadings, Plant, StatusChange
from simulator.spool import Spool, SpooledMessage

CLIENT_ID_PREFIX: Final = "tungku-sim"
SPOOL_READ_BATCH: Final = 500


class ReadingSource(Protocol):
    """What the publisher plays: the plain `Plant`, or a `simulator.scenario.ScenarioPlant`."""

    def gateways(self) -> list[tuple[str, str]]:
        """Every (site, gateway) pair that publishes."""
        ...

    def readings(self, k: int) -> list[GatewayReadings]:
        """The readings due at tick k, per gateway."""
        ...

    def status_changes(self, k: int) -> list[StatusChange]:
        """Gateways announcing themselves offline or online at tick k."""
        ...

    def ticks_for(self, count: int) -> int:
        """Ticks from tick 0 needed for at least `count` readings."""
        ...


class Mode(StrEnum):
    """How plant time is paced."""

    REALTIME = "realtime"  # one tick per wall-clock second
    SPEED = "speed"  # `speed` ticks per wall-clock second
    COUNT = "count"  # as fast as possible, exactly `count` readings


class PublishConfigError(ValueError):
    """Raised when a publish configuration is inconsistent (e.g. --speed without a duration)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishConfig:
    """Everything a run needs besides the fleet; validated on construction."""

    host: str = "127.0.0.1"
    port: int = 1883
    mode: Mode = Mode.REALTIME
    speed: float = 1.0
    count: int | None = None
    duration_s: int | None = None  # plant seconds to run in paced modes; None = until stopped
    start_ms: int | None = None  # plant time of tick 0; default: chosen so none is in the future
    seed: int = 0
    readings_per_message: int = 100
    spool_dir: Path = Path("var/simulator-spool")
    record_path: Path | None = None
    progress: bool = True
    progress_every_s: float = 2.0
    connect_timeout_s: float = 5.0
    ack_timeout_s: float = 30.0
    keepalive_s: int = 30
    session_expiry_s: int = 3600
    max_inflight: int = 1000
    window_messages: int = 1000  # unacked messages per gateway before generation waits

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise PublishConfigError(f"port {self.port} is not in 1..65535")
        if self.readings_per_message < 1:
            raise PublishConfigError("readings_per_message must be at least 1")
        if self.mode is Mode.COUNT and (self.count is None or self.count < 1):
            raise PublishConfigError("count mode needs count >= 1")
        if self.mode is not Mode.COUNT and self.count is not None:
            raise PublishConfigError("count is only used in count mode")
        if self.speed <= 0:
            raise PublishConfigError(f"speed must be positive, not {self.speed}")
        if self.duration_s is not None and self.duration_s < 1:
            raise PublishConfigError("duration_s must be at least 1")
        if (
            self.mode is Mode.SPEED
            and self.speed > 1
            and self.duration_s is None
            and self.start_ms is None
        ):
            raise PublishConfigError(
                "an accelerated run without a duration would stamp readings in the future; "
                "give duration_s (plant time then ends now) or start_ms"
            )
        if self.max_inflight < 1 or self.window_messages < 1:
            raise PublishConfigError("max_inflight and window_messages must be at least 1")

    @property
    def tick_interval_s(self) -> float:
        """Wall seconds between ticks in paced modes (0 in count mode)."""
        match self.mode:
            case Mode.REALTIME:
                return 1.0
            case Mode.SPEED:
                return 1.0 / self.speed
            case Mode.COUNT:
                return 0.0


@dataclass(slots=True)
class RunReport:
    """What a run did; `all_acked` is the success criterion."""

    readings_generated: int = 0
    readings_published: int = 0  # handed to the MQTT connection (directly or from the spool)
    readings_acked: int = 0  # PUBACK with a success reason code
    readings_refused: int = 0  # PUBACK with a failure reason code
    messages: int = 0  # messages built this run
    status_messages: int = 0  # offline/online announcements a scenario asked for
    spooled_messages: int = 0
    spooled_readings: int = 0
    backfilled_messages: int = 0
    backfilled_readings: int = 0
    left_in_spool_messages: int = 0
    left_in_spool_readings: int = 0
    ticks: int = 0
    start_ms: int = 0  # plant time of tick 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def all_acked(self) -> bool:
        """Every reading handed to the broker was acknowledged and nothing is left spooled."""
        return (
            self.readings_refused == 0
            and self.left_in_spool_readings == 0
            and self.readings_acked == self.readings_published
        )

    def summary(self) -> str:
        """One human-readable paragraph."""
        rate = self.readings_acked / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"{self.readings_generated} readings generated in {self.messages} messages over "
            f"{self.ticks} ticks; {self.readings_published} published, {self.readings_acked} "
            f"acknowledged, {self.readings_refused} refused; spooled {self.spooled_readings} "
            f"({self.spooled_messages} messages), backfilled {self.backfilled_readings} "
            f"({self.backfilled_messages} messages), left in spool {self.left_in_spool_readings}"
            f"; {self.elapsed_s:.1f} s, {rate:,.0f} acknowledged readings/s"
        )


def wall_ms() -> int:
    """The wall clock in epoch milliseconds (the only clock read for timestamps)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Pending:
    seq: int
    topic: str
    payload: bytes
    readings: int
    from_spool: bool


class _Link:
    """One gateway: its MQTT client, spool and unacknowledged messages."""

    def __init__(
        self,
        *,
        site: str,
        gateway: str,
        config: PublishConfig,
        spool: Spool,
        wake: threading.Event,
        clock_ms: Callable[[], int],
    ) -> None:
        self.site = site
        self.gateway = gateway
        self.topic = readings_topic(site, gateway)
        self.status = status_topic(site, gateway)
        self.spool = spool
        self.config = config
        self.wake = wake
        self.clock_ms = clock_ms  # plant time, so status and readings share one clock
        self.connected = False
        self.last_error = ""
        self.acks: collections.deque[tuple[int, bool]] = collections.deque()
        self.outstanding: dict[int, _Pending] = {}
        self.buffer: list[dict[str, Any]] = []
        self.spool_cursor = -1  # highest spooled seq handed to the client
        self.spool_unsent, _ = spool.counts()
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{CLIENT_ID_PREFIX}-{site}-{gateway}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.max_inflight_messages_set(config.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.will_set(self.status, encode_status(False, wall_ms()), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client

    # paho callbacks (network thread): record and wake, nothing else.

    def _on_connect(
        self,
        client: Client,
        userdata: object,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            self.connected = False
        else:
            self.connected = True
            client.publish(self.status, encode_status(True, self.clock_ms()), qos=1, retain=True)
        self.wake.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: object,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected = False
        if reason.is_failure:
            self.last_error = f"disconnected: {reason}"
        self.wake.set()

    def _on_publish(
        self,
        client: Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.acks.append((mid, not reason.is_failure))
        self.wake.set()

    # caller's thread

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
        props.SessionExpiryInterval = self.config.session_expiry_s
        self.client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def send(self, pending: _Pending) -> bool:
        """Hand a message to paho; False if it refused it outright."""
        info: MQTTMessageInfo = self.client.publish(pending.topic, pending.payload, qos=1)
        # NO_CONN: paho keeps the message queued and sends it after the reconnect.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.last_error = f"publish refused by the client: {info.rc.name}"
            return False
        self.outstanding[info.mid] = pending
        return True

    @property
    def direct(self) -> bool:
        """New messages may bypass the spool: connected and nothing older is waiting there."""
        return self.connected and self.spool_unsent == 0


class Publisher:
    """Runs a fleet's plant model against a broker and reports what was acknowledged."""

    def __init__(
        self,
        fleet: Fleet,
        config: PublishConfig,
        *,
        stop: threading.Event | None = None,
        log: Callable[[str], object] | None = None,
        source: ReadingSource | None = None,
    ) -> None:
        self.fleet = fleet
        self.source = source
        self.config = config
        self.stop = stop or threading.Event()
        self.log = log or sys.stderr.write
        self.report = RunReport()
        self._wake = threading.Event()
        self._links: dict[tuple[str, str], _Link] = {}
        self._record: IO[str] | None = None
        self._last_progress = 0.0
        self._t0 = 0.0
        self._plant_ms = wall_ms()  # plant time of the tick being generated

    # -- the run --------------------------------------------------------------------------

    def run(self) -> RunReport:
        """Publish until the count, the duration or `stop`; then drain, disconnect, report."""
        cfg = self.config
        plant: ReadingSource = self.source or Plant(self.fleet, cfg.seed)
        now_ms = wall_ms() // 1000 * 1000
        if cfg.mode is Mode.COUNT:
            ticks: int | None = plant.ticks_for(cfg.count or 0)
            lag_s = ticks or 0
        else:
            ticks = cfg.duration_s
            lag_s = int((ticks or 0) * max(0.0, 1.0 - 1.0 / cfg.speed))
        start_ms = cfg.start_ms if cfg.start_ms is not None else now_ms - lag_s * 1000
        self.report.start_ms = start_ms
        self._plant_ms = start_ms
        self._t0 = time.monotonic()
        self._last_progress = self._t0
        try:
            self._open(plant)
            self._wait_connected()
            self._generate(plant, ticks, start_ms)
            self._drain()
        finally:
            self._close()
            self.report.elapsed_s = time.monotonic() - self._t0
        return self.report

    def _open(self, plant: ReadingSource) -> None:
        cfg = self.config
        for site, gateway in plant.gateways():
            spool = Spool(cfg.spool_dir / f"{site}.{gateway}.sqlite3")
            link = _Link(
                site=site,
                gateway=gateway,
                config=cfg,
                spool=spool,
                wake=self._wake,
                clock_ms=self._clock_ms,
            )
            self._links[(site, gateway)] = link
        if cfg.record_path is not None:
            cfg.record_path.parent.mkdir(parents=True, exist_ok=True)
            self._record = cfg.record_path.open("w", encoding="utf-8", newline="\n")
            self._record.write("site,sensor,ts_ms,value\n")
        for link in self._links.values():
            link.start()

    def _wait_connected(self) -> None:
        deadline = time.monotonic() + self.config.connect_timeout_s
        while not all(lk.connected for lk in self._links.values()):
            if time.monotonic() >= deadline or self.stop.is_set():
                down = [
                    f"{lk.site}/{lk.gateway}" for lk in self._links.values() if not lk.connected
                ]
                more = ", ..." if len(down) > 3 else ""
                self._say(
                    f"broker {self.config.host}:{self.config.port} not reachable for "
                    f"{len(down)} gateway(s) ({', '.join(down[:3])}{more}); "
                    f"spooling to {self.config.spool_dir} until it is\n"
                )
                return
            self._wake.wait(0.05)
            self._wake.clear()

    def _clock_ms(self) -> int:
        return self._plant_ms

    def _generate(self, plant: ReadingSource, ticks: int | None, start_ms: int) -> None:
        cfg = self.config
        remaining = cfg.count if cfg.mode is Mode.COUNT else None
        interval = cfg.tick_interval_s
        k = 0
        while (ticks is None or k < ticks) and not self.stop.is_set():
            if interval:
                self._wait_until(self._t0 + k * interval)
                if self.stop.is_set():
                    break
            ts_ms = start_ms + k * 1000
            self._plant_ms = ts_ms
            # Status first: an offline gateway sends nothing at its tick, an online one resumes.
            for change in plant.status_changes(k):
                self._announce(change, ts_ms)
            for due in plant.readings(k):
                gr = due
                if remaining is not None:
                    if remaining <= 0:
                        break
                    if len(gr) > remaining:  # the exact count ends inside this gateway's tick
                        gr = GatewayReadings(
                            gr.site,
                            gr.gateway,
                            gr.sensor_ids[:remaining],
                            gr.units[:remaining],
                            gr.values[:remaining],
                            None if gr.qualities is None else gr.qualities[:remaining],
                        )
                    remaining -= len(gr)
                self._add(gr, ts_ms)
            k += 1
            self.report.ticks = k
            if interval:
                self._flush_all()  # paced: every tick leaves as soon as it is due
            self._pump()
            if remaining == 0:
                break
        self._flush_all()

    def _wait_until(self, target: float) -> None:
        while (delay := target - time.monotonic()) > 0 and not self.stop.is_set():
            self._pump()
            self._wake.wait(min(delay, 0.25))
            self._wake.clear()

    # -- building and routing messages ----------------------------------------------------

    def _add(self, gr: GatewayReadings, ts_ms: int) -> None:
        link = self._links[(gr.site, gr.gateway)]
        buf = link.buffer
        if gr.qualities is None:
            buf.extend(
                {"sensor": s, "ts": ts_ms, "value": v, "unit": u}
                for s, u, v in zip(gr.sensor_ids, gr.units, gr.values, strict=True)
            )
        else:
            buf.extend(
                {"sensor": s, "ts": ts_ms, "value": v, "unit": u}
                if q == "good"
                else {"sensor": s, "ts": ts_ms, "value": v, "unit": u, "quality": q}
                for s, u, v, q in zip(gr.sensor_ids, gr.units, gr.values, gr.qualities, strict=True)
            )
        self.report.readings_generated += len(gr)
        if self._record is not None:
            site = gr.site
            self._record.writelines(
                f"{site},{s},{ts_ms},{v!r}\n" for s, v in zip(gr.sensor_ids, gr.values, strict=True)
            )
        per = self.config.readings_per_message
        while len(link.buffer) >= per:
            chunk, link.buffer = link.buffer[:per], link.buffer[per:]
            self._emit(link, chunk)

    def _announce(self, change: StatusChange, ts_ms: int) -> None:
        """Publish a gateway's offline/online status at plant time, after its readings so far."""
        link = self._links[(change.site, change.gateway)]
        if link.buffer:
            chunk, link.buffer = link.buffer, []
            self._emit(link, chunk)
        if link.connected:  # a gateway cut off from the broker cannot announce anything
            link.client.publish(
                link.status, encode_status(change.online, ts_ms), qos=1, retain=True
            )
            self.report.status_messages += 1

    def _flush_all(self) -> None:
        for link in self._links.values():
            if link.buffer:
                chunk, link.buffer = link.buffer, []
                self._emit(link, chunk)

    def _emit(self, link: _Link, readings: list[dict[str, Any]]) -> None:
        seq = link.spool.take_seq()
        pending = _Pending(
            seq=seq,
            topic=link.topic,
            payload=encode_readings(link.gateway, seq, readings),
            readings=len(readings),
            from_spool=False,
        )
        self.report.messages += 1
        # Back-pressure: at most `window_messages` unacknowledged per gateway while connected.
        while link.direct and len(link.outstanding) >= self.config.window_messages:
            self._pump()
            if len(link.outstanding) >= self.config.window_messages:
                self._wake.wait(0.05)
                self._wake.clear()
        if link.direct and link.send(pending):
            self.report.readings_published += pending.readings
        else:
            self._to_spool(link, [pending])
            link.spool_unsent += 1
        self._progress()

    def _to_spool(self, link: _Link, messages: list[_Pending]) -> None:
        stored = link.spool.append(
            SpooledMessage(m.seq, m.topic, m.payload, m.readings) for m in messages
        )
        self.report.spooled_messages += stored
        self.report.spooled_readings += sum(m.readings for m in messages)

    # -- acknowledgements and backfill ----------------------------------------------------

    def _pump(self) -> None:
        """Account for PUBACKs, delete acknowledged spool rows, backfill from the spool."""
        for link in self._links.values():
            done: list[int] = []
            while link.acks:
                mid, ok = link.acks.popleft()
                pending = link.outstanding.pop(mid, None)
                if pending is None:
                    continue  # a status message
                if ok:
                    self.report.readings_acked += pending.readings
                else:
                    self.report.readings_refused += pending.readings
                    self.report.errors.append(
                        f"{link.site}/{link.gateway}: broker refused message seq {pending.seq}"
                    )
                if pending.from_spool:
                    done.append(pending.seq)
            link.spool.delete(done)
            self._backfill(link)
        self._progress()

    def _backfill(self, link: _Link) -> None:
        room = self.config.window_messages - len(link.outstanding)
        if not link.connected or link.spool_unsent == 0 or room <= 0:
            return
        batch = link.spool.read(after_seq=link.spool_cursor, limit=min(room, SPOOL_READ_BATCH))
        if not batch:
            link.spool_unsent = 0
            return
        for m in batch:
            pending = _Pending(m.seq, m.topic, m.payload, m.readings, from_spool=True)
            if not link.send(pending):
                return
            link.spool_cursor = m.seq
            link.spool_unsent -= 1
            self.report.readings_published += m.readings
            self.report.backfilled_messages += 1
            self.report.backfilled_readings += m.readings
        link.spool_unsent = max(link.spool_unsent, 0)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.ack_timeout_s
        while any(lk.outstanding or lk.spool_unsent for lk in self._links.values()):
            if time.monotonic() >= deadline:
                self._say(
                    f"gave up waiting for acknowledgements after {self.config.ack_timeout_s:g} s\n"
                )
                return
            self._pump()
            self._wake.wait(0.05)
            self._wake.clear()

    def _close(self) -> None:
        # A clean disconnect does not fire the will: say offline explicitly first.
        infos = [
            link.client.publish(
                link.status, encode_status(False, self._plant_ms), qos=1, retain=True
            )
            for link in self._links.values()
            if link.connected
        ]
        for info in infos:
            if info.rc is MQTTErrorCode.MQTT_ERR_SUCCESS:
                # The connection may drop meanwhile; then the broker's will says offline.
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout=2.0)
        self._pump()
        for link in self._links.values():
            link.client.disconnect()
            link.client.loop_stop()
            # Messages paho still holds are not acknowledged: keep them for the next start.
            unacked = sorted(
                (p for p in link.outstanding.values() if not p.from_spool), key=lambda p: p.seq
            )
            if unacked:
                self._to_spool(link, unacked)
            if link.buffer:  # only when generation was interrupted mid-message
                seq = link.spool.take_seq()
                payload = encode_readings(link.gateway, seq, link.buffer)
                self._to_spool(link, [_Pending(seq, link.topic, payload, len(link.buffer), False)])
                self.report.messages += 1
                link.buffer = []
            n, r = link.spool.counts()
            self.report.left_in_spool_messages += n
            self.report.left_in_spool_readings += r
            if link.last_error and not link.connected:
                self.report.errors.append(f"{link.site}/{link.gateway}: {link.last_error}")
            link.spool.close()
        if self._record is not None:
            self._record.close()
        self._progress(final=True)

    # -- progress -------------------------------------------------------------------------

    def _progress(self, *, final: bool = False) -> None:
        if not self.config.progress:
            return
        now = time.monotonic()
        if not final and now - self._last_progress < self.config.progress_every_s:
            return
        self._last_progress = now
        elapsed = max(now - self._t0, 1e-9)
        r = self.report
        self._say(
            f"simulate: {r.readings_published:,} published, {r.readings_acked:,} acked, "
            f"{r.readings_acked / elapsed:,.0f} readings/s, {r.spooled_readings:,} spooled, "
            f"{r.backfilled_readings:,} backfilled\n"
        )

    def _say(self, text: str) -> None:
        self.log(text)


def publish_fleet(
    fleet: Fleet,
    config: PublishConfig,
    *,
    stop: threading.Event | None = None,
    source: ReadingSource | None = None,
) -> RunReport:
    """Run the fleet against the broker of `config`; see `Publisher`.

    `source` replaces the fleet's plain plant model (e.g. a scenario layered over it); its
    gateways must be the fleet's.
    """
    return Publisher(fleet, config, stop=stop, source=source).run()
