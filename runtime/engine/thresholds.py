"""A threshold that keeps healthy streams under a false-alert rate (docs/THRESHOLDS.md).

The gateway raises an alert when raise_k of the last raise_n warm scores exceed the threshold,
so a raise can only happen at a step where A_t, the raise_k-th largest of those raise_n scores,
exceeds it. `choose_threshold` models the tail of A_t on healthy data with peaks over threshold
(SPOT, Siffer et al., KDD 2017):

1. u: an empirical high level of A_t (98%, lower when that leaves too few clusters).
2. Exceedances of A_t over u are declustered into runs (a gap of clear_m steps below u ends a
   run: the autocorrelated EWMA score stays up for several steps, and one excursion can raise
   one alert); the extremal index is clusters / exceedances.
3. A generalized Pareto distribution (GPD) is fitted to the cluster peaks' excesses over u by
   probability-weighted moments, its shape kept >= 0 (a bounded tail cannot be shown by a
   sample) and its scale at a one-sided 95% upper confidence bound (short data: a wide bound).
4. The threshold is where the cluster rate falls to one per `target_steps`:
   rate(x) = clusters/steps · (1 + ξ (x - u) / σ)^(-1/ξ)  (ξ = 0: exp(-(x - u) / σ)).
5. It is never below what replaying the hysteresis on the data itself needs (`replay_raises` at
   the threshold: at most steps // target_steps raises), and for probability models never below
   0.5; the tail is then fitted on logit(p).

Pure numpy: the gateway reuses it for per-stream baselines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_config.manifest import CalibrationEvidence, Task
from edge_config.schema import AlertPolicy

__all__ = [
    "DEFAULT_TARGET_STEPS",
    "PROBABILITY_CEILING",
    "PROBABILITY_FLOOR",
    "ThresholdChoice",
    "ThresholdEvidence",
    "choose_threshold",
    "replay_raises",
]

Scores = NDArray[np.float64]

DEFAULT_TARGET_STEPS = 100_000
"""At most one false alert per stream per this many steps (about a day at 1 Hz)."""
PROBABILITY_FLOOR = 0.5
"""A probability model's decision boundary: its threshold is never below it."""
PROBABILITY_CEILING = 0.999
"""The tail model never puts a probability threshold above this (short data would extrapolate to
1.0, where the model cannot alert); only the healthy data itself (the replay floor) can."""
_TAIL_LEVELS = (0.98, 0.95, 0.9, 0.8, 0.7, 0.5)
"""Tried in order for u: the first that leaves _MIN_CLUSTERS clusters (SPOT starts at 0.98)."""
_MIN_CLUSTERS = 20
_SUPPORTED_EXTRAPOLATION = 10
"""Data of N steps supports a target of up to this many times N steps without a warning."""
_MAX_SHAPE = 0.45  # probability-weighted moments need ξ < 0.5
_Z_95 = 1.6448536269514722
_P_CLIP = 1e-9


ThresholdEvidence = CalibrationEvidence
"""What a choice rests on: the manifest records it as is (edge_config.manifest.CalibrationEvidence)."""


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: float
    method: str
    """What set the threshold: "pot", "empirical" (the target lies inside the data), "replay"
    (the replay floor), "probability-floor" (0.5), "probability-ceiling" (0.999) or "max" (no
    exceedance of any tail level)."""
    target_steps: int
    evidence: ThresholdEvidence
    warnings: tuple[str, ...]


def replay_raises(scores: Scores, threshold: float, policy: AlertPolicy) -> int:
    """Alerts the gateway's hysteresis raises on one stream's scores from its start.

    scores float64 [T] (NaN: warming up), as runtime.engine.tracker.AlertTracker sees them with
    step_index 0..T-1; `update_interval_s` does not matter (updates are not raises).
    """
    return _raises(_warm(np.asarray(scores, dtype=np.float64), policy.warmup_steps), threshold, policy)


