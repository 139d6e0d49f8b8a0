"""The optional score stream: per stream, its score and threshold on `<prefix>/scores/<stream>`
(runtime.score_stream, off by default; docs/ALERTS.md "Score stream").

A stream's score is published at most every `interval_s` of the gateway's monotonic clock and,
with `min_change`, sooner when score / threshold moved by at least that much since the stream's
last published one. What it costs per processed message while on: a dict lookup and a comparison
(plus the threshold's lookup when `min_change` is set); publications go at QoS 0, not retained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_config.schema import ScoreStreamConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Outcome

__all__ = ["ScorePoint", "ScoreStream"]


@dataclass(frozen=True, slots=True)
class ScorePoint:
    """One publication of the score stream (docs/schemas/score.schema.json)."""

    stream: str
    score: float
    threshold: float
    ts: float
    """The step's ts: the payload's, else the gateway's wall clock at arrival (as alerts)."""
    seq: int | None
    model: str
    """The model's key in the gateway config."""

    def to_json(self) -> bytes:
        doc = {
            "stream": self.stream,
            "score": self.score,
            "threshold": self.threshold,
            "ratio": self.score / self.threshold if self.threshold > 0 else None,
            "ts": self.ts,
            "seq": self.seq,
            "model": self.model,
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


class ScoreStream:
    """Decides which processed messages' last scores are published (worker thread only)."""

    def __init__(self, config: ScoreStreamConfig) -> None:
        self.config = config
        self._last: dict[str, tuple[float, float]] = {}  # stream → (monotonic s, ratio) last published

    def points(self, engine: Engine, outcomes: Sequence[Outcome], now: float) -> list[ScorePoint]:
        """The ScorePoints due among `outcomes` (one model's), at monotonic time `now`."""
        out: list[ScorePoint] = []
        interval, step = self.config.interval_s, self.config.min_change
        for o in outcomes:
            if o.scores is None or not len(o.scores):
                continue
            score = float(o.scores[-1])
            if not math.isfinite(score):
                continue
            stream = o.message.stream
            last = self._last.get(stream)
            due = last is None or now - last[0] >= interval
            if not due and step is None:
                continue
            slot = engine.store.slot(stream)
            if slot is None:
                continue
            threshold = engine.baselines.threshold_of(slot)
            ratio = score / threshold if threshold > 0 else math.inf
            if not due and (last is None or abs(ratio - last[1]) < step):  # type: ignore[operator]
                continue
            self._last[stream] = (now, ratio)
            out.append(ScorePoint(stream, score, threshold, _ts(o), _seq(o), engine.name))
        return out

    def forget(self, stream: str) -> None:
        """The stream was evicted: a later one of the same id starts afresh."""
        self._last.pop(stream, None)


def _ts(outcome: Outcome) -> float:
    m = outcome.message
    return float(m.ts[-1]) if m.ts is not None else m.received_wall


def _seq(outcome: Outcome) -> int | None:
    m = outcome.message
    samples = 1 if np.ndim(m.values) == 1 else len(m.values)  # one sample may come as a list of F floats
    return None if m.seq is None else m.seq + samples - 1
