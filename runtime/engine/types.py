"""The engine's vocabulary: what goes in (Message), what comes out (Outcome, Eviction), and
the part of an inference session it needs (InferenceBackend).

Pure data: no threads, no MQTT. A Message may carry the MQTT delivery it came in, opaque to
the engine, so that the service acknowledges exactly that delivery once its outcome is known.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from runtime.engine.alerts import Alert

if TYPE_CHECKING:  # carried, never used: the engine knows nothing of MQTT
    from runtime.mqtt.delivery import Delivery

__all__ = ["Eviction", "InferenceBackend", "Message", "Outcome", "OutcomeStatus", "StreamStatus"]

OutcomeStatus = Literal["processed", "duplicate", "out-of-order", "refused", "seq-jump"]
"""processed: stepped; duplicate: every sample already seen; out-of-order: too late;
refused: a new stream while max_streams streams are active (nothing was stepped); seq-jump: its
seq is too far ahead of the stream's last one (runtime.engine.admission)."""
StreamStatus = Literal["ok", "alert", "warming-up", "learning", "out-of-range", "stale"]
"""The retained status of a stream (docs/RUNTIME.md): warming-up (no warm score yet), learning
(its baseline, runtime.engine.baseline), ok, alert (an alert is open), out-of-range (its scores
are far from anything the model was calibrated on), stale (no sample stepped for
runtime.stale_after_s: silent, or every message rejected or refused)."""


class InferenceBackend(Protocol):
    """The part of onnxruntime.InferenceSession the engine and the exporter's gates use."""

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]: ...


@dataclass(slots=True)
class Message:
    """One accepted input message: a stream's samples, in the model's feature order, raw units."""

    stream: str
    """Stream id (runtime.mqtt.topics)."""
    values: np.ndarray | list[float]
    """float32 [T, F]; or one sample's F numbers as a list (the intake's common case: the engine
    converts a batch of them in one numpy call instead of one per message)."""
    seq: int | None
    """seq of the first sample; sample i has seq + i."""
    ts: np.ndarray | tuple[float] | None
    """float64 [T], seconds since the epoch (a 1-tuple for the intake's single samples), or None."""
    received: float = field(default_factory=time.monotonic)
    """time.monotonic() at arrival (latency, TTL, gaps)."""
    received_wall: float = field(default_factory=time.time)
    """time.time() at arrival (alert ts when the payload has none)."""
    model: str = ""
    """The configured model that serves this stream (set by the intake; "" outside the service)."""
    delivery: Delivery | None = None
    """The MQTT delivery it came in, acknowledged once its outcome is known (None: nothing to ack)."""


@dataclass(slots=True)
class Outcome:
    """What became of one input Message (same order as the input)."""

    message: Message
    status: OutcomeStatus
    steps: int
    """Samples stepped through the model (fewer than T when a seen prefix was dropped)."""
    outputs: np.ndarray | None
    """Raw model outputs [steps, output_size]; None unless processed."""
    scores: np.ndarray | None
    """float64 [steps]; NaN while the scorer has no prediction yet."""
    alerts: list[Alert]
    """To publish, in order."""
    stream_status: StreamStatus | None
    """The stream's new retained status when it changed."""


@dataclass(frozen=True, slots=True)
class Eviction:
    """A stream forgotten after idle_ttl_s, and the `cleared` of the alert it still had open."""

    stream: str
    cleared: Alert | None
