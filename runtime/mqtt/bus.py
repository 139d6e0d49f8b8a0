"""The MQTT connection: paho-mqtt 2.x with manual acks, reconnects, availability and a bounded outbox.

What it guarantees to the service:
- `on_message(Delivery)` is called on paho's network thread with a message that is *not yet
  acknowledged*; the bus never acknowledges on its own: the service settles every delivery
  once (runtime.service.acks). Anything the handler raises is caught here (one exception in a
  paho callback kills the network thread), logged and counted (`snapshot().handler_errors`);
  the service's handler catches its own errors and settles, so that stays at zero.
- A topic that is not valid UTF-8 arrives with `topic=None` instead of raising.
- `<prefix>/available`: `online` (retained) after every accepted CONNACK, `offline` as the
  last will (QoS 1, retained), `stopped` from `stop()`.
- A refused CONNACK or a TCP/TLS failure logs one line (again only when the reason changes or
  once a minute), is retried with backoff between reconnect_min_s and reconnect_max_s, and
  never sets `connected`.
- The outbox (what paho holds until the broker acknowledges it) is bounded in messages and
  bytes; what does not fit is dropped and counted exactly. At most MAX_INFLIGHT QoS 1
  publications are unacknowledged at a time, after a reconnect too (runtime.mqtt.client fixes
  paho 2.2, which resends them all at once).
- Acks are tagged with the connection they came from: after a reconnect the broker reuses
  packet ids, so a late ack for an old delivery could acknowledge a different new message.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_config.schema import BrokerConfig
from runtime.mqtt.client import make_client
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.protocol import BusCounts, DeliveryHandler, OutboxLimits
from runtime.mqtt.topics import OutputTopics

__all__ = ["Bus"]

log = logging.getLogger("edgewatch.bus")

_REPEAT_LOG_S = 60.0


@dataclass(slots=True)
class _Outbox:
    """Bytes held by paho per publication mid, until on_publish says the broker has it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[int, tuple[int, int]] = field(default_factory=dict)  # mid → (bytes, qos)
    done_early: set[int] = field(default_factory=set)  # on_publish ran before publish() returned
    bytes: int = 0

    def forget_qos0(self) -> tuple[int, int]:
        """Drop QoS 0 entries (paho discards unsent QoS 0 packets on reconnect); return (count, bytes)."""
        with self.lock:
            lost = [mid for mid, (_, qos) in self.pending.items() if qos == 0]
            size = sum(self.pending.pop(mid)[0] for mid in lost)
            self.bytes -= size
            return len(lost), size


class _RepeatFilter:
    """Say a recurring failure once, again when it changes, and at most once a minute otherwise."""

    def __init__(self) -> None:
        self._last = ""
        self._at = -_REPEAT_LOG_S

    def should_log(self, reason: str) -> bool:
        now = time.monotonic()
        if reason != self._last or now - self._at >= _REPEAT_LOG_S:
            self._last, self._at = reason, now
            return True
        return False

    def reset(self) -> None:
        self._last = ""