def _warm(scores: Scores, warmup: int) -> Scores:
    """The steps the tracker counts: from warmup_steps on, finite. Other steps change nothing."""
    tail = scores[warmup:]
    return tail[np.isfinite(tail)]


def _raises(warm: Scores, threshold: float, policy: AlertPolicy) -> int:
    k, n, m = policy.raise_k, policy.raise_n, policy.clear_m
    above = np.flatnonzero(warm > threshold)
    if above.size < k:
        return 0
    # A raise ends k aboves within n consecutive steps; while raised, a gap of m belows clears,
    # and clearing empties the window. Loop over raises only: quiet stretches cost nothing.
    ends = np.flatnonzero(above[k - 1 :] - above[: above.size - k + 1] < n) + (k - 1)
    clears = np.flatnonzero(np.diff(above) > m)
    raises, first = 0, 0
    while True:
        e = int(np.searchsorted(ends, first + k - 1))
        if e == ends.size:
            return raises
        raises += 1
        c = int(np.searchsorted(clears, ends[e]))
        if c == clears.size:
            return raises
        first = int(clears[c]) + 1


def _alert_statistic(warm: Scores, policy: AlertPolicy) -> Scores:
    """A_t: the raise_k-th largest of the last raise_n warm scores (-inf before raise_k steps)."""
    k, n = policy.raise_k, policy.raise_n
    padded = np.concatenate([np.full(n - 1, -np.inf), warm])
    windows = np.lib.stride_tricks.sliding_window_view(padded, n)
    stat: Scores = np.partition(windows, n - k, axis=1)[:, n - k]
    return stat


def _runs(stat: Scores, u: float, gap: int) -> tuple[int, list[float]]:
    """(exceedances, cluster peaks) of stat over u; a run of `gap` steps at or below u ends a cluster."""
    pos = np.flatnonzero(stat > u)
    if pos.size == 0:
        return 0, []
    starts = np.concatenate([[0], np.flatnonzero(np.diff(pos) > gap) + 1])
    peaks = np.maximum.reduceat(stat[pos], starts)
    return int(pos.size), [float(v) for v in peaks]


def _gpd_pwm(excess: Scores) -> tuple[float, float]:
    """(ξ, σ) of a GPD by probability-weighted moments (Hosking & Wallis 1987), ξ kept in [0, 0.45].

    α_s = E[Y (1 - F(Y))^s] = σ / ((s + 1)(s + 1 - ξ)) gives ξ = 2 - α0 / (α0 - 2α1) and
    σ = 2 α0 α1 / (α0 - 2α1); α1 from plotting positions (i - 0.35) / n. A shape below 0 (a finite
    endpoint) falls back to the exponential tail, σ = the mean excess (its maximum likelihood).
    """
    y = np.sort(excess)
    a0 = float(y.mean())
    if y.size < 3 or a0 <= 0.0:
        return 0.0, a0
    p = (np.arange(1, y.size + 1) - 0.35) / y.size
    a1 = float(np.mean((1.0 - p) * y))
    denom = a0 - 2.0 * a1
    if denom <= 0.0:
        return 0.0, a0
    shape = 2.0 - a0 / denom
    if shape <= 0.0:
        return 0.0, a0
    shape = min(shape, _MAX_SHAPE)
    return shape, a0 * (1.0 - shape)  # σ from the mean, α0 = σ / (1 - ξ), with ξ as kept


def _scale_upper(peaks: int) -> float:
    """σ_upper / σ̂: the one-sided 95% bound of an exponential mean from `peaks` values,
    2N / χ²_0.05(2N), with χ² by Wilson-Hilferty (no scipy)."""
    nu = 2.0 * peaks
    chi2 = nu * (1.0 - 2.0 / (9.0 * nu) - _Z_95 * math.sqrt(2.0 / (9.0 * nu))) ** 3
    return nu / max(chi2, 1e-3)


