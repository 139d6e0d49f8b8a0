"""From a delivery to a queue item: payload decoding, routing and rejects, the bounded input queue."""

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from runtime.ingest.intake import Intake, Rejected, RejectLog, Reset
    from runtime.ingest.payload import REASONS, FeatureLayout, PayloadLimits, decode_payload
    from runtime.ingest.queue import DropPolicy, InputQueue

__all__ = [
    "REASONS",
    "DropPolicy",
    "FeatureLayout",
    "InputQueue",
    "Intake",
    "PayloadLimits",
    "RejectLog",
    "Rejected",
    "Reset",
    "decode_payload",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "DropPolicy": "runtime.ingest.queue",
        "FeatureLayout": "runtime.ingest.payload",
        "InputQueue": "runtime.ingest.queue",
        "Intake": "runtime.ingest.intake",
        "PayloadLimits": "runtime.ingest.payload",
        "REASONS": "runtime.ingest.payload",
        "RejectLog": "runtime.ingest.intake",
        "Rejected": "runtime.ingest.intake",
        "Reset": "runtime.ingest.intake",
        "decode_payload": "runtime.ingest.payload",
    },
)
