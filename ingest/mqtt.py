"""MQTT adapter for the ingest service (paho-mqtt 2.x, MQTT v5).

Owns the broker connection: a stable client id, a persistent session (clean start off, a
session expiry), QoS 1 subscriptions, and *manual* acknowledgement. Messages are handed over
with an `AckRef`; the service calls `ack()` only after their rows are committed, in arrival
order. The MQTT v5 Receive Maximum caps how many unacknowledged messages the broker sends us,
which is the back-pressure: while the database is down nothing is acknowledged, the window
fills, and the broker queues the rest.

paho runs its network loop in its own thread; `on_message` runs there and must only hand the
message over. Nothing clever happens here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions


@dataclass(frozen=True, slots=True)
class AckRef:
    """What is needed to acknowledge one message: its packet id on a given connection."""

    mid: int
    qos: int
    connection: int


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as received, before any decoding."""

    ref: AckRef
    topic: str
    payload: bytes


class MqttSource:
    """A subscribing MQTT v5 client that leaves acknowledgement to its owner."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        subscriptions: Sequence[str],
        on_message: Callable[[Inbound], None],
        on_connection: Callable[[bool, str], None],
        keepalive_s: int = 30,
        session_expiry_s: int = 7 * 24 * 3600,
        receive_maximum: int = 1000,
        username: str = "",
        password: str = "",
    ) -> None:
        self._host = host
        self._port = port
        self._keepalive_s = keepalive_s
        self._subscriptions = list(subscriptions)
        self._on_message_cb = on_message
        self._on_connection_cb = on_connection
        self._connection = 0
        self._lock = threading.Lock()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if username:
            self._client.username_pw_set(username, password or None)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._props.SessionExpiryInterval = session_expiry_s
        self._props.ReceiveMaximum = receive_maximum
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def connection(self) -> int:
        """Number of the current connection; acknowledgements of older ones are skipped."""
        return self._connection

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after a drop."""
        self._client.connect_async(
            self._host,
            self._port,
            keepalive=self._keepalive_s,
            clean_start=False,
            properties=self._props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, refs: Sequence[object]) -> int:
        """Acknowledge messages in the order given; return how many PUBACKs were sent.

        A message received on an earlier connection is not acknowledged: the broker has
        already redelivered it on the current one, where it will be acknowledged again.
        """
        sent = 0
        # Under the lock: a connection that drops meanwhile cannot have our PUBACKs for its
        # packet ids sent on the next one, where the same ids may mean other messages.
        with self._lock:
            current = self._connection
            for ref in refs:
                assert isinstance(ref, AckRef)  # noqa: S101 - refs only ever come from this class
                if ref.qos == 0 or ref.connection != current:
                    continue
                if self._client.ack(ref.mid, ref.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    sent += 1
        return sent

    # -- paho callbacks, on paho's thread --------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._on_connection_cb(False, f"connect refused: {reason}")
            return
        with self._lock:
            self._connection += 1
        # Retained status messages are sent only for a new subscription, not on every
        # reconnect of a persistent session.
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe([(t, opts) for t in self._subscriptions])
        self._on_connection_cb(True, f"connected, session present={flags.session_present}")

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # A new number at once, not only at the next CONNACK: acknowledgements of messages
        # from the lost connection stop here.
        with self._lock:
            self._connection += 1
        self._on_connection_cb(False, f"disconnected: {reason}")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._on_message_cb(
            Inbound(AckRef(msg.mid, msg.qos, self._connection), msg.topic, bytes(msg.payload))
        )
