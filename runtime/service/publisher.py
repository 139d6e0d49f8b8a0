"""Everything the worker publishes: alerts, retained stream statuses, evictions, stats.

Each publication goes to the bus's bounded outbox; what the outbox refuses is counted
(`alerts_not_sent`) and what it takes is counted by alert state, into the caller's Counts.
"""

from __future__ import annotations

from runtime.engine.alerts import Alert
from runtime.engine.types import Eviction, Outcome
from runtime.mqtt.protocol import MessageBus
from runtime.mqtt.topics import OutputTopics
from runtime.ops.counts import Counts

__all__ = ["Publisher"]


class Publisher:
    def __init__(self, bus: MessageBus, topics: OutputTopics, *, qos: int) -> None:
        """qos: broker.alert_qos, for alerts and statuses (stats go at QoS 0)."""
        self._bus = bus
        self.topics = topics
        self._qos = qos

    def outcome(self, outcome: Outcome, counts: Counts) -> None:
        """The outcome's alerts, in order, then the stream's new status (retained) if it changed."""
        for alert in outcome.alerts:
            self.alert(alert, counts)
        if outcome.stream_status is not None:
            self._retained(outcome.message.stream, outcome.stream_status.encode(), counts)

    def alert(self, alert: Alert, counts: Counts) -> None:
        if self._bus.publish(self.topics.alert(alert.stream), alert.to_json(), qos=self._qos):
            counts.add_reason("alerts", alert.state)
        else:
            counts.alerts_not_sent += 1

    def eviction(self, eviction: Eviction, counts: Counts) -> None:
        """An evicted stream's open alert gets its `cleared` and its retained status is removed, so
        no consumer holds that alert open forever."""
        if eviction.cleared is None:
            return
        self.alert(eviction.cleared, counts)
        # An empty retained message deletes the retained status (MQTT 3.1.1 §3.3.1.3).
        self._retained(eviction.stream, b"", counts)

    def stats(self, payload: bytes) -> None:
        self._bus.publish(self.topics.stats, payload, qos=0)

    def _retained(self, stream: str, payload: bytes, counts: Counts) -> None:
        if not self._bus.publish(self.topics.status(stream), payload, qos=self._qos, retain=True):
            counts.alerts_not_sent += 1
