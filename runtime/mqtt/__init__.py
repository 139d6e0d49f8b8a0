"""The broker connection: paho-mqtt client, the Delivery record, topics, the MessageBus seam and an in-memory fake."""

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from runtime.mqtt.bus import Bus
    from runtime.mqtt.client import make_client
    from runtime.mqtt.delivery import Delivery
    from runtime.mqtt.fake import FakeBus
    from runtime.mqtt.protocol import MAX_INFLIGHT, BusCounts, BusFactory, DeliveryHandler, MessageBus, OutboxLimits
    from runtime.mqtt.topics import OutputTopics, Route, StreamIdResolver, check_stream_id, topic_matches

__all__ = [
    "MAX_INFLIGHT",
    "Bus",
    "BusCounts",
    "BusFactory",
    "Delivery",
    "DeliveryHandler",
    "FakeBus",
    "MessageBus",
    "OutboxLimits",
    "OutputTopics",
    "Route",
    "StreamIdResolver",
    "check_stream_id",
    "make_client",
    "topic_matches",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "Bus": "runtime.mqtt.bus",
        "BusCounts": "runtime.mqtt.protocol",
        "BusFactory": "runtime.mqtt.protocol",
        "Delivery": "runtime.mqtt.delivery",
        "DeliveryHandler": "runtime.mqtt.protocol",
        "FakeBus": "runtime.mqtt.fake",
        "MAX_INFLIGHT": "runtime.mqtt.protocol",
        "MessageBus": "runtime.mqtt.protocol",
        "OutboxLimits": "runtime.mqtt.protocol",
        "OutputTopics": "runtime.mqtt.topics",
        "Route": "runtime.mqtt.topics",
        "StreamIdResolver": "runtime.mqtt.topics",
        "check_stream_id": "runtime.mqtt.topics",
        "make_client": "runtime.mqtt.client",
        "topic_matches": "runtime.mqtt.topics",
    },
)
