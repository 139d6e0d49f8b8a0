"""Per-step anomaly scores (online `Scorer`, offline `score_sequence`, `calibrate`) and hysteresis.

forecast: y[t] predicts the normalized sample t+1, so step t is scored against the previous
step's prediction p = y[t-1]:

    e_f = (p_f - x_f) / residual_std_f                   (x normalized; residual_std 1 if absent)
    q_f = min(e_f², feature_cap)                         (no cap unless score.feature_cap is set)
    c_f ← q_f  on a stream's first scored step, else  c_f ← α·q_f + (1 - α)·c_f      (per feature)
    score = mean_f c_f      (reduce "mean": the EWMA of mean_f q_f, the EWMA is linear)
          | max_f c_f       (reduce "max": one failing sensor of eight counts fully)
          | mean of the top_k largest c_f                  (reduce "top-k")

A stream's first step (and the first after a model reset) has no prediction: its score is NaN,
which the tracker treats as warming up. Feature f's share of the score (top_features) is c_f / F
for "mean", c_f / top_k for "top-k" and c_f for "max".

probability: score = y[..., 0], unsmoothed (the head's output is already the quantity to threshold).

The online scorer and `score_sequence` run the same kernel, one time step at a time with
vectorized features (and streams), so they produce identical numbers however a stream's samples
are split into messages. `calibrate` chooses the threshold with runtime.engine.thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edge_config.errors import ConfigError
from edge_config.manifest import Calibration, Manifest, Normalization, ScoreSettings, Task
from edge_config.schema import AlertPolicy, ModelConfig
from runtime.engine.alerts import TopFeature
from runtime.engine.streams import StateStore
from runtime.engine.thresholds import DEFAULT_TARGET_STEPS, choose_threshold
from runtime.engine.tracker import AlertTracker

__all__ = [
    "AlertTracker",
    "Scorer",
    "calibrate",
    "resolve_score_settings",
    "resolve_threshold",
    "score_sequence",
]

Floats = NDArray[np.float64]

_OVERRIDES = ("ewma_alpha", "reduce", "top_k", "feature_cap")
"""ModelConfig fields that override the manifest's ScoreSettings of the same name (null: keep)."""


def resolve_score_settings(manifest: Manifest, model: ModelConfig) -> ScoreSettings:
    """The manifest's score settings with the config's overrides (ewma_alpha, reduce, top_k,
    feature_cap) applied. An override changes the score the calibrated threshold was chosen on."""
    update = {name: getattr(model, name) for name in _OVERRIDES if getattr(model, name) is not None}
    if not update:
        return manifest.score
    return ScoreSettings.model_validate({**manifest.score.model_dump(), **update})


def resolve_threshold(manifest: Manifest, model: ModelConfig, name: str) -> float:
    """models.<name>.threshold, else the manifest's calibrated threshold; refuse to guess one."""
    if model.threshold is not None:
        return float(model.threshold)
    if manifest.calibration is not None:
        return float(manifest.calibration.threshold)
    raise ConfigError(f"models.{name}: no threshold: export with --calibration or set models.{name}.threshold")


def _inverse_residual_std(settings: ScoreSettings, features: int) -> np.ndarray:
    if settings.residual_std is None:
        return np.ones(features)
    if len(settings.residual_std) != features:
        raise ConfigError(f"score.residual_std has {len(settings.residual_std)} entries for {features} features")
    return 1.0 / np.asarray(settings.residual_std, dtype=np.float64)


