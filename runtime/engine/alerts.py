"""The alert message: schema (docs/ALERTS.md, docs/schemas/alert.schema.json), stable id, JSON.

An alert's lifecycle is `raised` → `update`* → `cleared`; all three carry the id of the
`raised`, derived from (stream, the raising step's seq — or its ts when the stream sends no
seq —, the model's sha256). A redelivered input that raises again therefore produces the same
id, and consumers can drop duplicates by (id, state).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["ALERT_ID_HEX", "Alert", "AlertState", "ClearReason", "alert_id"]

AlertState = Literal["raised", "update", "cleared"]
ClearReason = Literal["evicted"]
"""Why a `cleared` was sent other than by the hysteresis (which sends no reason)."""
ALERT_ID_HEX = 16
"""64 bits of sha256: collisions need ~4e9 alerts of one model before they become likely."""


def alert_id(stream: str, seq: int | None, ts: float, model_sha256: str) -> str:
    """Stable id of the alert raised at this step: seq when the stream has one, else ts (seconds)."""
    step = f"seq:{seq}" if seq is not None else f"ts:{float(ts)!r}"
    # JSON keeps the three parts unambiguous whatever characters the stream id holds.
    key = json.dumps([stream, step, model_sha256], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:ALERT_ID_HEX]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert message, published on `<prefix>/alerts/<stream>`."""

    id: str
    stream: str
    state: AlertState
    score: float
    """The step's score (forecast: EWMA of the normalized squared error; probability: y[0])."""
    threshold: float
    started: float
    """ts of the raising step: seconds since the epoch (payload ts, else arrival wall time)."""
    ts: float
    """ts of this step, same clock as `started`."""
    seq: int | None
    """seq of this step, None when the stream sends none."""
    model: str
    model_sha256: str
    top_features: tuple[tuple[str, float], ...]
    """(feature, its share of the score), largest first; the shares sum to at most `score`."""
    reason: ClearReason | None = None
    """Only on a `cleared` the hysteresis did not decide: "evicted" (the stream went silent for
    runtime.idle_ttl_s). Left out of the JSON when None, so older consumers see no change."""

    def __post_init__(self) -> None:
        for name in ("score", "threshold", "started", "ts"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"alert {name} must be finite")

    def to_json(self) -> bytes:
        """Compact JSON, fields in the order of docs/schemas/alert.schema.json."""
        doc: dict[str, object] = {
            "id": self.id,
            "stream": self.stream,
            "state": self.state,
            "score": float(self.score),
            "threshold": float(self.threshold),
            "started": float(self.started),
            "ts": float(self.ts),
            "seq": self.seq,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "top_features": [{"feature": name, "contribution": float(value)} for name, value in self.top_features],
        }
        if self.reason is not None:
            doc["reason"] = self.reason
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