class Bus:
    """One paho client; `start()` connects in the background, `stop()` says `stopped` and disconnects."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        prefix: str,
        subscriptions: Sequence[tuple[str, int]],
        on_message: DeliveryHandler,
        limits: OutboxLimits = OutboxLimits(),
        receive_maximum: int = 65535,
        client_id: str | None = None,
        retain_as_published: Collection[str] = (),
    ) -> None:
        """retain_as_published: filters whose deliveries keep the publisher's retain flag (MQTT 5;
        by default a broker clears it on live deliveries, so a retained publication looks live)."""
        self._broker = broker
        self._subscriptions = list(subscriptions)
        self._keep_retain = frozenset(retain_as_published)
        self._handler = on_message
        self._limits = limits
        self.availability_topic = OutputTopics(prefix).available
        self._counters = BusCounts()
        self._counter_lock = threading.Lock()
        self._outbox = _Outbox()
        self._connected = threading.Event()
        self._connection = 0
        self._subscribed_once = False
        self._taking_input = True
        self._failures = _RepeatFilter()
        self._refused = False
        self._closing = False
        self._v5 = broker.protocol == "5"
        self._receive_maximum = max(1, min(receive_maximum, 65535))
        self._client = self._build_client(client_id or broker.client_id)

    # --- setup ---------------------------------------------------------------------------------

    def _build_client(self, client_id: str) -> mqtt.Client:
        client = make_client(self._broker, client_id, manual_ack=True, max_inflight=self._limits.max_inflight)
        client.max_queued_messages_set(self._limits.max_messages)
        client.will_set(self.availability_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _connect_properties(self) -> Properties | None:
        if not self._v5:
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped __init__
        props.SessionExpiryInterval = self._broker.session_expiry_s
        # Asks the broker to keep at most this many QoS 1 deliveries unacknowledged with us (we
        # ack only after processing). mosquitto 2.0.11 overshoots it after acks, so the input
        # queue, not this, is what bounds memory.
        props.ReceiveMaximum = self._receive_maximum
        return props

    def start(self) -> None:
        b = self._broker
        if self._v5:
            self._client.connect_async(
                b.host,
                b.port,
                keepalive=b.keepalive_s,
                clean_start=b.session_expiry_s == 0,
                properties=self._connect_properties(),
            )
        else:
            self._client.connect_async(b.host, b.port, keepalive=b.keepalive_s)
        self._client.loop_start()

    # --- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def snapshot(self) -> BusCounts:
        with self._counter_lock:
            return dataclasses.replace(self._counters)

    @property
    def outbox_bytes(self) -> int:
        return self._outbox.bytes

    @property
    def outbox_messages(self) -> int:
        return len(self._outbox.pending)

    def _count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            setattr(self._counters, name, getattr(self._counters, name) + n)

    # --- paho callbacks (network thread: never block, never raise) -------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, reason: ReasonCode, _p: Properties | None
    ) -> None:
        try:
            if reason.is_failure:
                self._count("connect_failures")
                self._refused = True  # paho's on_disconnect follows: the same failure, not a new one
                if self._failures.should_log(str(reason)):
                    log.error(
                        "broker %s:%d refused the connection: %s (retrying with backoff)",
                        self._broker.host,
                        self._broker.port,
                        reason,
                    )
                return
            self._connection += 1
            self._count("connects")
            self._failures.reset()
            log.info(
                "connected to %s:%d (MQTT %s, session present: %s)",
                self._broker.host,
                self._broker.port,
                self._broker.protocol,
                flags.session_present,
            )
            lost, size = self._outbox.forget_qos0()
            if lost:
                with self._counter_lock:
                    self._counters.dropped_outgoing += lost
                    self._counters.dropped_outgoing_bytes += size
            self.publish(self.availability_topic, b"online", qos=1, retain=True)
            # A broker that kept our session kept our subscriptions; the first connect of this
            # process subscribes anyway, in case the config's filters changed since.
            if self._taking_input and self._subscriptions and (not flags.session_present or not self._subscribed_once):
                if self._v5:
                    client.subscribe(
                        [
                            (f, SubscribeOptions(qos=q, retainAsPublished=f in self._keep_retain))
                            for f, q in self._subscriptions
                        ]
                    )
                else:  # MQTT 3.1.1 takes a bare QoS (paho refuses SubscribeOptions there)
                    client.subscribe(list(self._subscriptions))
                self._subscribed_once = True
            self._connected.set()
        except Exception:
            log.exception("error in on_connect")

    def _on_connect_fail(self, _client: mqtt.Client, _u: object) -> None:
        # paho calls this inside its `except OSError:` block, so the cause is still at hand.
        try:
            exc = sys.exc_info()[1]
            self._count("connect_failures")
            reason = f"{type(exc).__name__}: {exc}" if exc else "unknown error"
            if self._failures.should_log(reason):
                log.error(
                    "cannot connect to %s:%d: %s (retrying with backoff)", self._broker.host, self._broker.port, reason
                )
        except Exception:  # a paho callback must not raise
            log.debug("error in on_connect_fail", exc_info=True)

    def _on_disconnect(
        self, _client: mqtt.Client, _u: object, _f: mqtt.DisconnectFlags, reason: ReasonCode, _p: Properties | None
    ) -> None:
        try:
            was_connected = self._connected.is_set()
            self._connected.clear()
            if self._closing:
                return
            if was_connected:
                self._count("disconnects")
                log.warning("disconnected from the broker: %s (reconnecting)", reason)
                return
            if self._refused:
                self._refused = False
                return
            # Closed before a CONNACK: what a TLS broker does to a plaintext client or to a
            # missing client certificate under TLS 1.3 (checked after the handshake).
            self._count("connect_failures")
            why = "the broker closed the connection before accepting it"
            if self._failures.should_log(why):
                hint = "a client certificate missing or rejected?" if self._broker.tls else "a TLS-only port?"
                log.error(
                    "cannot connect to %s:%d: %s (%s; %s) (retrying with backoff)",
                    self._broker.host,
                    self._broker.port,
                    why,
                    reason,
                    hint,
                )
        except Exception:  # a paho callback must not raise
            log.debug("error in on_disconnect", exc_info=True)

    def _on_message(self, _client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            raw = bytes(msg._topic)  # msg.topic raises on invalid UTF-8
            try:
                topic: str | None = raw.decode("utf-8")
            except UnicodeDecodeError:
                topic = None
            delivery = Delivery(
                topic,
                raw,
                bytes(msg.payload),
                int(msg.qos),
                int(msg.mid),
                bool(msg.retain),
                time.monotonic(),
                time.time(),
                self._connection,
            )
            self._handler(delivery)
        except Exception:  # a paho callback must not raise: it would kill the network thread
            self._count("handler_errors")
            log.exception("the message handler failed (the delivery stays unacknowledged)")

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, _r: ReasonCode, _p: Properties) -> None:
        try:
            box = self._outbox
            with box.lock:
                entry = box.pending.pop(mid, None)
                if entry is None:
                    box.done_early.add(mid)
                else:
                    box.bytes -= entry[0]
        except Exception:  # a paho callback must not raise
            log.debug("error in on_publish", exc_info=True)

    # --- used by the service -------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> bool:
        """Hand one publication to paho; False (and counted) when the bounded outbox is full."""
        box = self._outbox
        size = len(payload) + len(topic)
        if box.bytes + size > self._limits.max_bytes:
            self._drop(size)
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        # QoS 1 while disconnected: paho keeps it (rc NO_CONN) and sends it after reconnecting.
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or (info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and qos == 0):
            self._drop(size)
            return False
        with box.lock:
            if info.mid in box.done_early:
                box.done_early.discard(info.mid)
            else:
                box.pending[info.mid] = (size, qos)
                box.bytes += size
        self._count("published")
        return True

    def _drop(self, size: int) -> None:
        with self._counter_lock:
            self._counters.dropped_outgoing += 1
            self._counters.dropped_outgoing_bytes += size

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery; skipped (counted) if it came over an earlier connection.
        Only runtime.service.acks calls this."""
        if delivery.qos == 0:
            return
        if delivery.connection != self._connection:
            self._count("stale_acks")
            return
        self._client.ack(delivery.mid, delivery.qos)

    def stop_input(self) -> None:
        """Unsubscribe from every input filter (shutdown step 1: stop taking input)."""
        self._taking_input = False
        if self._subscriptions and self.connected:
            self._client.unsubscribe([f for f, _ in self._subscriptions])

    def flush(self, timeout: float) -> bool:
        """Wait until the broker has every QoS 1 publication (True) or the timeout passed (False)."""
        deadline = time.monotonic() + timeout
        while self._outbox.pending or self._client.want_write():
            if time.monotonic() >= deadline or not self.connected:
                return False
            time.sleep(0.01)
        return True

    def stop(self, *, availability: str = "stopped", timeout: float = 5.0) -> None:
        """Publish `availability` (retained), wait for the outbox, disconnect cleanly (no last will)."""
        if self.connected:
            if not self.publish(self.availability_topic, availability.encode(), qos=1, retain=True):
                self._client.publish(self.availability_topic, availability.encode(), qos=1, retain=True)
            if not self.flush(timeout):
                log.warning("stopping with %d publications not confirmed by the broker", len(self._outbox.pending))
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