class _Kernel:
    """The forecast score's arithmetic, shared by the online Scorer and score_sequence."""

    def __init__(self, settings: ScoreSettings, features: int) -> None:
        self.inv_std = _inverse_residual_std(settings, features)
        self.alpha = settings.ewma_alpha
        self.cap = settings.feature_cap
        self.reduce = settings.reduce
        if settings.reduce == "top-k" and settings.top_k > features:
            raise ConfigError(f"score.top_k is {settings.top_k} for {features} features")
        self.k = settings.top_k
        self.share_divisor = {"mean": features, "max": 1, "top-k": self.k}[settings.reduce]

    def run(
        self,
        prev: Floats,
        contrib: Floats,
        x: np.ndarray,
        y: np.ndarray,
        scale: Floats | None = None,
        squares: Floats | None = None,
        errors: Floats | None = None,
    ) -> Floats:
        """Score T steps of B streams; prev, contrib float64 [B, F] are updated in place.

        prev: the last prediction (NaN: none); contrib: per-feature EWMA (NaN: none yet);
        x: normalized samples [B, T, F]; y: predictions [B, T, F]. Returns scores float64 [B, T].
        scale: float64 [B, F], each stream's own error scale per feature (runtime.engine.baseline;
        None: 1); squares: float64 [B, T, F], filled with the squared errors before that scale;
        errors: float64 [B, T, F], filled with the signed errors e_f (runtime.engine.shift).
        """
        steps, alpha = x.shape[1], self.alpha
        scores = np.empty((x.shape[0], steps))
        for t in range(steps):
            err = (prev - x[:, t]) * self.inv_std
            if errors is not None:
                errors[:, t] = err
            sq = err * err
            if squares is not None:
                squares[:, t] = sq
            if scale is not None:
                sq = sq / scale
            if self.cap is not None:
                sq = np.minimum(sq, self.cap)  # NaN (no prediction yet) stays NaN
            fresh = np.isnan(contrib)  # no EWMA yet: it starts at this step's term
            if np.count_nonzero(fresh):
                contrib[...] = np.where(fresh, sq, alpha * sq + (1.0 - alpha) * contrib)
            else:  # the same arithmetic in place: (1 - alpha) * c, then + alpha * q
                contrib *= 1.0 - alpha
                contrib += alpha * sq
            scores[:, t] = self._reduce(contrib)
            prev[...] = y[:, t]
        return scores

    def _reduce(self, contrib: Floats) -> Floats:
        if self.reduce == "mean":
            mean: Floats = np.add.reduce(contrib, axis=1) / contrib.shape[1]  # without np.mean's overhead
            return mean
        if self.reduce == "max":
            top: Floats = np.maximum.reduce(contrib, axis=1)
            return top
        largest = -np.partition(-contrib, self.k - 1, axis=1)[:, : self.k]  # NaN sorts last: stays NaN
        top_k: Floats = np.add.reduce(largest, axis=1) / self.k
        return top_k


