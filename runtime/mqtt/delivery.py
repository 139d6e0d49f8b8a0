"""The one record of an MQTT delivery, from paho's callback to the ack.

The bus builds a `Delivery` for every PUBLISH the broker hands us and never acknowledges it
itself: whoever took it (runtime.service.router, then the worker) settles it exactly once,
through runtime.service.acks, after its fate is decided — rejected, dropped by the queue
policy, or stepped with its alerts handed to the MQTT client.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Delivery"]


@dataclass(slots=True)
class Delivery:
    """One delivered MQTT message, not yet acknowledged. Treat it as immutable: it is not frozen
    only because a frozen dataclass's __init__ costs ~2.3 µs more per message (object.__setattr__
    per field), on the network thread's path."""

    topic: str | None
    """None when the topic bytes are not valid UTF-8."""
    raw_topic: bytes
    payload: bytes
    qos: int
    mid: int
    """The packet id the ack names (QoS 1); meaningless for QoS 0."""
    retain: bool
    received: float
    """time.monotonic() at arrival (latency, TTL, gaps)."""
    received_wall: float
    """time.time() at arrival (alert ts when the payload has none)."""
    connection: int
    """Which connection delivered it: an ack over a later connection is skipped (packet ids are
    reused after a reconnect, so it could acknowledge a different message)."""
