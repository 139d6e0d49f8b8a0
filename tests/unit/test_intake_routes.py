"""runtime.ingest.intake: a topic's route is resolved once and remembered; what is refused is not."""

from __future__ import annotations

import time
from types import MappingProxyType

from edge_config.schema import StreamConfig
from runtime.engine.types import Message
from runtime.ingest.intake import Intake, Rejected
from runtime.ingest.payload import FeatureLayout, PayloadLimits
from runtime.mqtt.delivery import Delivery
from runtime.mqtt.topics import OutputTopics, Route, StreamIdResolver
from runtime.ops.counts import Tally

LAYOUT = FeatureLayout(("f0", "f1"), MappingProxyType({"f0": 0, "f1": 1}))
PAYLOAD = b'{"seq": 1, "values": [1, 2]}'


class _CountingResolver(StreamIdResolver):
    def __init__(self) -> None:
        super().__init__([StreamConfig(name="plant", topics=["plant/+/telemetry"], model="m")])
        self.calls: list[str] = []

    def resolve(self, topic: str) -> Route | None:
        self.calls.append(topic)
        return super().resolve(topic)


def _delivery(topic: str) -> Delivery:
    return Delivery(topic, topic.encode(), PAYLOAD, 1, 1, False, time.monotonic(), time.time(), 1)


def _intake(resolver: StreamIdResolver) -> Intake:
    return Intake(resolver, {"plant": ("m", LAYOUT)}, PayloadLimits(), topics=OutputTopics("edgewatch"), tally=Tally())


def test_a_routed_topic_is_resolved_once() -> None:
    resolver = _CountingResolver()
    intake = _intake(resolver)
    first = intake.accept(_delivery("plant/a/telemetry"))
    second = intake.accept(_delivery("plant/a/telemetry"))
    other = intake.accept(_delivery("plant/b/telemetry"))
    assert isinstance(first, Message)
    assert isinstance(second, Message)
    assert isinstance(other, Message)
    assert (first.stream, second.stream, other.stream) == ("a", "a", "b")
    assert (first.model, second.model) == ("m", "m")
    assert resolver.calls == ["plant/a/telemetry", "plant/b/telemetry"]


def test_refused_topics_are_refused_every_time_and_not_remembered() -> None:
    resolver = _CountingResolver()
    intake = _intake(resolver)
    topics = ["elsewhere/a", "elsewhere/a", "plant/$x/telemetry", "plant/$x/telemetry"]
    reasons = []
    for topic in topics:
        item = intake.accept(_delivery(topic))
        assert isinstance(item, Rejected)
        reasons.append(item.reason)
    assert reasons == ["unrouted", "unrouted", "stream-id", "stream-id"]
    assert resolver.calls == topics
