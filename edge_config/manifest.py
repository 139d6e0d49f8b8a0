"""The artifact contract: `DIR/model.onnx` + `DIR/manifest.json`.

The exporter writes it, the runtime reads it; nothing here imports torch or
onnxruntime. Shapes use the string "batch" (and "time") for dynamic axes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_config.artifact_files import MAX_MANIFEST_BYTES, read_artifact_file
from edge_config.errors import ArtifactError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MODEL_NAME",
    "Calibration",
    "CalibrationEvidence",
    "Features",
    "Manifest",
    "Normalization",
    "OutputKind",
    "ParityResult",
    "ScoreSettings",
    "StateSpec",
    "Task",
    "parse_manifest",
    "read_manifest",
    "read_manifest_bytes",
    "sha256_bytes",
    "write_manifest",
]

MANIFEST_FORMAT = 1
MODEL_NAME = "model.onnx"
MANIFEST_NAME = "manifest.json"

Task = Literal["forecast", "probability"]
"""forecast: the model predicts the next sample; probability: it outputs P(anomaly)."""
OutputKind = Literal["sequence", "last"]
"""sequence: one output per time step; last: one output for a chunk's last step."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Features(_Strict):
    names: list[str]
    count: int

    @model_validator(mode="after")
    def _count_matches(self) -> Features:
        if len(self.names) != self.count:
            raise ValueError(f"features.count is {self.count} but {len(self.names)} names are given")
        if len(set(self.names)) != len(self.names):
            raise ValueError("feature names must be unique")
        return self


class StateSpec(_Strict):
    """One recurrent state tensor: graph input `input` is carried to graph output `output`."""

    input: str
    output: str
    shape: list[int | str]
    """[layers, "batch", hidden] for torch LSTM/GRU state."""
    batch_axis: int = 1
    dtype: Literal["float32"] = "float32"
    module: str = ""
    """Dotted name of the recurrent module inside the user's module ("" for the module itself)."""
    kind: Literal["lstm_h", "lstm_c", "gru_h", "cell", "frames"] = "lstm_h"
    """"cell": a state the user's module declares itself (the step protocol, docs/EXPORT.md);
    "frames": the last input frames of a causal Conv1d, [frames, batch, channels]."""

    @property
    def layers(self) -> int:
        return int(self.shape[0])

    @property
    def hidden(self) -> int:
        return int(self.shape[2])


class Normalization(_Strict):
    """Applied per sample before the model: x_norm = (x - mean) / std."""

    mean: list[float]
    std: list[float]

    def apply(self, values: ArrayLike) -> NDArray[np.float32]:
        """(x - mean) / std per feature in float32 (what the gateway feeds); values [..., F]."""
        x: NDArray[np.float32] = np.asarray(values, dtype=np.float32)
        mean: NDArray[np.float32] = np.asarray(self.mean, dtype=np.float32)
        std: NDArray[np.float32] = np.asarray(self.std, dtype=np.float32)
        return (x - mean) / std


class ScoreSettings(_Strict):
    """How a step's score is computed (runtime.engine.scoring implements it)."""

    kind: Literal["forecast-error", "probability"]
    ewma_alpha: float = Field(0.2, gt=0.0, le=1.0)
    residual_std: list[float] | None = None
    """Per-feature std of the normalized next-step error on normal data (forecast-error)."""
    reduce: Literal["mean", "max", "top-k"] = "mean"
    """How the per-feature smoothed errors become one score: their mean, their max (one failing
    sensor of eight counts fully), or the mean of the top_k largest."""
    top_k: int = Field(2, ge=1)
    """Features averaged by reduce "top-k" (at most the feature count)."""
    feature_cap: float | None = Field(None, gt=0.0)
    """Cap on each feature's squared normalized error before the EWMA (e.g. 25: 5 residual
    stds), so one transient cannot hold the score up; null = no cap."""


class CalibrationEvidence(_Strict):
    """What a calibrated threshold rests on (runtime.engine.thresholds.choose_threshold;
    docs/THRESHOLDS.md). Score units unless `space` is "logit" (probability models)."""

    steps: int
    """Warm scored steps (after each segment's warmup_steps; NaN steps left out)."""
    segments: int
    space: Literal["score", "logit"]
    """"score", or "logit" for probability models (u, scale and peaks are logits)."""
    tail_quantile: float
    """Empirical level of u among the steps' A_t values (e.g. 0.98)."""
    tail_level: float
    """u."""
    exceedances: int
    """Steps whose A_t exceeds u."""
    clusters: int
    """Runs of exceedances (a gap of clear_m steps ends one)."""
    extremal_index: float
    """clusters / exceedances (1: exceedances come alone)."""
    gpd_shape: float
    """ξ of the cluster peaks' excesses over u, kept in [0, 0.45]."""
    gpd_scale: float
    """σ at its 95% upper confidence bound."""
    gpd_scale_estimate: float
    """σ as estimated (before the bound)."""
    pot_threshold: float
    """Where the tail model puts one cluster per target_steps (probability units for probabilities)."""
    replay_floor: float
    """The lowest threshold at which replaying the hysteresis on the data stays within allowed_raises."""
    allowed_raises: int
    """steps // target_steps."""
    replay_raises: int
    """Raises when the hysteresis is replayed on the data at the chosen threshold."""
    expected_false_alerts: float
    """Per target_steps at the chosen threshold, by the tail model (<= 1)."""


