"""What paho's network thread does with one delivery: route, decode, and hand back a queue item.

    input topic        → Message (its `token` is the Ticket the service acks with)
    <prefix>/control/<stream>/reset → Reset
    anything else      → Rejected (reason), acked at once: it will never become valid

Runs on the network thread, so it never blocks and raises only what the bus catches anyway;
every reject is counted by reason and logged at most once per reason every LOG_EVERY_S.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from edge_config.errors import PayloadError
from runtime.ingest.payload import FeatureLayout, Message, PayloadLimits, decode_payload
from runtime.mqtt.bus import Inbound
from runtime.mqtt.topics import MAX_ID_LEVELS, StreamIdResolver, check_stream_id
from runtime.ops.counters import ServiceCounters

__all__ = ["LOG_EVERY_S", "Intake", "RejectLog", "Rejected", "Reset", "Ticket"]

log = logging.getLogger("edgewatch.intake")
LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Ticket:
    """Rides in Message.token: what the service needs to ack the delivery and pick the engine."""

    inbound: Inbound
    model: str


@dataclass(frozen=True, slots=True)
class Reset:
    """A control command, queued with the data so it applies between the stream's messages."""

    stream: str
    inbound: Inbound


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    inbound: Inbound


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
    def __init__(
        self,
        resolver: StreamIdResolver,
        layouts: Mapping[str, tuple[str, FeatureLayout]],
        limits: PayloadLimits,
        *,
        prefix: str,
        counters: ServiceCounters,
    ) -> None:
        """layouts: stream config name → (model name, its FeatureLayout)."""
        self._resolver = resolver
        self._layouts = layouts
        self._limits = limits
        self._prefix = prefix + "/"
        self.control_root = f"{prefix}/control/"
        self._counters = counters
        self._log = RejectLog()

    @property
    def control_filter(self) -> str:
        return self.control_root + "#"

    def accept(self, inbound: Inbound) -> Message | Reset | Rejected | None:
        """The queue item for one delivery; None for a publication of our own topic tree (ignored)."""
        topic = inbound.topic
        if topic is not None and topic.startswith(self.control_root):
            return self._control(topic, inbound)
        if topic is not None and topic.startswith(self._prefix):
            return None  # our own alerts/status/stats, seen through a wide input filter
        self._counters.add("received")
        if topic is None:
            return self._reject("topic-not-utf8", "the topic is not valid UTF-8", inbound, repr(inbound.raw_topic))
        try:
            route = self._resolver.resolve(topic)
            if route is None:
                return self._reject("unrouted", "no stream serves this topic", inbound, topic)
            model, layout = self._layouts[route.config.name]
            values, seq, ts = decode_payload(inbound.payload, layout, self._limits)
        except PayloadError as exc:
            return self._reject(exc.reason, exc.detail, inbound, topic)
        return Message(
            route.stream, values, seq, ts, inbound.received, inbound.received_wall, inbound.mid, Ticket(inbound, model)
        )

    def _control(self, topic: str, inbound: Inbound) -> Reset | Rejected:
        if inbound.retain:
            # A retained command would reset the stream again at every restart.
            return self._reject("control-retained", "retained control messages are ignored", inbound, topic)
        rest = topic[len(self.control_root) :]
        if not rest.endswith("/reset"):
            return self._reject("control-unknown", "expected <prefix>/control/<stream>/reset", inbound, topic)
        try:
            stream = check_stream_id(rest[: -len("/reset")], MAX_ID_LEVELS)
        except PayloadError as exc:  # "control-" keeps control rejects apart from input ones
            return self._reject(f"control-{exc.reason}", exc.detail, inbound, topic)
        return Reset(stream, inbound)

    def _reject(self, reason: str, detail: str, inbound: Inbound, topic: str) -> Rejected:
        self._counters.add_reason("rejected", reason)
        self._log(reason, detail, topic)
        return Rejected(reason, inbound)
