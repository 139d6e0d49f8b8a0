"""What paho's network thread does with one delivery: route, decode, and hand back a queue item.

    input topic                      → Message (carrying its Delivery, for the ack)
    <prefix>/control/<stream>/reset  → Reset
    anything else                    → Rejected (reason): settled at once, it will never become valid
    our own alerts/status/stats      → None (seen through a wide input filter; settled, not counted)

Runs on the network thread, so it never blocks and raises only what the router catches anyway;
every reject is counted by reason and logged at most once per reason every LOG_EVERY_S.

Bounds on what one publisher can do (IntakeBounds, from RuntimeConfig; docs/RELIABILITY.md):
    ts-range     a ts before MIN_TS (2000-01-01) or more than max_ts_future_s ahead of the
                 gateway's clock (not checked while that clock itself reads before MIN_TS: a
                 gateway that booted without a real-time clock must not refuse everything)
    reset-rate   a reset command for a stream reset less than reset_min_interval_s ago

Shadow entries (StreamConfig.shadow): `copies` decodes an accepted message again for every shadow
entry whose filters match its topic, against that entry's model. A copy carries no delivery (the
primary decides the ack); one that fails (stream id, payload) is counted as rejected
"shadow-<reason>" and dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge_config.errors import PayloadError
from edge_config.schema import RuntimeConfig, StreamConfig
from runtime.engine.types import Message
from runtime.ingest.payload import FeatureLayout, PayloadLimits, decode_samples
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.topics import OutputTopics, Route, StreamIdResolver
from runtime.ops.counts import Tally

__all__ = ["LOG_EVERY_S", "MIN_TS", "Intake", "IntakeBounds", "RejectLog", "Rejected", "Reset", "ResetLimiter"]

log = logging.getLogger("edgewatch.intake")
LOG_EVERY_S = 10.0
MIN_TS = 946_684_800.0
"""2000-01-01T00:00:00Z: no sample of a running machine is older (a ts in seconds since the epoch)."""
_RESET_MEMORY = 65_536  # streams whose last reset time is remembered (oldest forgotten first)
_ROUTE_CACHE = 65_536  # topics whose route is remembered (Intake._route)
_ROUTE_TOPIC_MAX = 256
_Known = tuple[Route, str, FeatureLayout] | None
"""A topic's route, model name and feature layout; None: no stream serves it."""


@dataclass(frozen=True, slots=True)
class IntakeBounds:
    """What the intake refuses beyond the payload contract; None switches a bound off."""

    max_ts_future_s: float | None = None
    """A ts more than this ahead of the gateway's wall clock is rejected ("ts-range")."""
    min_ts: float | None = None
    """A ts before this (seconds since the epoch) is rejected ("ts-range")."""
    reset_min_interval_s: float | None = None
    """A stream's reset commands closer together than this are rejected ("reset-rate")."""

    @classmethod
    def from_runtime(cls, runtime: RuntimeConfig) -> IntakeBounds:
        return cls(
            max_ts_future_s=runtime.max_ts_future_s,
            min_ts=MIN_TS if runtime.max_ts_future_s is not None else None,
            reset_min_interval_s=runtime.reset_min_interval_s,
        )


