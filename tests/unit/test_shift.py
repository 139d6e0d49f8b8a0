"""The step-change detector on the signed forecast errors (runtime.engine.shift)."""

from __future__ import annotations

import numpy as np

from edge_config.manifest import Calibration, StateSpec
from edge_config.schema import BaselineConfig
from runtime.engine.baseline import Baselines
from runtime.engine.shift import BiasDetector
from runtime.engine.streams import StateStore

F, WINDOW, LAM, H = 2, 500, 0.03, 12.0


def store() -> StateStore:
    out = StateStore([StateSpec(input="h", output="hn", shape=[1, "batch", 2])], max_streams=4)
    out.add_column("score.contrib", (F,), np.float64, np.nan, scope="model")  # the scorer's: Baselines reads F
    return out


def one_stream() -> tuple[StateStore, BiasDetector, int]:
    """A store, the detector on it, and the slot of its one stream."""
    s = store()
    detector = BiasDetector(s, F, window=WINDOW, lam=LAM, h=H)
    slot = s.open("a", 0.0)
    assert slot is not None
    return s, detector, slot


def run(detector: BiasDetector, slot: int, errors: np.ndarray, *, warm: bool = True, under: bool = True) -> np.ndarray:
    """Feed one stream's errors [T, F] step by step; its statistic at each step."""
    slots, w, u = np.array([slot]), np.array([warm]), np.array([under])
    return np.array([detector.step(slots, e[None], w, u)[0] for e in errors])


def ar1(rng: np.random.Generator, steps: int, rho: float) -> np.ndarray:
    """Unit-variance AR(1) noise."""
    out = np.empty(steps)
    out[0] = rng.standard_normal()
    for i in range(1, steps):
        out[i] = rho * out[i - 1] + np.sqrt(1 - rho * rho) * rng.standard_normal()
    return out


def test_a_stream_at_its_own_bias_stays_under_and_a_lasting_bias_on_one_feature_crosses() -> None:
    rng = np.random.default_rng(0)
    s, detector, slot = one_stream()
    offset = np.array([3.0, -1.0])  # this machine's errors are biased from the start: that is its normal
    healthy = offset + rng.standard_normal((WINDOW + 2000, F)) * np.array([1.0, 2.0])
    stats = run(detector, slot, healthy)
    assert (stats[:WINDOW] == 0).all()  # learning
    assert 0 < stats[WINDOW:].max() < H
    np.testing.assert_allclose(s.column("bias.mean")[slot], offset, atol=0.2)
    # Two standard deviations of lasting bias on the second feature: crosses within 100 steps.
    shifted = offset + rng.standard_normal((300, F)) * np.array([1.0, 2.0]) + np.array([0.0, 4.0])
    crossed = np.flatnonzero(run(detector, slot, shifted) > H)
    assert crossed.size
    assert crossed[0] < 100


def test_an_autocorrelated_feature_gets_its_long_run_spread() -> None:
    # Same per-step variance; AR(0.9) errors' averages wander ~sqrt(19) times as far as white ones'.
    rng = np.random.default_rng(1)
    s, detector, slot = one_stream()
    errors = np.stack([rng.standard_normal(WINDOW), ar1(rng, WINDOW, 0.9)], axis=1)
    run(detector, slot, errors)
    white, slow = s.column("bias.spread")[slot]
    per_step = np.sqrt(LAM / (2 - LAM)) * errors[:, 0].std()  # the EWMA's sd for white errors
    assert per_step * 0.99 <= white < per_step * 1.5
    assert slow > 2.5 * white


def test_steps_above_the_threshold_not_warm_or_without_errors_are_not_learned_and_a_reset_relearns() -> None:
    s, detector, slot = one_stream()
    run(detector, slot, np.full((50, F), 9.0), under=False)
    run(detector, slot, np.full((50, F), 9.0), warm=False)
    run(detector, slot, np.full((50, F), np.nan))
    assert s.column("bias.n")[slot] == 0
    run(detector, slot, np.ones((WINDOW, F)))
    assert s.column("bias.n")[slot] == WINDOW
    s.reset_baseline(slot)
    assert s.column("bias.n")[slot] == 0
    assert (s.column("bias.spread")[slot] == 0).all()


def test_the_baselines_report_a_biased_stream_as_shifted_and_count_the_crossing() -> None:
    rng = np.random.default_rng(2)
    s = store()
    cal = Calibration(threshold=2.0, method="test", steps=10_000, score_mean=1.0, score_std=0.2)
    config = BaselineConfig(learn_steps=300, level_steps=200)
    baselines = Baselines(config, 2.0, cal, "forecast", s)
    assert baselines.bias is not None
    assert baselines.bias.window == 500
    off = Baselines(config.model_copy(update={"bias_h": 0.0}), 2.0, cal, "forecast", store())
    assert off.bias is None
    slot = s.open("a", 0.0)
    assert slot is not None
    slots, warm, score, threshold = np.array([slot]), np.array([True]), np.array([1.0]), np.array([2.0])
    shifted = [
        bool(baselines.watch(slots, score, warm, threshold, e[None])[0])
        for e in np.concatenate([rng.standard_normal((600, F)), rng.standard_normal((200, F)) + 2.0])
    ]
    assert not any(shifted[:600])
    assert any(shifted[600:])
    assert baselines.shifts == 1
    ratio = baselines.shift_of(slot)
    assert ratio is not None
    assert ratio > 1
