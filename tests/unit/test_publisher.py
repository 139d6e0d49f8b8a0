"""runtime.service.publisher: which alerts may use the whole outbox."""

from __future__ import annotations

from edge_config.schema import BrokerConfig
from runtime.engine.alerts import Alert, AlertState
from runtime.mqtt.fake import FakeBus
from runtime.mqtt.protocol import OutboxLimits
from runtime.mqtt.topics import OutputTopics
from runtime.ops.counts import Counts
from runtime.service.publisher import Publisher


def _alert(state: AlertState, stream: str) -> Alert:
    return Alert(
        id="0" * 16,
        stream=stream,
        state=state,
        score=3.0,
        threshold=1.0,
        started=1.7e9,
        ts=1.7e9,
        seq=1,
        model="m",
        model_sha256="0" * 64,
        top_features=(),
    )


def test_updates_give_way_to_raised_and_cleared_when_the_outbox_is_nearly_full() -> None:
    bus = FakeBus(
        BrokerConfig(), prefix="edgewatch", subscriptions=[], on_message=lambda d: None, limits=OutboxLimits(8)
    )
    publisher = Publisher(bus, OutputTopics("edgewatch"), qos=1)
    counts = Counts()
    for i in range(6):  # the first 6 of 8 slots: the share anything may use
        publisher.alert(_alert("update", f"s{i}"), counts)
    publisher.alert(_alert("update", "s6"), counts)  # refused: only raised/cleared use the rest
    publisher.alert(_alert("raised", "s7"), counts)
    publisher.alert(_alert("cleared", "s0"), counts)
    assert counts.alerts == {"update": 6, "raised": 1, "cleared": 1}
    assert counts.alerts_not_sent == 1
    assert [p.topic for p in bus.outbox][-2:] == ["edgewatch/alerts/s7", "edgewatch/alerts/s0"]
