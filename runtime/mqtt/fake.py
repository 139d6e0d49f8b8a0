"""An in-memory MessageBus for unit tests of the service's routing, acks and publishing.

It keeps what a test needs to see: every publication (topic, payload, qos, retain), every
acknowledged delivery, and a `deliver()` that calls the handler the way paho's network thread
would. Integration tests use runtime.mqtt.bus.Bus against a real mosquitto instead.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from edge_config.schema import BrokerConfig
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.protocol import BusCounts, DeliveryHandler, OutboxLimits
from runtime.mqtt.topics import OutputTopics

__all__ = ["FakeBus", "Publication"]


@dataclass(frozen=True, slots=True)
class Publication:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class FakeBus:
    """Connected at start(); an outbox of `limits.max_messages` QoS 1 publications that never drains."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        prefix: str,
        subscriptions: Sequence[tuple[str, int]],
        on_message: DeliveryHandler,
        limits: OutboxLimits = OutboxLimits(),
        receive_maximum: int = 65535,
        retain_as_published: Collection[str] = (),
    ) -> None:
        self.broker = broker
        self.subscriptions = list(subscriptions)
        self.retain_as_published = frozenset(retain_as_published)
        self.receive_maximum = receive_maximum
        self.availability_topic = OutputTopics(prefix).available
        self._handler = on_message
        self._limits = limits
        self._lock = threading.Lock()
        self._mids = itertools.count(1)
        self._connected = threading.Event()
        self.connection = 1
        self.published: list[Publication] = []
        self.acked: list[Delivery] = []
        self.outbox: list[Publication] = []
        """QoS 1 publications not yet confirmed (a fake broker confirms none)."""
        self.events: list[tuple[str, str | int]] = []
        """("publish", topic) and ("ack", mid), in the order they happened."""
        self.counts = BusCounts()
        self.taking_input = True

    # --- MessageBus ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def outbox_messages(self) -> int:
        return len(self.outbox)

    @property
    def outbox_bytes(self) -> int:
        return sum(len(p.payload) + len(p.topic) for p in self.outbox)

    @property
    def problem(self) -> str | None:
        return None if self.connected else "not connected to the broker"

    @property
    def bulk_room(self) -> int:
        return max(0, self._limits.bulk_room(len(self.outbox), self.outbox_bytes)[0])

    def start(self) -> None:
        self._connected.set()
        self.counts.connects += 1
        self.publish(self.availability_topic, b"online", qos=1, retain=True, urgent=True)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False, urgent: bool = False) -> bool:
        publication = Publication(topic, payload, qos, retain)
        with self._lock:
            room = self._limits.max_messages - len(self.outbox)
            if not urgent:
                room = self._limits.bulk_room(len(self.outbox), 0)[0]
            if qos > 0 and room < 1:
                self.counts.dropped_outgoing += 1
                self.counts.dropped_outgoing_bytes += len(payload) + len(topic)
                self.counts.dropped_urgent += urgent
                return False
            if qos > 0:
                self.outbox.append(publication)
            self.published.append(publication)
            self.events.append(("publish", topic))
            self.counts.published += 1
        return True

    def ack(self, delivery: Delivery) -> None:
        with self._lock:
            if delivery.qos == 0:
                return
            if delivery.connection != self.connection:
                self.counts.stale_acks += 1
                return
            self.acked.append(delivery)
            self.events.append(("ack", delivery.mid))

    def ack_many(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            self.ack(delivery)

    def snapshot(self) -> BusCounts:
        with self._lock:
            return BusCounts(**{name: getattr(self.counts, name) for name in BusCounts.__dataclass_fields__})

    def stop_input(self) -> bool:
        self.taking_input = False
        return False

    def stop(self, *, availability: str = "stopped", timeout: float = 5.0) -> None:
        self.publish(self.availability_topic, availability.encode(), qos=1, retain=True, urgent=True)
        self._connected.clear()

    # --- for tests -------------------------------------------------------------------------------
    def deliver(
        self, topic: str | bytes, payload: bytes, *, qos: int = 1, retain: bool = False, connection: int | None = None
    ) -> Delivery:
        """Hand one delivery to the handler as paho's network thread would; returns it."""
        raw = topic if isinstance(topic, bytes) else topic.encode()
        try:
            text: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        delivery = Delivery(
            text,
            raw,
            payload,
            qos,
            next(self._mids),
            retain,
            time.monotonic(),
            time.time(),
            self.connection if connection is None else connection,
        )
        self._handler(delivery)
        return delivery

    def on(self, topic_prefix: str) -> list[Publication]:
        """Publications whose topic starts with `topic_prefix`, in order."""
        with self._lock:
            return [p for p in self.published if p.topic.startswith(topic_prefix)]
