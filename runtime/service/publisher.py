"""Everything the worker publishes: alerts, retained stream statuses, evictions, stats.

`raised` and `cleared` alerts are urgent: they may use the whole outbox, statuses and `update`s
only part of it (runtime.mqtt.outbox), so neither a flood of new streams' statuses nor the
periodic updates of many open alerts can crowd out an alert's start or end. What the outbox refuses is counted
(`alerts_not_sent`, `statuses_not_sent`) and what it takes is counted by alert state, into the
caller's Counts.

A retained status is the level consumers trust, so a refused one is not forgotten: the publisher
keeps each stream's latest status and the streams whose latest is not handed over yet, and
`catch_up` publishes those when the outbox has room again (`statuses_resent`). After the broker
lost our session (`resend_all`: its retained messages may be gone too), every known stream's
status is published again the same way. An evicted stream's retained status is cleared (an empty
retained payload), with or without an open alert.

The optional score stream (runtime.service.scores) goes at QoS 0 and not urgent: while the broker
is away its points are dropped, never queued.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.engine.alerts import Alert
from runtime.engine.engine import Engine
from runtime.engine.types import Eviction, Outcome, StreamStatus
from runtime.mqtt.protocol import MessageBus
from runtime.mqtt.topics import OutputTopics
from runtime.ops.counts import Counts
from runtime.service.scores import ScoreStream

__all__ = ["Publisher"]

_CLEAR = b""  # an empty retained message deletes the retained status (MQTT 3.1.1 §3.3.1.3)
_CATCH_UP_MAX = 1000  # statuses per catch_up call: the worker's turn stays short


class Publisher:
    def __init__(
        self,
        bus: MessageBus,
        topics: OutputTopics,
        *,
        qos: int,
        scores: ScoreStream | None = None,
        shadow: frozenset[str] = frozenset(),
    ) -> None:
        """qos: broker.alert_qos, for alerts and statuses (stats and scores go at QoS 0).
        scores: the score stream, None when runtime.score_stream is off.
        shadow: models of shadow stream entries: their alerts go to <prefix>/shadow/<model>/alerts/
        <stream>, and they publish no status and no scores (the primary model's are the stream's)."""
        self._shadow = shadow
        self._bus = bus
        self.topics = topics
        self._qos = qos
        self._scores = scores
        self._latest: dict[str, bytes] = {}
        """stream → its latest status payload (_CLEAR: evicted, the clear not handed over yet)."""
        self._unsent: dict[str, None] = {}
        """Streams whose latest status the outbox refused, oldest first (an ordered set)."""
        self._sessions = 0  # the bus's fresh_sessions when last looked at

    @property
    def unsent(self) -> int:
        """Streams whose latest retained status is not handed to the MQTT client yet."""
        return len(self._unsent)

    def outcome(self, outcome: Outcome, counts: Counts) -> None:
        """The outcome's alerts, in order, then the stream's new status (retained) if it changed."""
        for alert in outcome.alerts:
            self.alert(alert, counts)
        if outcome.stream_status is not None and outcome.message.model not in self._shadow:
            self._status(outcome.message.stream, outcome.stream_status.encode(), counts)

    def alert(self, alert: Alert, counts: Counts) -> None:
        if alert.model in self._shadow:
            topic = f"{self.topics.prefix}/shadow/{alert.model}/alerts/{alert.stream}"
        else:
            topic = self.topics.alert(alert.stream)
        urgent = alert.state != "update"  # an update repeats what raised said; it gives way first
        if self._bus.publish(topic, alert.to_json(), qos=self._qos, urgent=urgent):
            counts.add_reason("alerts", alert.state)
        else:
            counts.alerts_not_sent += 1

    def scores(self, engine: Engine, outcomes: Sequence[Outcome], now: float) -> None:
        """The score stream's publications due among one model's outcomes (nothing when it is off)."""
        if self._scores is None or engine.name in self._shadow:
            return
        for point in self._scores.points(engine, outcomes, now):
            self._bus.publish(self.topics.score(point.stream), point.to_json(), qos=0)

    def eviction(self, eviction: Eviction, counts: Counts, *, model: str | None = None) -> None:
        """An evicted stream's open alert gets its `cleared`, and its retained status is removed
        (open alert or not: a status nobody updates any more would stay on the broker forever)."""
        if self._scores is not None:
            self._scores.forget(eviction.stream)
        if eviction.cleared is not None:
            self.alert(eviction.cleared, counts)
        if model not in self._shadow:  # a shadow model never published a status
            self._status(eviction.stream, _CLEAR, counts)

    def status(self, stream: str, status: StreamStatus, counts: Counts, *, model: str | None = None) -> None:
        """A stream's new retained status outside an outcome (`stale`: Engine.stale_statuses)."""
        if model not in self._shadow:
            self._status(stream, status.encode(), counts)

    def stats(self, payload: bytes) -> None:
        self._bus.publish(self.topics.stats, payload, qos=0)

    def resend_all(self) -> None:
        """The broker lost our session: publish every known stream's status again (catch_up)."""
        self._unsent = dict.fromkeys(self._latest)

    def catch_up(self, counts: Counts) -> int:
        """After a connection without our session, every known status again; then, while
        connected, unsent statuses as far as the outbox has room (half of it); how many."""
        sessions = self._bus.snapshot().fresh_sessions
        if sessions != self._sessions:
            self._sessions = sessions
            self.resend_all()
        if not self._unsent or self._bus.problem is not None:
            return 0
        budget = min(self._bus.bulk_room // 2, _CATCH_UP_MAX, len(self._unsent))
        sent = 0
        while sent < budget:
            stream = next(iter(self._unsent))
            payload = self._latest.get(stream, _CLEAR)
            if not self._bus.publish(self.topics.status(stream), payload, qos=self._qos, retain=True):
                break
            self._handed_over(stream, payload)
            sent += 1
        counts.statuses_resent += sent
        return sent

    def _status(self, stream: str, payload: bytes, counts: Counts) -> None:
        self._latest[stream] = payload
        if self._bus.publish(self.topics.status(stream), payload, qos=self._qos, retain=True):
            self._handed_over(stream, payload)
        else:
            counts.statuses_not_sent += 1
            self._unsent[stream] = None

    def _handed_over(self, stream: str, payload: bytes) -> None:
        self._unsent.pop(stream, None)
        if payload == _CLEAR:
            self._latest.pop(stream, None)