class Scorer:
    """Online scores for batches of streams; its per-stream memory lives in the StateStore."""

    def __init__(
        self,
        task: Task,
        settings: ScoreSettings,
        features: Sequence[str],
        store: StateStore,
        *,
        per_stream_scale: bool = False,
        normalization: Normalization | None = None,
    ) -> None:
        """per_stream_scale: each stream's squared errors are divided by its own per-feature scale
        (column "score.scale", 1 until runtime.engine.baseline learns it). normalization: the
        manifest's, to report observed and expected values in the sensor's units (explain)."""
        expected = "forecast-error" if task == "forecast" else "probability"
        if settings.kind != expected:
            raise ConfigError(f"score kind {settings.kind!r} does not fit a {task} model (expected {expected!r})")
        self.task = task
        self.settings = settings
        self.features = tuple(features)
        self._store = store
        self._kernel = _Kernel(settings, len(self.features))
        if task == "forecast":
            n = len(self.features)
            store.add_column("score.prev", (n,), np.float64, np.nan, scope="model")
            store.add_column("score.contrib", (n,), np.float64, np.nan, scope="model")
            # The last scored sample and its prediction (normalized), for explain(); recomputed every
            # step, so not worth a checkpoint.
            store.add_column("score.observed", (n,), np.float32, np.nan, scope="model", portable=False)
            store.add_column("score.expected", (n,), np.float32, np.nan, scope="model", portable=False)
        self._mean = np.zeros(len(self.features)) if normalization is None else np.asarray(normalization.mean)
        self._std = np.ones(len(self.features)) if normalization is None else np.asarray(normalization.std)
        self.per_stream_scale = per_stream_scale and task == "forecast"
        if self.per_stream_scale:
            # float32: 4 bytes a feature per stream is plenty for a divisor learned from 300 steps
            store.add_column("score.scale", (len(self.features),), np.float32, 1.0, scope="baseline")

    def step(
        self,
        slots: np.ndarray,
        x_norm: np.ndarray,
        y: np.ndarray,
        squares: Floats | None = None,
        errors: Floats | None = None,
    ) -> Floats:
        """slots int64 [B] (distinct), x_norm float32 [B, T, F], y [B, T, n] → scores float64 [B, T].

        squares: float64 [B, T, F], filled with each step's squared errors (forecast; before the
        stream's own scale), for the baselines to learn from; errors: float64 [B, T, F], filled with
        the signed errors (forecast), for the step-change detector."""
        if self.task == "probability":
            out: Floats = y[..., 0].astype(np.float64)
            return out
        prev_col = self._store.column("score.prev")
        contrib_col = self._store.column("score.contrib")
        prev, contrib = prev_col.take(slots, axis=0), contrib_col.take(slots, axis=0)  # copies
        scale = self._store.column("score.scale").take(slots, axis=0) if self.per_stream_scale else None
        # The last step's prediction, before run() moves prev on to the next one.
        self._store.column("score.expected")[slots] = prev if x_norm.shape[1] == 1 else y[:, -2]
        self._store.column("score.observed")[slots] = x_norm[:, -1]
        scores = self._kernel.run(prev, contrib, x_norm, y, scale, squares, errors)
        prev_col[slots] = prev
        contrib_col[slots] = contrib
        return scores

    def explain(self, slot: int, k: int) -> tuple[TopFeature, ...]:
        """top_features with each feature's observed and expected value at the slot's last step,
        in the sensor's units (forecast models; probability models name no features). One numpy
        pass over the slot's row: it runs for every alert message."""
        order = self._top(slot, k)
        if order is None:
            return ()
        col = self._store.column
        shares = (col("score.contrib")[slot, order] / self._kernel.share_divisor).tolist()
        std, mean = self._std[order], self._mean[order]
        observed = (col("score.observed")[slot, order] * std + mean).tolist()
        expected = (col("score.expected")[slot, order] * std + mean).tolist()
        out = []
        for i, share, o, e in zip(order.tolist(), shares, observed, expected, strict=True):
            if math.isfinite(o) and math.isfinite(e):
                out.append(TopFeature(self.features[i], share, _digits(o), _digits(e)))
            else:
                out.append(TopFeature(self.features[i], share))
        return tuple(out)

    def _top(self, slot: int, k: int) -> NDArray[np.intp] | None:
        """Indices of the k features with the largest share, largest first (None: no score)."""
        if self.task == "probability" or k == 0:
            return None
        contrib = self._store.column("score.contrib")[slot]
        if not np.isfinite(contrib).all():
            return None
        order: NDArray[np.intp] = np.argsort(-contrib, kind="stable")[:k]
        return order

    def top_features(self, slot: int, k: int) -> tuple[tuple[str, float], ...]:
        """The k features with the largest share of the slot's current score, largest first."""
        order = self._top(slot, k)
        if order is None:
            return ()
        shares = (self._store.column("score.contrib")[slot, order] / self._kernel.share_divisor).tolist()
        return tuple((self.features[i], share) for i, share in zip(order.tolist(), shares, strict=True))


def _digits(value: float) -> float:
    """7 significant digits: what float32 holds of a value, without float32's noise in the JSON."""
    return float(f"{value:.7g}")


