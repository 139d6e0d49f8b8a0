"""The seam between the service and its MQTT client: what the service needs of a bus.

runtime.mqtt.bus.Bus is the paho-mqtt implementation; runtime.mqtt.fake.FakeBus is an
in-memory one for unit tests of routing, acks and publishing (integration tests use a real
mosquitto).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_config.schema import BrokerConfig
from runtime.mqtt.delivery import Delivery

__all__ = [
    "MAX_INFLIGHT",
    "URGENT_SHARE",
    "BusCounts",
    "BusFactory",
    "DeliveryHandler",
    "MessageBus",
    "OutboxLimits",
]

MAX_INFLIGHT = 20
"""QoS 1 publications awaiting PUBACK at once (mosquitto's default receive window)."""

URGENT_SHARE = 0.25
"""Share of the outbox (messages and bytes) only urgent publications (alerts, availability) may
use: statuses and stats are refused first, so a flood of statuses cannot crowd out an alert."""

DeliveryHandler = Callable[[Delivery], None]
"""Called on the bus's network thread for every delivery; must not block, must not raise."""


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    max_messages: int = 10_000
    max_bytes: int = 16 * 1024 * 1024
    max_inflight: int = MAX_INFLIGHT

    def bulk_room(self, messages: int, size: int) -> tuple[int, int]:
        """(messages, bytes) a non-urgent publication may still take with `messages`, `size` held."""
        keep = 1 - URGENT_SHARE
        return int(self.max_messages * keep) - messages, int(self.max_bytes * keep) - size


@dataclass(slots=True)
class BusCounts:
    """The connection's own exact counts since start (a snapshot is a copy)."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    published: int = 0
    dropped_outgoing: int = 0
    dropped_outgoing_bytes: int = 0
    dropped_urgent: int = 0
    """Of dropped_outgoing: alerts and availability (the rest are statuses and stats)."""
    handler_errors: int = 0
    stale_acks: int = 0
    ack_timeouts: int = 0
    """Connections dropped because a publication stayed unacknowledged past broker.ack_timeout_s."""
    takeovers: int = 0
    """Times another client with our client id took our session over (reason 0x8E, or closed connections)."""
    fresh_sessions: int = 0
    """Accepted connections where the broker held no session for us (first start, lost session)."""
    deferred: int = 0
    """Deliveries left unacknowledged after stop_input (the broker redelivers them next session)."""


class MessageBus(Protocol):
    """An MQTT connection as the service uses it."""

    availability_topic: str

    @property
    def connected(self) -> bool: ...

    @property
    def outbox_messages(self) -> int: ...

    @property
    def outbox_bytes(self) -> int: ...

    @property
    def problem(self) -> str | None:
        """Why the connection is not usable now (None: connected and the broker answers)."""
        ...

    @property
    def bulk_room(self) -> int:
        """How many more non-urgent publications the outbox takes now."""
        ...

    def start(self) -> None: ...

    def wait_connected(self, timeout: float) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False, urgent: bool = False) -> bool:
        """Hand one publication to the client; False (counted) when the bounded outbox is full.
        urgent (alerts): may use the whole outbox; others only 1 - URGENT_SHARE of it."""
        ...

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery (only runtime.service.acks calls this)."""
        ...

    def ack_many(self, deliveries: Iterable[Delivery]) -> None:
        """`ack` each delivery, in order (a batch's acks; a client may send them as one write)."""
        ...

    def snapshot(self) -> BusCounts: ...

    def stop_input(self) -> bool:
        """Stop taking input; True if that unsubscribed (deliveries may still be on the wire)."""
        ...

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
