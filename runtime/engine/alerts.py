"""The alert message: schema (docs/ALERTS.md, docs/schemas/alert.schema.json), stable id, JSON.

An alert's lifecycle is `raised` → `update`* → `cleared`; all three carry the id of the
`raised`, derived from (stream, the raising step's seq — or its ts when the stream sends no
seq —, the model's sha256). A redelivered input that raises again therefore produces the same
id, and consumers can drop duplicates by (id, state).

What an operator reads is derived here, from the fields the tracker sets: the severity (from
score / threshold, SEVERITY_LEVELS) and a one-line `message`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALERT_ID_HEX",
    "SCHEMA_VERSION",
    "SEVERITY_LEVELS",
    "Alert",
    "AlertState",
    "ClearReason",
    "Direction",
    "Severity",
    "TopFeature",
    "alert_id",
    "severity_level",
]

AlertState = Literal["raised", "update", "cleared"]
ClearReason = Literal["evicted"]
"""Why a `cleared` was sent other than by the hysteresis (which sends no reason)."""
Severity = Literal["info", "minor", "major", "critical"]
Direction = Literal["above", "below"]
"""Whether the observed value was above or below what the model expected."""
ALERT_ID_HEX = 16
"""64 bits of sha256: collisions need ~4e9 alerts of one model before they become likely."""
SCHEMA_VERSION = 2
"""`schema_version` of the JSON: 2 added schema_version, model_name, severity, message and the
top features' observed/expected/direction (all additive; version 1 had none of them)."""
SEVERITY_LEVELS: tuple[tuple[float, Severity], ...] = ((10.0, "critical"), (3.0, "major"), (1.0, "minor"))
"""(lowest ratio, severity), highest first; a ratio at or below 1 (not above the threshold, e.g. a
`cleared`) is "info". The ratio is score / threshold; for probability models it is the odds
p / (1 - p) over the threshold's odds, so that 0.99 against 0.5 is critical, not 2x."""
_SEVERITIES: tuple[Severity, ...] = ("info", "minor", "major", "critical")
_SHA_PREFIX = 12


def alert_id(stream: str, seq: int | None, ts: float, model_sha256: str) -> str:
    """Stable id of the alert raised at this step: seq when the stream has one, else ts (seconds)."""
    step = f"seq:{seq}" if seq is not None else f"ts:{float(ts)!r}"
    # JSON keeps the three parts unambiguous whatever characters the stream id holds.
    key = json.dumps([stream, step, model_sha256], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:ALERT_ID_HEX]


def severity_ratio(score: float, threshold: float, *, probability: bool = False) -> float:
    """score / threshold, or for probabilities the odds ratio (inf when p is 1)."""
    if probability:
        p, t = min(max(score, 0.0), 1.0), min(max(threshold, 1e-12), 1.0 - 1e-12)
        return math.inf if p >= 1.0 else (p / (1.0 - p)) / (t / (1.0 - t))
    return score / threshold if threshold > 0 else math.inf


def severity_level(score: float, threshold: float, *, probability: bool = False) -> int:
    """Index into ("info", "minor", "major", "critical") of this score against this threshold."""
    ratio = severity_ratio(score, threshold, probability=probability)
    if not ratio > 1.0:
        return 0
    return next(_SEVERITIES.index(name) for lowest, name in SEVERITY_LEVELS if ratio >= lowest)


@dataclass(frozen=True, slots=True)
class TopFeature:
    """One of the features contributing most to the score, at the alert's step."""

    feature: str
    contribution: float
    """Its share of the score (shares sum to at most the score)."""
    observed: float | None = None
    """The sample's value, in the sensor's units (de-normalized with the manifest's normalization)."""
    expected: float | None = None
    """What the model predicted for that sample, same units (forecast models; None otherwise)."""

    @property
    def direction(self) -> Direction | None:
        if self.observed is None or self.expected is None:
            return None
        return "above" if self.observed > self.expected else "below"

    def to_doc(self) -> dict[str, object]:
        doc: dict[str, object] = {"feature": self.feature, "contribution": float(self.contribution)}
        if self.observed is not None and self.expected is not None:
            doc.update(observed=float(self.observed), expected=float(self.expected), direction=self.direction)
        return doc


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
    """ts of this step, same clock as `started` (an eviction's `cleared`: its last raised/update's)."""
    seq: int | None
    """seq of this step, None when the stream sends none."""
    model: str
    """The model's key in the gateway config."""
    model_sha256: str
    top_features: tuple[TopFeature, ...]
    """Largest share first; the shares sum to at most `score`."""
    reason: ClearReason | None = None
    """Only on a `cleared` the hysteresis did not decide: "evicted" (the stream went silent for
    runtime.idle_ttl_s). Left out of the JSON when None, so older consumers see no change."""
    model_name: str = ""
    """The served artifact's own name (its manifest's): after a reload, the new model's."""
    probability: bool = False
    """A probability model's alert: the severity compares odds (SEVERITY_LEVELS)."""
    evicted_at: float | None = None
    """An eviction's `cleared`: the gateway's wall clock when it forgot the stream."""
    shift: float | None = None
    """The shift detectors' statistic over its limit, the larger of the two, when above 1 at this
    step (runtime.engine.baseline: the CUSUM's S / h, the signed errors' bias / bias_h): the
    stream has stayed off its own level long enough to count as above the threshold, whatever
    this step's score. None otherwise."""

    def __post_init__(self) -> None:
        for name in ("score", "threshold", "started", "ts"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"alert {name} must be finite")

    @property
    def severity(self) -> Severity:
        level = severity_level(self.score, self.threshold, probability=self.probability)
        if self.shift is not None and self.state != "cleared":
            level = max(level, 1)  # a persistent shift under the threshold is at least minor
        return _SEVERITIES[level]

    @property
    def message(self) -> str:
        """One line for a person: what happened, how far past the threshold, and why."""
        what = {"raised": "anomaly", "update": "anomaly continues", "cleared": "back to normal"}[self.state]
        if self.reason == "evicted":
            what = "alert closed: the stream went silent"
        ratio = severity_ratio(self.score, self.threshold, probability=self.probability)
        times = "odds " if self.probability else ""
        line = f"{self.stream}: {what} ({self.severity}, score {self.score:.3g} = {times}{ratio:.3g}x threshold"
        line += f" {self.threshold:.3g})"
        if self.shift is not None and self.state != "cleared":
            line += f", a persistent shift from its own level ({self.shift:.3g}x the detector's limit)"
        why = [
            f"{f.feature} {f.observed:.4g} vs {f.expected:.4g} expected ({f.direction})"
            for f in self.top_features
            if f.observed is not None and f.expected is not None
        ]
        if why and self.state != "cleared":
            line += ": " + ", ".join(why)
        model = self.model_name or self.model
        return f"{line} [model {model} {self.model_sha256[:_SHA_PREFIX]}]"

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
            "top_features": [f.to_doc() for f in self.top_features],
        }
        if self.reason is not None:
            doc["reason"] = self.reason
        if self.evicted_at is not None:
            doc["evicted_at"] = float(self.evicted_at)
        if self.shift is not None:
            doc["shift"] = float(self.shift)
        doc.update(
            schema_version=SCHEMA_VERSION,
            model_name=self.model_name or self.model,
            severity=self.severity,
            message=self.message,
        )
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