class ResetLimiter:
    """At most one reset per stream per interval (monotonic s); remembers the last _RESET_MEMORY streams."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._last: OrderedDict[str, float] = OrderedDict()  # oldest reset first
        self._lock = threading.Lock()

    def allow(self, stream: str, now: float) -> bool:
        with self._lock:
            last = self._last.get(stream)
            if last is not None and now - last < self._interval:
                return False
            self._last[stream] = now
            self._last.move_to_end(stream)
            while self._last and (
                len(self._last) > _RESET_MEMORY or now - next(iter(self._last.values())) >= self._interval
            ):
                self._last.popitem(last=False)
            return True


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
        bounds: IntakeBounds = IntakeBounds(),
        shadows: Sequence[StreamConfig] = (),
    ) -> None:
        """layouts: stream config name → (model name, its FeatureLayout), shadow entries included;
        resolver: the primary entries only; shadows: the shadow entries."""
        self._resolver = resolver
        self._layouts = layouts
        self._limits = limits
        self._topics = topics
        self._tally = tally
        self._log = RejectLog()
        self._routes: dict[str, _Known] = {}
        self._bounds = bounds
        interval = bounds.reset_min_interval_s
        self._resets = None if interval is None else ResetLimiter(interval)
        self._shadows = [StreamIdResolver([s]) for s in shadows]

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
            known = self._routes[topic] if topic in self._routes else self._route(topic)
            if known is None:
                return self._reject("unrouted", "no stream serves this topic", delivery, topic)
            route, model, layout = known
            values, seq, ts = decode_samples(delivery.payload, layout, self._limits)
        except PayloadError as exc:
            return self._reject(exc.reason, exc.detail, delivery, topic)
        if ts is not None:
            problem = self._implausible(ts, delivery.received_wall)
            if problem:
                return self._reject("ts-range", problem, delivery, topic)
        return Message(route.stream, values, seq, ts, delivery.received, delivery.received_wall, model, delivery)

    def _route(self, topic: str) -> _Known:
        """resolve() once per topic (its split, match and stream id checks cost more than the
        decode): the route of a topic cannot change while this intake lives. Only routed topics
        of at most _ROUTE_TOPIC_MAX characters are remembered, at most _ROUTE_CACHE of them, so
        junk topics cannot grow it; an unsafe stream id raises and is not remembered."""
        route = self._resolver.resolve(topic)
        if route is None:
            return None
        known = (route, *self._layouts[route.config.name])
        if len(topic) <= _ROUTE_TOPIC_MAX and len(self._routes) < _ROUTE_CACHE:
            self._routes[topic] = known
        return known

    def copies(self, message: Message) -> list[Message]:
        """The accepted `message` again for each shadow entry serving its topic (no delivery)."""
        if not self._shadows or message.delivery is None or message.delivery.topic is None:
            return []
        topic, payload = message.delivery.topic, message.delivery.payload
        out = []
        for resolver in self._shadows:
            try:
                route = resolver.resolve(topic)
                if route is None:
                    continue
                model, layout = self._layouts[route.config.name]
                values, seq, ts = decode_samples(payload, layout, self._limits)
            except PayloadError as exc:
                self._tally.add_reason("rejected", f"shadow-{exc.reason}")
                continue
            out.append(Message(route.stream, values, seq, ts, message.received, message.received_wall, model))
        return out

    def _implausible(self, ts: np.ndarray | tuple[float], wall_now: float) -> str | None:
        """Why the message's ts [T] (a 1-tuple for one sample) cannot be a real sample's time, or None."""
        bounds = self._bounds
        low, high = (ts[0], ts[0]) if type(ts) is tuple else (float(np.min(ts)), float(np.max(ts)))
        if bounds.min_ts is not None and low < bounds.min_ts:
            return f'"ts" {low:.0f} is before {bounds.min_ts:.0f} (year 2000)'
        future = bounds.max_ts_future_s
        if future is not None and wall_now >= MIN_TS and high > wall_now + future:
            return f'"ts" {high:.0f} is more than {future:.0f} s ahead of the gateway clock'
        return None

    def _control(self, topic: str, delivery: Delivery) -> Reset | Rejected:
        if delivery.retain:
            # A retained command would reset the stream again at every restart.
            return self._reject("control-retained", "retained control messages are ignored", delivery, topic)
        try:
            stream = self._topics.reset_target(topic)
        except PayloadError as exc:
            return self._reject(exc.reason, exc.detail, delivery, topic)
        if self._resets is not None and not self._resets.allow(stream, delivery.received):
            interval = self._bounds.reset_min_interval_s
            return self._reject(
                "reset-rate", f"{stream[:80]!r} was reset less than {interval:g} s ago", delivery, topic
            )
        return Reset(stream, delivery)

    def _reject(self, reason: str, detail: str, delivery: Delivery, topic: str) -> Rejected:
        self._tally.add_reason("rejected", reason)
        self._log(reason, detail, topic)
        return Rejected(reason, delivery)
