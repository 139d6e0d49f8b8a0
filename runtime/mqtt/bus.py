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
  bytes; what does not fit is dropped, counted exactly and logged (at most once a minute);
  statuses and stats may use only part of it, so alerts still fit (runtime.mqtt.outbox). At
  most MAX_INFLIGHT QoS 1 publications are unacknowledged at a time, after a reconnect too
  (runtime.mqtt.client fixes paho 2.2, which resends them all at once).
- Liveness: a publication held without any confirmation for `broker.ack_timeout_s` while
  connected means the connection is broken (mosquitto 2.0.11 once held 20 unacknowledged
  publications for > 100 s, everything queued behind them): the socket is shut, paho
  reconnects and resends; counted (`ack_timeouts`), logged, and `problem` says so until the
  broker accepts us again. When nothing was published for half of it, an empty QoS 1 probe to
  `<prefix>/probe` checks the broker still answers (a frozen broker keeps the TCP connection).
- Sessions: a connection subscribes when the broker kept no session, at the first connect of
  the process and after a takeover (MQTT 5 asks for retained messages only for subscriptions
  the session lacked); with a persistent session `stop_input()`
  does not unsubscribe, so what is published while the gateway is stopped waits in its session.
  A session taken over by another client with our client id (runtime.mqtt.takeover) is logged,
  counted, reported by `problem`, and the next reconnect waits reconnect_max_s (two gateways
  with one id must not flap twice a second).
- Acks are tagged with the connection they came from: after a reconnect the broker reuses
  packet ids, so a late ack for an old delivery could acknowledge a different new message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import sys
import threading
import time
from collections.abc import Collection, Iterable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_config.schema import BrokerConfig
from runtime.mqtt.client import PahoClient, make_client
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.outbox import DropLog, Outbox
from runtime.mqtt.protocol import BusCounts, DeliveryHandler, OutboxLimits
from runtime.mqtt.takeover import SESSION_TAKEN_OVER, TakeoverWatch
from runtime.mqtt.topics import OutputTopics

__all__ = ["Bus"]

log = logging.getLogger("edgewatch.bus")

