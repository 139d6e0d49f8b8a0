"""The one error hierarchy of edgewatch.

    EdgewatchError
    ├── ConfigError            a gateway config file is invalid (exit code 2)
    ├── ArtifactError          model.onnx / manifest.json missing, tampered or unreadable
    ├── TargetError            a target/provider cannot run a model as configured
    ├── ExportError            the exporter could not produce an artifact
    │   ├── UnsupportedModelError   the model cannot be streamed (exit code 2)
    │   ├── ExportInputError        an export input (file, option) is missing or invalid (exit code 2)
    │   │   ├── TrainingError       (exporter.training) training data or settings are unusable
    │   │   └── SkabError           (exporter.evaluation) the SKAB folder or a file in it is missing or malformed
    │   └── ParityError             a parity gate failed (exit code 1)
    ├── PayloadError           one MQTT payload was rejected (carries a reason label)
    ├── BatchError             a batch the engine cannot run (values not [T>=1, F]; also a ValueError)
    ├── CheckpointError        a state checkpoint could not be written (or decoded: never raised by load)
    └── BusError               the MQTT connection failed in a way we cannot retry

Every error's message is one line a user can act on.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "BatchError",
    "BusError",
    "CheckpointError",
    "ConfigError",
    "EdgewatchError",
    "ExportError",
    "ExportInputError",
    "ParityError",
    "PayloadError",
    "TargetError",
    "UnsupportedModelError",
]


class EdgewatchError(Exception):
    """Base of every error edgewatch raises on purpose."""

    exit_code: int = 1


class ConfigError(EdgewatchError):
    exit_code = 2


class ArtifactError(EdgewatchError):
    exit_code = 2


class TargetError(EdgewatchError):
    exit_code = 2


class ExportError(EdgewatchError):
    exit_code = 1


class UnsupportedModelError(ExportError):
    exit_code = 2


class ExportInputError(ExportError):
    """Bad export input (weights file, calibration CSV, normalization file, --model-kwargs, --out)."""

    exit_code = 2


class ParityError(ExportError):
    exit_code = 1


class BatchError(EdgewatchError, ValueError):
    """Engine.process refused a batch before touching any state: a message's values are not a
    float32 [T >= 1, F] array. The intake guarantees the shape, so this is a caller's bug (an
    embedding, an evaluation); the service counts the batch as rejected "engine-error"."""


class PayloadError(EdgewatchError):
    """A rejected input message. `reason` is a short, fixed label used as a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class CheckpointError(EdgewatchError):
    """Writing a state checkpoint failed; the previous generations on disk are untouched.

    The service counts and logs it and keeps serving; `runtime.state.checkpoint.load_checkpoint`
    never raises it (a bad file means a fresh start or the previous generation).
    """

    exit_code = 1


class BusError(EdgewatchError):
    exit_code = 1