class Calibration(_Strict):
    """Score statistics on normal data; the threshold the runtime uses by default."""

    threshold: float
    method: str
    """What set the threshold: "pot", "empirical", "replay", "probability-floor", "max"
    (docs/THRESHOLDS.md), or for older artifacts e.g. "quantile:0.995"."""
    steps: int
    score_mean: float
    score_std: float
    source: str = ""
    target_steps: int | None = None
    """At most one false alert per stream per this many steps on healthy data (null: older rule)."""
    evidence: CalibrationEvidence | None = None
    warnings: list[str] = []
    """Why the calibration data may not support the target, with numbers."""


class ParityResult(_Strict):
    gate: str
    metric: str
    value: float
    tolerance: float
    passed: bool
    detail: str = ""
    skipped: bool = False
    """True when the gate could not run where the export ran (`detail` says why); `passed` is
    then False: a skipped gate proves nothing."""


class Manifest(_Strict):
    format: int = MANIFEST_FORMAT
    name: str
    sha256: str
    versions: dict[str, str]
    """edgewatch, torch, onnx, onnxruntime versions used at export."""
    opset: int
    target: str
    precision: Literal["fp32", "fp16", "int8"]
    quantization: Literal["none", "weights", "dynamic", "fp16", "qdq"]
    """How the precision was reached (edge_config.presets.Quantization); "dynamic" is ORT's
    quantize_dynamic, which cpu-int8 used before "weights": such artifacts still load."""
    providers: list[str]
    """Provider types the artifact is meant for (edge_config.presets)."""
    features: Features
    input: str = "x"
    time_steps: Literal["dynamic", 1] = "dynamic"
    """1 when the graph takes exactly one step per call (unrolled targets)."""
    outputs: list[str]
    """Graph output names; outputs[0] is the model's output, the rest are state outputs."""
    output_kind: OutputKind
    """sequence: outputs[0] is [batch, time, n]; last: [batch, n] for the chunk's last step."""
    output_size: int
    task: Task
    state: list[StateSpec]
    normalization: Normalization | None = None
    score: ScoreSettings
    calibration: Calibration | None = None
    parity: list[ParityResult] = []
    sizes: dict[str, int] = {}
    """Bytes: "model" (this file), "fp32" (the float model before quantization)."""
    notes: list[str] = []
    """Facts about this export a user should know, in words (e.g. which layers stayed float)."""

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        n = self.features.count
        if self.normalization is not None:
            if len(self.normalization.mean) != n or len(self.normalization.std) != n:
                raise ValueError(f"normalization must have {n} entries (one per feature)")
            if any(s <= 0 for s in self.normalization.std):
                raise ValueError("normalization.std must be > 0")
        if self.task == "forecast" and self.output_size != n:
            raise ValueError(f"a forecast model must output {n} values (one per feature)")
        if self.score.residual_std is not None and len(self.score.residual_std) != n:
            raise ValueError(f"score.residual_std must have {n} entries")
        for spec in self.state:
            if spec.output not in self.outputs:
                raise ValueError(f"state output {spec.output!r} is not a graph output")
        return self


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return path


def read_manifest_bytes(directory: Path) -> bytes:
    """DIR/manifest.json's bytes (a regular file under MAX_MANIFEST_BYTES), or an ArtifactError."""
    path = Path(directory) / MANIFEST_NAME
    try:
        return read_artifact_file(path, max_bytes=MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no manifest (expected model.onnx + manifest.json in {directory})") from None


def parse_manifest(raw: bytes, path: Path) -> Manifest:
    """Validate a manifest's bytes (path: for messages)."""
    try:
        doc = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ArtifactError(f"{path}: manifest format {got!r} is not supported (expected {MANIFEST_FORMAT})")
    try:
        return Manifest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{path}: invalid manifest at {where}: {first['msg']}") from None


def read_manifest(directory: Path) -> Manifest:
    """Read and validate DIR/manifest.json (the model bytes are verified by runtime.model.artifact)."""
    return parse_manifest(read_manifest_bytes(directory), Path(directory) / MANIFEST_NAME)
