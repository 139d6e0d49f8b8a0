"""The engine: a batch of Messages → admission → one ONNX Runtime call per round → scores → alerts.

Pure: no threads, no MQTT.
"""

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from runtime.engine.alerts import Alert, alert_id
    from runtime.engine.engine import Engine
    from runtime.engine.replay import Recording, Replay, alert_flags, replay
    from runtime.engine.scoring import Scorer, calibrate, score_sequence
    from runtime.engine.streams import StateStore
    from runtime.engine.tracker import AlertTracker
    from runtime.engine.types import Eviction, InferenceBackend, Message, Outcome, OutcomeStatus, StreamStatus

__all__ = [
    "Alert",
    "AlertTracker",
    "Engine",
    "Eviction",
    "InferenceBackend",
    "Message",
    "Outcome",
    "OutcomeStatus",
    "Recording",
    "Replay",
    "Scorer",
    "StateStore",
    "StreamStatus",
    "alert_flags",
    "alert_id",
    "calibrate",
    "replay",
    "score_sequence",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "Alert": "runtime.engine.alerts",
        "AlertTracker": "runtime.engine.tracker",
        "Engine": "runtime.engine.engine",
        "Eviction": "runtime.engine.types",
        "InferenceBackend": "runtime.engine.types",
        "Message": "runtime.engine.types",
        "Outcome": "runtime.engine.types",
        "OutcomeStatus": "runtime.engine.types",
        "Recording": "runtime.engine.replay",
        "Replay": "runtime.engine.replay",
        "Scorer": "runtime.engine.scoring",
        "StateStore": "runtime.engine.streams",
        "StreamStatus": "runtime.engine.types",
        "alert_flags": "runtime.engine.replay",
        "alert_id": "runtime.engine.alerts",
        "calibrate": "runtime.engine.scoring",
        "replay": "runtime.engine.replay",
        "score_sequence": "runtime.engine.scoring",
    },
)
