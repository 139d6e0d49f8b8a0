"""runtime: the edgewatch gateway daemon (no torch).

The data path of one message, folder by folder:

    mqtt/    the broker connection (Bus), the Delivery record, topics, a MessageBus seam and its fake
    ingest/  payload decoding, routing and rejects (Intake), the bounded input queue
    engine/  admission, per-stream state, the batched ONNX Runtime step, scores, hysteresis, alerts
    model/   artifact loading and verification, the session factory, SIGHUP reloads
    state/   checkpoints: format, writer thread, schedule, transfer between engines
    ops/     counts, Prometheus metrics and /healthz, systemd notifications
    service/ the daemon: router, worker, publisher, acks, swap, lifecycle
    commands/ `edgewatch serve|targets|alerts|replay`; tools/ demo, bench, plots, a local broker
"""

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from runtime.engine.alerts import Alert
    from runtime.engine.engine import Engine
    from runtime.engine.replay import Recording, replay
    from runtime.engine.types import Message, Outcome
    from runtime.model.artifact import Artifact, load_artifact
    from runtime.model.session import create_session
    from runtime.mqtt.bus import Bus
    from runtime.mqtt.delivery import Delivery
    from runtime.mqtt.protocol import MessageBus
    from runtime.mqtt.topics import OutputTopics
    from runtime.ops.counts import Counts
    from runtime.service import OutcomeHook, Service

__all__ = [
    "Alert",
    "Artifact",
    "Bus",
    "Counts",
    "Delivery",
    "Engine",
    "Message",
    "MessageBus",
    "Outcome",
    "OutcomeHook",
    "OutputTopics",
    "Recording",
    "Service",
    "create_session",
    "load_artifact",
    "replay",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "Alert": "runtime.engine.alerts",
        "Artifact": "runtime.model.artifact",
        "Bus": "runtime.mqtt.bus",
        "Counts": "runtime.ops.counts",
        "Delivery": "runtime.mqtt.delivery",
        "Engine": "runtime.engine.engine",
        "Message": "runtime.engine.types",
        "MessageBus": "runtime.mqtt.protocol",
        "Outcome": "runtime.engine.types",
        "OutcomeHook": "runtime.service",
        "OutputTopics": "runtime.mqtt.topics",
        "Recording": "runtime.engine.replay",
        "Service": "runtime.service",
        "create_session": "runtime.model.session",
        "load_artifact": "runtime.model.artifact",
        "replay": "runtime.engine.replay",
    },
)