_REPEAT_LOG_S = 60.0
_WATCH_S = 0.25  # how often the liveness rule is checked


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
        topics = OutputTopics(prefix)
        self.availability_topic = topics.available
        self._probe_topic = topics.probe
        self._counters = BusCounts()
        self._counter_lock = threading.Lock()
        self._outbox = Outbox(limits)
        self._drops = DropLog(limits)
        self._connected = threading.Event()
        self._connection = 0
        self._broken_connection = -1  # the connection the liveness rule shut (once per connection)
        self._problem: str | None = None
        self._takeovers = TakeoverWatch(broker.reconnect_min_s, broker.reconnect_max_s)
        self._taking_input = True
        self._subscribed_once = False
        self._failures = _RepeatFilter()
        self._refused = False
        self._closing = False
        self._v5 = broker.protocol == "5"
        self._receive_maximum = max(1, min(receive_maximum, 65535))
        self._client_id = client_id or broker.client_id
        self._client = self._build_client(self._client_id)
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="edgewatch-bus-watch", daemon=True)

    # --- setup ---------------------------------------------------------------------------------

    def _build_client(self, client_id: str) -> PahoClient:
        client = make_client(self._broker, client_id, manual_ack=True, max_inflight=self._limits.max_inflight)
        client.max_queued_messages_set(self._limits.max_messages)
        client.will_set(self.availability_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.deliver = self._deliver  # PahoClient's own PUBLISH path (runtime.mqtt.client)
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
        self._watcher.start()

    # --- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def problem(self) -> str | None:
        """Why the connection is not usable now; None when connected and the broker answers."""
        problem = self._problem
        if problem is not None:
            return problem
        return None if self._connected.is_set() else "not connected to the broker"

    @property
    def bulk_room(self) -> int:
        return self._outbox.bulk_room()

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
                self._takeovers.attempt_failed()
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
            self._takeovers.connected(time.monotonic(), session_present=bool(flags.session_present))
            self._count("connects")
            if not flags.session_present:
                self._count("fresh_sessions")
            self._failures.reset()
            self._outbox.restart_clock()
            if not self._takeovers.active:
                self._problem = None
            else:  # back in after a takeover: ready once no other client took it for a while
                self._client.reconnect_delay_set(self._broker.reconnect_min_s, self._broker.reconnect_max_s)  # type: ignore[arg-type]
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
            self.publish(self.availability_topic, b"online", qos=1, retain=True, urgent=True)
            # Subscribe when the broker kept no session, at the first connect of this process (the
            # filters may have changed) and after a takeover (another client with our id used the
            # session: it may have unsubscribed in it). Not at every connect: with the session
            # present, subscribing again made mosquitto 2.0.11 redeliver ~40,000 messages already
            # processed in the broker-restart fault test. Under MQTT 5 retainHandling=1 sends
            # retained messages only for a subscription the session did not have.
            resubscribe = not flags.session_present or not self._subscribed_once or self._takeovers.active
            if self._taking_input and self._subscriptions and resubscribe:
                self._subscribed_once = True
                if self._v5:
                    client.subscribe(
                        [
                            (f, SubscribeOptions(qos=q, retainAsPublished=f in self._keep_retain, retainHandling=1))
                            for f, q in self._subscriptions
                        ]
                    )
                else:  # MQTT 3.1.1 takes a bare QoS (paho refuses SubscribeOptions there)
                    client.subscribe(list(self._subscriptions))
            self._connected.set()
        except Exception:
            log.exception("error in on_connect")

    def _on_connect_fail(self, _client: mqtt.Client, _u: object) -> None:
        # paho calls this inside its `except OSError:` block, so the cause is still at hand.
        try:
            exc = sys.exc_info()[1]
            self._takeovers.attempt_failed()
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
                if self._broken_connection == self._connection:  # the liveness rule said why already
                    return
                if self._takeovers.lost(time.monotonic(), reason.value):
                    self._taken_over(str(reason), said=reason.value == SESSION_TAKEN_OVER)
                    return
                log.warning("disconnected from the broker: %s (reconnecting)", reason)
                return
            if self._refused:
                self._refused = False
                return
            # Closed before a CONNACK: what a TLS broker does to a plaintext client or to a
            # missing client certificate under TLS 1.3 (checked after the handshake).
            self._takeovers.attempt_failed()
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

    def _taken_over(self, reason: str, *, said: bool) -> None:
        """said: the broker gave reason 0x8E; otherwise the pattern of closed connections says so."""
        self._count("takeovers")
        wait = self._broker.reconnect_max_s
        seen = "" if said else "the broker closes our connections within seconds of accepting them: "
        self._problem = (
            f"{seen}another client with our client id {self._client_id!r} takes our session over "
            "(broker.client_id must be unique per gateway)"
        )
        if self._failures.should_log("session taken over"):
            log.error("%s: disconnected (%s); reconnecting in %.1f s", self._problem, reason, wait)
        # paho waits reconnect_min_s after a connection that was accepted: two gateways with one
        # id would take the session from each other twice a second.
        self._client.reconnect_delay_set(wait, wait)  # type: ignore[arg-type]

    def _deliver(self, raw: bytes, payload: bytes, qos: int, mid: int, retain: bool) -> None:
        """One PUBLISH from the network thread (PahoClient.deliver): a Delivery to the handler."""
        if not self._taking_input:  # stopping: left unacknowledged, the next session gets it again
            self._count("deferred")
            return
        try:
            try:
                topic: str | None = raw.decode("utf-8")
            except UnicodeDecodeError:
                topic = None
            delivery = Delivery(topic, raw, payload, qos, mid, retain, time.monotonic(), time.time(), self._connection)
            self._handler(delivery)
        except Exception:  # a paho callback must not raise: it would kill the network thread
            self._count("handler_errors")
            log.exception("the message handler failed (the delivery stays unacknowledged)")

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, _r: ReasonCode, _p: Properties) -> None:
        try:
            self._outbox.confirm(mid)
        except Exception:  # a paho callback must not raise
            log.debug("error in on_publish", exc_info=True)

    # --- liveness (its own thread) ---------------------------------------------------------------

    def _watch(self) -> None:
        timeout = self._broker.ack_timeout_s
        while not self._watch_stop.wait(_WATCH_S):
            try:
                self._check(time.monotonic(), timeout)
            except Exception:  # the watch must outlive any surprise
                log.exception("error in the connection watch")

    def _check(self, now: float, timeout: float) -> None:
        box = self._outbox
        held, waited = box.waiting(now)
        self._drops.flush(held, box.bytes)
        if self._closing or not self._connected.is_set():
            return
        lasted = self._takeovers.settled(now)
        if lasted is not None:
            log.info("no other client took our session over for %.0f s: ready again", lasted)
            self._problem = None
        if held and waited > timeout:
            self._break_connection(held, waited)
        elif not held and waited > timeout / 2:
            # Nothing to confirm for a while: an empty QoS 1 publication proves the broker answers.
            self.publish(self._probe_topic, b"", qos=1, urgent=True)

    def _break_connection(self, held: int, waited: float) -> None:
        connection = self._connection
        if self._broken_connection == connection:
            return
        self._broken_connection = connection
        self._count("ack_timeouts")
        self._problem = (
            f"the broker confirmed no publication for {waited:.1f} s ({held} waiting; "
            f"broker.ack_timeout_s {self._broker.ack_timeout_s:g}): reconnecting"
        )
        log.warning("%s; the connection is treated as broken", self._problem)
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            # The plain socket's shutdown, also under TLS: paho's network thread sees the end of
            # the stream, reports the connection lost, reconnects and resends what it holds.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    # --- used by the service -------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False, urgent: bool = False) -> bool:
        """Hand one publication to paho; False (counted, logged at most once a minute) when the
        bounded outbox is full. urgent: alerts and availability may use the whole outbox."""
        box = self._outbox
        size = len(payload) + len(topic)
        if not box.admits(size, urgent=urgent):
            self._drop(size, urgent)
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        # QoS 1 while disconnected: paho keeps it (rc NO_CONN) and sends it after reconnecting.
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or (info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and qos == 0):
            self._drop(size, urgent)
            return False
        box.add(info.mid, size, qos)
        self._count("published")
        return True

    def _drop(self, size: int, urgent: bool) -> None:
        with self._counter_lock:
            self._counters.dropped_outgoing += 1
            self._counters.dropped_outgoing_bytes += size
            self._counters.dropped_urgent += urgent
        self._drops.dropped(urgent=urgent, held=len(self._outbox.pending), held_bytes=self._outbox.bytes)

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery; skipped (counted) if it came over an earlier connection.
        Only runtime.service.acks calls this."""
        if delivery.qos == 0:
            return
        if delivery.connection != self._connection:
            self._count("stale_acks")
            return
        self._client.ack(delivery.mid, delivery.qos)

    def ack_many(self, deliveries: Iterable[Delivery]) -> None:
        """`ack` for each delivery, the PUBACKs queued as one write (runtime.mqtt.client)."""
        connection, mids, stale = self._connection, [], 0
        for delivery in deliveries:
            if delivery.qos == 1:
                if delivery.connection == connection:
                    mids.append(delivery.mid)
                else:
                    stale += 1
            elif delivery.qos:
                self.ack(delivery)
        if stale:
            self._count("stale_acks", stale)
        self._client.ack_many(mids)

    def stop_input(self) -> bool:
        """Shutdown step 1: stop taking input. Deliveries from now on are left unacknowledged.
        With a persistent session the subscriptions stay, so the broker keeps what is published
        while we are stopped (and redelivers what we left); with a clean session this
        unsubscribes. True if it unsubscribed (deliveries may still be on the wire)."""
        self._taking_input = False
        persistent = self._broker.session_expiry_s > 0
        if persistent or not self._subscriptions or not self.connected:
            return False
        self._client.unsubscribe([f for f, _ in self._subscriptions])
        return True

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
        self._watch_stop.set()
        if self.connected:
            if not self.publish(self.availability_topic, availability.encode(), qos=1, retain=True, urgent=True):
                self._client.publish(self.availability_topic, availability.encode(), qos=1, retain=True)
            if not self.flush(timeout):
                log.warning("stopping with %d publications not confirmed by the broker", len(self._outbox.pending))
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
