"""The one place a delivery is acknowledged.

A delivery is settled exactly once, when its fate is decided: rejected by the intake, dropped
by the queue policy, or stepped with its alerts handed to the MQTT client (a reset: applied).
Until then the broker holds it for us and redelivers it after a crash; the engine drops what
it had already seen by (stream, seq). QoS 0 deliveries need no ack (the bus skips them).
"""

from __future__ import annotations

from collections.abc import Iterable

from runtime.engine.types import Message
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.protocol import MessageBus

__all__ = ["Acks"]


class Acks:
    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus

    def settle(self, delivery: Delivery | None) -> None:
        """Acknowledge one delivery (None: the item came from no delivery, nothing to ack)."""
        if delivery is not None:
            self._bus.ack(delivery)

    def settle_messages(self, messages: Iterable[Message]) -> None:
        """A processed batch's deliveries, in order, as one batch of acks (one write, one wake-up)."""
        self._bus.ack_many([m.delivery for m in messages if m.delivery is not None])