def _tail_rate(x: float, u: float, rate_u: float, shape: float, scale: float) -> float:
    """Clusters per step whose peak exceeds x (x >= u)."""
    if scale <= 0.0:
        return 0.0 if x > u else rate_u
    z = max(x - u, 0.0) / scale
    if shape == 0.0:
        return rate_u * math.exp(-z)
    return float(rate_u * (1.0 + shape * z) ** (-1.0 / shape))


def _tail_quantile(rate: float, u: float, rate_u: float, shape: float, scale: float) -> float:
    """The x >= u whose cluster rate is `rate` (rate < rate_u)."""
    ratio = rate_u / rate
    if shape == 0.0:
        return u + scale * math.log(ratio)
    return u + scale / shape * (math.pow(ratio, shape) - 1.0)


def _logit(p: Scores) -> Scores:
    q = np.clip(p, _P_CLIP, 1.0 - _P_CLIP)
    out: Scores = np.log(q) - np.log1p(-q)
    return out


def _replay_floor(warm: list[Scores], policy: AlertPolicy, allowed: int) -> float:
    """The lowest data value (or -inf) at which replaying every segment raises at most `allowed`."""

    def ok(threshold: float) -> bool:
        return sum(_raises(w, threshold, policy) for w in warm) <= allowed

    values = np.unique(np.concatenate(warm))
    if ok(-np.inf):
        return float(values[0])  # long data: even "everything above" stays within `allowed`
    lo, hi = 0, values.size - 1  # ok(values[-1]): nothing exceeds the largest value
    while lo < hi:  # raises fall as the threshold rises (up to clearing splits: checked after)
        mid = (lo + hi) // 2
        if ok(float(values[mid])):
            hi = mid
        else:
            lo = mid + 1
    floor: float = values[lo].item()
    return floor


def _at_least_consistent(threshold: float, warm: list[Scores], policy: AlertPolicy, allowed: int) -> float:
    """Raise `threshold` to the next data value until the replay is within `allowed`."""
    values = np.unique(np.concatenate(warm))
    while sum(_raises(w, threshold, policy) for w in warm) > allowed:
        threshold = float(values[np.searchsorted(values, threshold, side="right")])
    return threshold


