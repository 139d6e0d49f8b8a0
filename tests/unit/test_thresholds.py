"""runtime.engine.thresholds: the false-alert target holds on fresh data of the same process,
short data gives a higher threshold and a warning, probabilities get a floor, and the replay is
the gateway's own hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from edge_config.manifest import Calibration, CalibrationEvidence
from edge_config.schema import AlertPolicy
from runtime.engine.streams import StateStore
from runtime.engine.thresholds import PROBABILITY_CEILING, PROBABILITY_FLOOR, choose_threshold, replay_raises
from runtime.engine.tracker import AlertTracker

POLICY = AlertPolicy()  # the gateway's default hysteresis: 3 of 5 raise, 10 below clear, 20 warm-up
TARGET = 100_000


def _filter(noise: np.ndarray, decay: float, gain: float, taps: int) -> np.ndarray:
    """y_t = gain · Σ_j decay^j noise_{t-j} along axis 0, truncated at `taps` (decay^taps ≈ 0)."""
    kernel = gain * decay ** np.arange(taps)
    out = np.empty_like(noise)
    for f in range(noise.shape[1]):
        out[:, f] = np.convolve(noise[:, f], kernel)[: noise.shape[0]]
    return out


def healthy_scores(steps: int, seed: int, features: int = 4, alpha: float = 0.2) -> np.ndarray:
    """A forecast score of known law: AR(1) residuals (ρ 0.5, unit variance) per feature, squared,
    averaged over features and EWMA-smoothed with alpha, as the scorer does. NaN at step 0."""
    rng = np.random.default_rng(seed)
    rho = 0.5
    errors = _filter(rng.standard_normal((steps, features)), rho, np.sqrt(1 - rho * rho), 60)
    step = (errors * errors).mean(axis=1, keepdims=True)
    scores = _filter(step, 1 - alpha, alpha, 200)[:, 0]
    scores[0] = np.nan
    return scores


def _tracker_raises(scores: np.ndarray, threshold: float, policy: AlertPolicy) -> int:
    store = StateStore([], max_streams=2, initial_capacity=2)
    tracker = AlertTracker(policy, threshold, store, model="m", model_sha256="ab" * 32, explain=lambda s, k: ())
    slots = np.array([store.open("s", 0.0)], dtype=np.int64)
    raises = 0
    for t, score in enumerate(scores):
        events = tracker.observe(slots, np.array([score]), np.array([t]), float(t), lambda row: (None, 0.0))
        raises += sum(a.state == "raised" for _, a in events)
    return raises


def test_the_target_holds_on_two_million_fresh_steps() -> None:
    choice = choose_threshold([healthy_scores(20_000, seed=1)], POLICY, target_steps=TARGET, task="forecast")
    fresh = healthy_scores(2_000_000, seed=2)
    raised = replay_raises(fresh, choice.threshold, POLICY)
    assert raised <= 2_000_000 // TARGET  # measured: 1 raise in 2,000,000 steps (20 allowed)
    assert choice.method == "pot"
    assert choice.warnings == ()
    assert choice.evidence.replay_raises <= choice.evidence.allowed_raises
    assert choice.evidence.expected_false_alerts <= 1.0 + 1e-9
    assert choice.threshold > float(np.nanquantile(healthy_scores(20_000, seed=1), 0.995))


def test_a_looser_target_gives_a_lower_threshold() -> None:
    scores = [healthy_scores(20_000, seed=3)]
    strict = choose_threshold(scores, POLICY, target_steps=1_000_000, task="forecast")
    loose = choose_threshold(scores, POLICY, target_steps=1_000, task="forecast")
    assert loose.threshold < strict.threshold


def test_short_data_gives_a_higher_threshold_and_a_warning() -> None:
    long = choose_threshold([healthy_scores(20_000, seed=4)], POLICY, target_steps=TARGET, task="forecast")
    short_scores = healthy_scores(100, seed=5)  # 99 scored steps, 80 from step 20 (the warm-up) on
    short = choose_threshold([short_scores], POLICY, target_steps=TARGET, task="forecast")
    assert short.threshold > long.threshold
    assert short.threshold > float(np.nanquantile(short_scores, 0.995))  # the old rule: far too tight
    assert len(short.warnings) == 1
    assert "calibration has 80 scored steps" in short.warnings[0]
    assert f"too short to support 1 false alert per {TARGET} steps" in short.warnings[0]
    assert short.evidence.steps == 80


def test_segments_are_separate_streams() -> None:
    segments = [healthy_scores(3_000, seed=s) for s in range(6)]
    choice = choose_threshold(segments, POLICY, target_steps=TARGET, task="forecast")
    assert choice.evidence.segments == 6
    assert choice.evidence.steps == 6 * (3_000 - POLICY.warmup_steps)
    assert sum(replay_raises(s, choice.threshold, POLICY) for s in segments) == choice.evidence.replay_raises


def test_replay_floor_binds_on_a_burst_the_tail_model_misses() -> None:
    scores = healthy_scores(20_000, seed=6)
    scores[10_000:10_030] = 50.0  # one long excursion in "healthy" data: the data itself must not alert
    choice = choose_threshold([scores], POLICY, target_steps=TARGET, task="forecast")
    assert replay_raises(scores, choice.threshold, POLICY) == 0
    assert choice.threshold >= 50.0


def test_probability_threshold_is_never_below_the_decision_boundary() -> None:
    rng = np.random.default_rng(7)
    quiet = rng.beta(1, 60, size=5_000)  # healthy probabilities near 0
    choice = choose_threshold([quiet], POLICY, target_steps=TARGET, task="probability")
    assert choice.threshold == PROBABILITY_FLOOR
    assert choice.method == "probability-floor"
    assert choice.evidence.space == "logit"
    noisy = rng.beta(8, 4, size=5_000)  # a healthy tail above 0.5: the tail decides
    choice = choose_threshold([noisy], POLICY, target_steps=TARGET, task="probability")
    assert PROBABILITY_FLOOR < choice.threshold < PROBABILITY_CEILING
    assert choice.method == "pot"
    assert replay_raises(noisy, choice.threshold, POLICY) == 0


def test_too_few_steps_for_the_warmup() -> None:
    choice = choose_threshold([np.array([0.2, 0.4, 0.3])], POLICY, target_steps=TARGET, task="probability")
    assert choice.threshold == PROBABILITY_CEILING  # 3 steps support no tail: the most cautious probability
    assert any("shorter than the warm-up (20 steps)" in w for w in choice.warnings)
    assert any("capped at 0.999" in w for w in choice.warnings)
    with pytest.raises(ValueError, match="no scored steps"):
        choose_threshold([np.full(5, np.nan)], POLICY, target_steps=TARGET, task="forecast")
    with pytest.raises(ValueError, match="target_steps"):
        choose_threshold([np.ones(50)], POLICY, target_steps=0, task="forecast")


@pytest.mark.parametrize(
    "policy",
    [
        AlertPolicy(),
        AlertPolicy(raise_k=1, raise_n=1, clear_m=1, warmup_steps=0),
        AlertPolicy(raise_k=2, raise_n=4, clear_m=3, warmup_steps=5),
        AlertPolicy(raise_k=5, raise_n=5, clear_m=2, warmup_steps=1),
    ],
)
def test_replay_raises_matches_the_alert_tracker(policy: AlertPolicy) -> None:
    rng = np.random.default_rng(policy.raise_k * 100 + policy.clear_m)
    for _ in range(20):
        scores = rng.exponential(size=int(rng.integers(1, 400)))
        scores[rng.uniform(size=scores.size) < 0.05] = np.nan  # NaN steps count for nothing
        threshold = float(rng.uniform(0.3, 2.5))
        assert replay_raises(scores, threshold, policy) == _tracker_raises(scores, threshold, policy)


def test_evidence_round_trips_through_the_manifest() -> None:
    choice = choose_threshold([healthy_scores(5_000, seed=8)], POLICY, target_steps=TARGET, task="forecast")
    evidence = CalibrationEvidence.model_validate(choice.evidence, from_attributes=True)
    calibration = Calibration(
        threshold=choice.threshold,
        method=choice.method,
        steps=5_000,
        score_mean=1.0,
        score_std=0.5,
        target_steps=choice.target_steps,
        evidence=evidence,
        warnings=list(choice.warnings),
    )
    again = Calibration.model_validate_json(calibration.model_dump_json())
    assert again == calibration
    assert again.evidence is not None
    assert again.evidence.clusters == choice.evidence.clusters
    old = Calibration.model_validate(
        {"threshold": 1.0, "method": "quantile:0.995", "steps": 9, "score_mean": 0, "score_std": 1}
    )
    assert old.evidence is None
    assert old.target_steps is None
