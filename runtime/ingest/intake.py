"""What paho's network thread does with one delivery: route, decode, and hand back a queue item.

    input topic                      → Message (carrying its Delivery, for the ack)
    <prefix>/control/<stream>/reset  → Reset
    anything else                    → Rejected (reason): settled at once, it will never become valid
    our own alerts/status/stats      → None (seen through a wide input filter; settled, not counted)

Runs on the network thread, so it never blocks and raises only what the router catches anyway;
every reject is counted by reason and logged at most once per reason every LOG_EVERY_S.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from edge_config.errors import PayloadError
from runtime.engine.types import Message
from runtime.ingest.payload import FeatureLayout, PayloadLimits, decode_samples
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.topics import OutputTopics, StreamIdResolver
from runtime.ops.counts import Tally

__all__ = ["LOG_EVERY_S", "Intake", "RejectLog", "Rejected", "Reset"]

log = logging.getLogger("edgewatch.intake")
LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Reset:
    """A control command, queued with the data so it applies between the stream's messages."""

    stream: str
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Rejected:
    """A delivery that will never become valid (counted and logged by the intake)."""

    reason: str
    delivery: Delivery


class RejectLog:
    """One log line per reason at first, then a summary at most every LOG_EVERY_S (a flood stays quiet)."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self._every = every_s
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def __call__(self, reason: str, detail: str, topic: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next.get(reason, 0.0):
                self._quiet[reason] = self._quiet.get(reason, 0) + 1
                return
            self._next[reason] = now + self._every
            quiet = self._quiet.pop(reason, 0)
        more = f" (+{quiet} more since the last line)" if quiet else ""
        log.warning("rejected a message on %s: %s: %s%s", ascii(topic)[1:-1][:120], reason, detail[:200], more)


class Intake:
    """Routes and decodes deliveries into queue items, counting what it receives and rejects."""

    def __init__(
        self,
        resolver: StreamIdResolver,
        layouts: Mapping[str, tuple[str, FeatureLayout]],
        limits: PayloadLimits,
        *,
        topics: OutputTopics,
        tally: Tally,
    ) -> None:
        """layouts: stream config name → (model name, its FeatureLayout)."""
        self._resolver = resolver
        self._layouts = layouts
        self._limits = limits
        self._topics = topics
        self._tally = tally
        self._log = RejectLog()

    def accept(self, delivery: Delivery) -> Message | Reset | Rejected | None:
        """The queue item for one delivery; None for a publication of our own topic tree (ignored)."""
        topic = delivery.topic
        if topic is not None and self._topics.is_control(topic):
            return self._control(topic, delivery)
        if topic is not None and self._topics.is_own(topic):
            return None  # our own alerts/status/stats, seen through a wide input filter
        self._tally.add("received")
        if topic is None:
            return self._reject("topic-not-utf8", "the topic is not valid UTF-8", delivery, repr(delivery.raw_topic))
        try:
            route = self._resolver.resolve(topic)
            if route is None:
                return self._reject("unrouted", "no stream serves this topic", delivery, topic)
            model, layout = self._layouts[route.config.name]
            values, seq, ts = decode_samples(delivery.payload, layout, self._limits)
        except PayloadError as exc:
            return self._reject(exc.reason, exc.detail, delivery, topic)
        return Message(route.stream, values, seq, ts, delivery.received, delivery.received_wall, model, delivery)

    def _control(self, topic: str, delivery: Delivery) -> Reset | Rejected:
        if delivery.retain:
            # A retained command would reset the stream again at every restart.
            return self._reject("control-retained", "retained control messages are ignored", delivery, topic)
        try:
            return Reset(self._topics.reset_target(topic), delivery)
        except PayloadError as exc:
            return self._reject(exc.reason, exc.detail, delivery, topic)

    def _reject(self, reason: str, detail: str, delivery: Delivery, topic: str) -> Rejected:
        self._tally.add_reason("rejected", reason)
        self._log(reason, detail, topic)
        return Rejected(reason, delivery)