def _as_segments(arrays: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    return [arrays] if isinstance(arrays, np.ndarray) else list(arrays)


def score_sequence(settings: ScoreSettings, task: Task, x_norm: np.ndarray, y: np.ndarray) -> Floats:
    """Offline scores of one stream from its start: x_norm [T, F] (normalized), y [T, n] → float64 [T].

    Exactly the numbers the online Scorer produces for the same samples, however they arrive.
    """
    if x_norm.ndim != 2 or y.ndim != 2 or x_norm.shape[0] != y.shape[0]:
        raise ValueError(f"expected x_norm [T, F] and y [T, n] with the same T, got {x_norm.shape} and {y.shape}")
    if task == "probability":
        out: Floats = y[:, 0].astype(np.float64)
        return out
    features = x_norm.shape[1]
    prev = np.full((1, features), np.nan)
    contrib = np.full((1, features), np.nan)
    scores: Floats = _Kernel(settings, features).run(prev, contrib, x_norm[None], y[None])[0]
    return scores


def calibrate(
    settings_base: ScoreSettings,
    task: Task,
    x_norm: np.ndarray | Sequence[np.ndarray],
    y: np.ndarray | Sequence[np.ndarray],
    *,
    false_alert_steps: int = DEFAULT_TARGET_STEPS,
    policy: AlertPolicy | None = None,
    quantile: float | None = None,
    warmup: int = 0,
    min_residual_std: float = 1e-3,
    source: str = "",
) -> tuple[ScoreSettings, Calibration]:
    """Score settings and threshold from normal data (one stream, or several segments of it).

    forecast: residual_std_f is the root mean square of the next-step error y[t-1] - x[t]
    (normalized units, floored at min_residual_std so a constant feature cannot blow up the
    score), which makes a normal step's expected per-feature term 1. Each segment is scored
    from a fresh stream with `settings_base`'s options (reduce, top_k, feature_cap, ewma_alpha).

    The threshold: at most one false alert per stream per `false_alert_steps` steps under the
    alert `policy` (default: the gateway's default AlertPolicy), by runtime.engine.thresholds
    (docs/THRESHOLDS.md). With `quantile`, the old rule instead: that quantile of the scores
    after each segment's first `warmup` steps. steps/score_mean/score_std describe the scores
    after `warmup`.
    """
    if quantile is not None and not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    xs, ys = _as_segments(x_norm), _as_segments(y)
    if len(xs) != len(ys) or not xs:
        raise ValueError("x_norm and y must hold the same number of segments (at least one)")
    settings = settings_base
    if task == "forecast":
        errors = np.concatenate([yy[:-1].astype(np.float64) - xx[1:] for xx, yy in zip(xs, ys, strict=False)])
        if errors.shape[0] == 0:
            raise ValueError("calibration needs at least two steps")
        rms = np.sqrt(np.mean(errors * errors, axis=0))
        residual_std = np.maximum(rms, min_residual_std)
        settings = settings_base.model_copy(
            update={"kind": "forecast-error", "residual_std": [float(v) for v in residual_std]}
        )
    else:
        settings = settings_base.model_copy(update={"kind": "probability", "residual_std": None})
    segments = [score_sequence(settings, task, xx, yy) for xx, yy in zip(xs, ys, strict=False)]
    scores = np.concatenate([s[warmup:] for s in segments])
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("calibration left no scored steps (too short, or warmup too long)")
    steps, mean, std = int(scores.size), float(scores.mean()), float(scores.std())
    if quantile is not None:
        threshold = float(np.quantile(scores, quantile))
        return settings, Calibration(
            threshold=threshold,
            method=f"quantile:{quantile}",
            steps=steps,
            score_mean=mean,
            score_std=std,
            source=source,
        )
    choice = choose_threshold(segments, policy or AlertPolicy(), target_steps=false_alert_steps, task=task)
    calibration = Calibration(
        threshold=choice.threshold,
        method=choice.method,
        steps=steps,
        score_mean=mean,
        score_std=std,
        source=source,
        target_steps=choice.target_steps,
        evidence=choice.evidence,
        warnings=list(choice.warnings),
    )
    return settings, calibration
