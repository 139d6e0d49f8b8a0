"""Per-step anomaly scores (online `Scorer`, offline `score_sequence`, `calibrate`) and hysteresis.

forecast: y[t] predicts the normalized sample t+1, so step t is scored against the previous
step's prediction p = y[t-1]:

    e_f = (p_f - x_f) / residual_std_f                   (x normalized; residual_std 1 if absent)
    c_f ← e_f²  on a stream's first scored step, else  c_f ← α·e_f² + (1 - α)·c_f     (per feature)
    score = mean_f c_f                                   (= the EWMA of mean_f e_f², EWMA is linear)

A stream's first step (and the first after a model reset) has no prediction: its score is NaN,
which the tracker treats as warming up. c_f / F is feature f's share of the score (top_features).

probability: score = y[..., 0], unsmoothed (the head's output is already the quantity to threshold).

The online scorer and `score_sequence` run the same kernel, one time step at a time with
vectorized features (and streams), so they produce identical numbers however a stream's samples
are split into messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from edge_config.errors import ConfigError
from edge_config.manifest import Calibration, Manifest, ScoreSettings
from edge_config.schema import ModelConfig
from runtime.engine.streams import StateStore
from runtime.engine.tracker import STATUS_NAMES, AlertTracker

__all__ = [
    "STATUS_NAMES",
    "AlertTracker",
    "Scorer",
    "Task",
    "calibrate",
    "resolve_score_settings",
    "resolve_threshold",
    "score_sequence",
]

Task = Literal["forecast", "probability"]


def resolve_score_settings(manifest: Manifest, model: ModelConfig) -> ScoreSettings:
    """The manifest's score settings with the config's ewma_alpha override applied."""
    if model.ewma_alpha is None:
        return manifest.score
    return manifest.score.model_copy(update={"ewma_alpha": model.ewma_alpha})


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


def _forecast_kernel(
    prev: np.ndarray, contrib: np.ndarray, x: np.ndarray, y: np.ndarray, inv_std: np.ndarray, alpha: float
) -> np.ndarray:
    """Score T steps of B streams; prev, contrib float64 [B, F] are updated in place.

    prev: the last prediction (NaN: none); contrib: per-feature EWMA (NaN: none yet);
    x: normalized samples [B, T, F]; y: predictions [B, T, F]. Returns scores float64 [B, T].
    """
    steps, features = x.shape[1], x.shape[2]
    scores = np.empty((x.shape[0], steps))
    for t in range(steps):
        err = (prev - x[:, t]) * inv_std
        sq = err * err
        contrib[...] = np.where(np.isnan(contrib), sq, alpha * sq + (1.0 - alpha) * contrib)
        scores[:, t] = np.add.reduce(contrib, axis=1) / features  # the mean, without np.mean's overhead
        prev[...] = y[:, t]
    return scores


class Scorer:
    """Online scores for batches of streams; its per-stream memory lives in the StateStore."""

    def __init__(self, task: Task, settings: ScoreSettings, features: Sequence[str], store: StateStore) -> None:
        expected = "forecast-error" if task == "forecast" else "probability"
        if settings.kind != expected:
            raise ConfigError(f"score kind {settings.kind!r} does not fit a {task} model (expected {expected!r})")
        self.task = task
        self.settings = settings
        self.features = tuple(features)
        self._store = store
        self._inv_std = _inverse_residual_std(settings, len(self.features))
        if task == "forecast":
            n = len(self.features)
            store.add_column("score.prev", (n,), np.float64, np.nan, scope="model")
            store.add_column("score.contrib", (n,), np.float64, np.nan, scope="model")

    def step(self, slots: np.ndarray, x_norm: np.ndarray, y: np.ndarray) -> np.ndarray:
        """slots int64 [B] (distinct), x_norm float32 [B, T, F], y [B, T, n] → scores float64 [B, T]."""
        if self.task == "probability":
            return y[..., 0].astype(np.float64)
        prev_col = self._store.column("score.prev")
        contrib_col = self._store.column("score.contrib")
        prev, contrib = prev_col[slots], contrib_col[slots]  # fancy indexing: copies
        scores = _forecast_kernel(prev, contrib, x_norm, y, self._inv_std, self.settings.ewma_alpha)
        prev_col[slots] = prev
        contrib_col[slots] = contrib
        return scores

    def top_features(self, slot: int, k: int) -> tuple[tuple[str, float], ...]:
        """The k features with the largest share of the slot's current score, largest first."""
        if self.task == "probability" or k == 0:
            return ()
        shares = self._store.column("score.contrib")[slot] / len(self.features)
        if not np.isfinite(shares).all():
            return ()
        order = np.argsort(-shares, kind="stable")[:k]
        return tuple((self.features[i], float(shares[i])) for i in order)


def _as_segments(arrays: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    return [arrays] if isinstance(arrays, np.ndarray) else list(arrays)


def score_sequence(settings: ScoreSettings, task: Task, x_norm: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Offline scores of one stream from its start: x_norm [T, F] (normalized), y [T, n] → float64 [T].

    Exactly the numbers the online Scorer produces for the same samples, however they arrive.
    """
    if x_norm.ndim != 2 or y.ndim != 2 or x_norm.shape[0] != y.shape[0]:
        raise ValueError(f"expected x_norm [T, F] and y [T, n] with the same T, got {x_norm.shape} and {y.shape}")
    if task == "probability":
        return y[:, 0].astype(np.float64)
    features = x_norm.shape[1]
    prev = np.full((1, features), np.nan)
    contrib = np.full((1, features), np.nan)
    inv_std = _inverse_residual_std(settings, features)
    scores: np.ndarray = _forecast_kernel(prev, contrib, x_norm[None], y[None], inv_std, settings.ewma_alpha)[0]
    return scores


def calibrate(
    settings_base: ScoreSettings,
    task: Task,
    x_norm: np.ndarray | Sequence[np.ndarray],
    y: np.ndarray | Sequence[np.ndarray],
    *,
    quantile: float = 0.995,
    warmup: int = 0,
    min_residual_std: float = 1e-3,
    source: str = "",
) -> tuple[ScoreSettings, Calibration]:
    """Score settings and threshold from normal data (one stream, or several segments of it).

    forecast: residual_std_f is the root mean square of the next-step error y[t-1] - x[t]
    (normalized units, floored at min_residual_std so a constant feature cannot blow up the
    score), which makes a normal step's expected per-feature term 1. The threshold is the
    `quantile` of the resulting scores (each segment scored from a fresh stream, its first
    `warmup` steps left out, as the tracker leaves them out online).
    """
    if not 0.0 < quantile <= 1.0:
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
    scores = np.concatenate([score_sequence(settings, task, xx, yy)[warmup:] for xx, yy in zip(xs, ys, strict=False)])
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("calibration left no scored steps (too short, or warmup too long)")
    calibration = Calibration(
        threshold=float(np.quantile(scores, quantile)),
        method=f"quantile:{quantile}",
        steps=int(scores.size),
        score_mean=float(scores.mean()),
        score_std=float(scores.std()),
        source=source,
    )
    return settings, calibration
