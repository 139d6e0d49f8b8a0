"""The seam between the service and its MQTT client: what the service needs of a bus.

runtime.mqtt.bus.Bus is the paho-mqtt implementation; runtime.mqtt.fake.FakeBus is an
in-memory one for unit tests of routing, acks and publishing (integration tests use a real
mosquitto).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_config.schema import BrokerConfig
from runtime.mqtt.delivery import Delivery

__all__ = ["MAX_INFLIGHT", "BusCounts", "BusFactory", "DeliveryHandler", "MessageBus", "OutboxLimits"]

MAX_INFLIGHT = 20
"""QoS 1 publications awaiting PUBACK at once (mosquitto's default receive window)."""

DeliveryHandler = Callable[[Delivery], None]
"""Called on the bus's network thread for every delivery; must not block, must not raise."""


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    max_messages: int = 10_000
    max_bytes: int = 16 * 1024 * 1024
    max_inflight: int = MAX_INFLIGHT


@dataclass(slots=True)
class BusCounts:
    """The connection's own exact counts since start (a snapshot is a copy)."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    published: int = 0
    dropped_outgoing: int = 0
    dropped_outgoing_bytes: int = 0
    handler_errors: int = 0
    stale_acks: int = 0


class MessageBus(Protocol):
    """An MQTT connection as the service uses it."""

    availability_topic: str

    @property
    def connected(self) -> bool: ...

    @property
    def outbox_messages(self) -> int: ...

    @property
    def outbox_bytes(self) -> int: ...

    def start(self) -> None: ...

    def wait_connected(self, timeout: float) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> bool:
        """Hand one publication to the client; False (counted) when the bounded outbox is full."""
        ...

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery (only runtime.service.acks calls this)."""
        ...

    def snapshot(self) -> BusCounts: ...

    def stop_input(self) -> None: ...

    def stop(self, *, availability: str = "stopped", timeout: float = 5.0) -> None: ...


class BusFactory(Protocol):
    """Builds the service's bus: runtime.mqtt.bus.Bus, or a fake in unit tests."""

    def __call__(
        self,
        broker: BrokerConfig,
        *,
        prefix: str,
        subscriptions: Sequence[tuple[str, int]],
        on_message: DeliveryHandler,
        limits: OutboxLimits,
        receive_maximum: int,
        retain_as_published: Collection[str],
    ) -> MessageBus: ...