def choose_threshold(
    segments: Sequence[Scores], policy: AlertPolicy, *, target_steps: int, task: Task
) -> ThresholdChoice:
    """The threshold for at most one false alert per stream per `target_steps` steps.

    segments: per-step scores float64 [T_i] of one or more streams, each from its start, smoothed
    as the gateway scores them (NaN where the scorer warms up). Raises ValueError when no step is
    scored.
    """
    if target_steps < 1:
        raise ValueError(f"target_steps must be >= 1, got {target_steps}")
    notes: list[str] = []
    warm = [_warm(np.asarray(s, dtype=np.float64), policy.warmup_steps) for s in segments]
    if not any(w.size for w in warm):
        finite = [_warm(np.asarray(s, dtype=np.float64), 0) for s in segments]
        if not any(w.size for w in finite):
            raise ValueError("no scored steps to choose a threshold from")
        notes.append(
            f"every segment is shorter than the warm-up ({policy.warmup_steps} steps): "
            f"the threshold is chosen on all {sum(w.size for w in finite)} scored steps"
        )
        policy = policy.model_copy(update={"warmup_steps": 0})
        warm = finite
    warm = [w for w in warm if w.size]
    steps = sum(w.size for w in warm)
    probability = task == "probability"
    stats = [_alert_statistic(w, policy) for w in warm]
    stats = [_logit(a) if probability else a for a in stats]
    valid = np.concatenate([a[np.isfinite(a)] for a in stats]) if stats else np.empty(0)
    allowed = steps // target_steps
    floor = _replay_floor(warm, policy, allowed)

    level, u, exceed, peaks = _TAIL_LEVELS[0], float(valid.max()) if valid.size else 0.0, 0, []
    if valid.size:
        for level in _TAIL_LEVELS:
            u = float(np.quantile(valid, level))
            runs = [_runs(a, u, policy.clear_m) for a in stats]
            exceed, peaks = sum(r[0] for r in runs), [p for r in runs for p in r[1]]
            if len(peaks) >= _MIN_CLUSTERS:
                break
    rate_u = len(peaks) / steps
    shape, scale_hat = _gpd_pwm(np.asarray(peaks) - u) if peaks else (0.0, 0.0)
    scale = scale_hat * _scale_upper(len(peaks)) if peaks else 0.0
    target_rate = 1.0 / target_steps
    if not peaks:
        method, pot = "max", float(np.concatenate(warm).max())
        notes.append(f"calibration has {steps} scored steps and no exceedance of a tail level: no tail to fit")
    else:
        if rate_u <= target_rate:
            method, pot_z = "empirical", u  # the data is longer than the target: the replay decides
        else:
            method, pot_z = "pot", _tail_quantile(target_rate, u, rate_u, shape, scale)
        pot = 1.0 / (1.0 + math.exp(-pot_z)) if probability else pot_z

    threshold, binding = pot, method
    if probability and threshold > PROBABILITY_CEILING:
        notes.append(f"the tail model asks for probability {pot:.6g}: capped at {PROBABILITY_CEILING}")
        threshold, binding = PROBABILITY_CEILING, "probability-ceiling"
    if floor > threshold:
        threshold, binding = floor, "replay"
    if probability and threshold < PROBABILITY_FLOOR:
        threshold, binding = PROBABILITY_FLOOR, "probability-floor"
    raised = _at_least_consistent(threshold, warm, policy, allowed)
    if raised != threshold:
        threshold, binding = raised, "replay"
    replayed = sum(_raises(w, threshold, policy) for w in warm)
    at_z = float(_logit(np.array([threshold]))[0]) if probability else threshold
    expected = target_steps * _tail_rate(at_z, u, rate_u, shape, scale) if peaks else 0.0

    if steps * _SUPPORTED_EXTRAPOLATION < target_steps:
        wanted = target_steps // _SUPPORTED_EXTRAPOLATION
        bound = f"x{_scale_upper(len(peaks)):.2f}" if peaks else "none: no tail"
        notes.append(
            f"calibration has {steps} scored steps, {exceed} over the tail level ({len(peaks)} clusters): "
            f"too short to support 1 false alert per {target_steps} steps (wants {wanted}+ steps); the threshold "
            f"{threshold:.4g} is extrapolated with the tail scale at its 95% upper bound ({bound})"
        )
    elif 0 < len(peaks) < _MIN_CLUSTERS:
        notes.append(
            f"only {len(peaks)} clusters over the tail level (at the {level:.0%} level; {_MIN_CLUSTERS} wanted): "
            f"the tail fit is uncertain, its scale taken x{_scale_upper(len(peaks)):.2f}"
        )
    if shape >= _MAX_SHAPE:
        notes.append(f"the healthy score has a heavy tail (GPD shape at its cap {_MAX_SHAPE}): check the model")
    if probability and threshold >= 1.0:
        notes.append(f"healthy data needs a threshold of {threshold:.6g}: at it the model cannot alert")

    evidence = CalibrationEvidence(
        steps=steps,
        segments=len(warm),
        space="logit" if probability else "score",
        tail_quantile=level,
        tail_level=u,
        exceedances=exceed,
        clusters=len(peaks),
        extremal_index=len(peaks) / exceed if exceed else 1.0,
        gpd_shape=shape,
        gpd_scale=scale,
        gpd_scale_estimate=scale_hat,
        pot_threshold=pot,
        replay_floor=floor,
        allowed_raises=allowed,
        replay_raises=replayed,
        expected_false_alerts=expected,
    )
    return ThresholdChoice(float(threshold), binding, target_steps, evidence, tuple(notes))
