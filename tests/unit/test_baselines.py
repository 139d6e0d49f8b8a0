"""Per-stream baselines (runtime.engine.baseline) through the AlertTracker, on scores we choose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_config.manifest import Calibration, StateSpec
from edge_config.schema import AlertPolicy, BaselineConfig
from runtime.engine.baseline import LEARNED, LEARNING, OUT_OF_RANGE, Baselines
from runtime.engine.streams import StateStore
from runtime.engine.tracker import AlertTracker
from runtime.state.transfer import transfer_state
from tests.support.onnx_artifacts import write_lstm_artifact
from tests.unit.test_state_transfer import engine_for, messages, outputs

T = 2.0  # the model's threshold
CAL = Calibration(threshold=T, method="test", steps=10_000, score_mean=1.0, score_std=0.2)  # z = 5
POLICY = AlertPolicy(raise_k=3, raise_n=5, clear_m=10, warmup_steps=0)


class Rig:
    """One tracker over a store of a few streams, stepped one score per stream at a time."""

    def __init__(self, config: BaselineConfig, calibration: Calibration | None = CAL) -> None:
        self.store = StateStore([StateSpec(input="h", output="hn", shape=[1, "batch", 2])], max_streams=8)
        self.baselines = Baselines(config, T, calibration, "forecast", self.store)
        self.tracker = AlertTracker(
            POLICY, T, self.store, model="m", model_sha256="0" * 64, explain=lambda s, k: (), baselines=self.baselines
        )
        self.step = 0
        self.statuses: dict[str, list[str]] = {}

    def feed(self, scores: dict[str, float]) -> list[tuple[str, str]]:
        slots = np.array([self.store.open(name, 0.0) for name in scores], dtype=np.int64)
        values = np.array(list(scores.values()), dtype=np.float64)
        steps = np.full(len(slots), self.step, dtype=np.int64)
        alerts = self.tracker.observe(slots, values, steps, 0.0, lambda row: (self.step, 1.7e9 + self.step))
        for row, status in self.tracker.status_changes(slots):
            self.statuses.setdefault(list(scores)[row], []).append(status)
        self.step += 1
        return [(a.stream, a.state) for _, a in alerts]

    def state(self, name: str) -> int:
        slot = self.store.slot(name)
        assert slot is not None
        return int(self.baselines.states(np.array([slot]))[0])

    def threshold(self, name: str) -> float:
        slot = self.store.slot(name)
        assert slot is not None
        return self.baselines.threshold_of(slot)


def _noisy(rng: np.random.Generator, level: float, spread: float, n: int) -> np.ndarray:
    return np.maximum(rng.normal(level, spread, n), 0.0)


def test_a_noisier_machine_learns_its_own_threshold_and_stays_quiet() -> None:
    rng = np.random.default_rng(1)
    scores = _noisy(rng, 6.0, 1.0, 1300)  # 3x the calibration level: crosses T all the time
    learning = Rig(BaselineConfig(learn_steps=300))
    fixed = Rig(BaselineConfig(learn_steps=0))
    raised_learning = [a for s in scores for a in learning.feed({"m": float(s)})]
    raised_fixed = [a for s in scores for a in fixed.feed({"m": float(s)})]
    assert raised_learning == []
    assert raised_fixed[0] == ("m", "raised")
    assert learning.state("m") == LEARNED
    learned = scores[:300]
    expected = max(learned.mean() + 5.0 * learned.std(ddof=1), learned.max())
    assert learning.threshold("m") == pytest.approx(expected)
    assert learning.statuses["m"] == ["learning", "ok"]


def test_while_learning_only_extreme_scores_alert() -> None:
    rig = Rig(BaselineConfig(learn_steps=300, learning_factor=10.0))
    assert [a for _ in range(10) for a in rig.feed({"m": 15.0})] == []  # 7.5x T: learned, not alerted
    raised = [a for _ in range(5) for a in rig.feed({"m": 25.0})]  # above 10x T
    assert raised == [("m", "raised")]
    assert rig.state("m") == LEARNING


def test_a_quiet_machine_keeps_the_calibrated_threshold_under_policy_max() -> None:
    rng = np.random.default_rng(2)
    quiet = _noisy(rng, 0.5, 0.05, 300)
    for policy, expected in (("max", T), ("stream", None)):
        rig = Rig(BaselineConfig(learn_steps=300, policy=policy))  # type: ignore[arg-type]
        for s in quiet:
            rig.feed({"q": float(s)})
        if expected is None:
            assert rig.threshold("q") < T
        else:
            assert rig.threshold("q") == expected


def test_a_machine_far_outside_the_calibration_is_flagged_out_of_range() -> None:
    rng = np.random.default_rng(3)
    rig = Rig(BaselineConfig(learn_steps=100, out_of_range_factor=25.0, learning_factor=100.0))
    far = _noisy(rng, 40.0, 2.0, 150)  # 40x the calibration mean
    assert [a for s in far for a in rig.feed({"far": float(s)})] == []
    assert rig.state("far") == OUT_OF_RANGE
    assert rig.statuses["far"] == ["learning", "out-of-range"]
    assert rig.threshold("far") > far[:100].max() - 1e-9


def test_baselines_are_off_without_calibration_statistics_or_for_probability_models() -> None:
    store = StateStore([StateSpec(input="h", output="hn", shape=[1, "batch", 2])], max_streams=2)
    assert not Baselines(BaselineConfig(), T, None, "forecast", store).enabled
    assert not Baselines(BaselineConfig(), T, CAL, "probability", store).enabled
    assert not Baselines(BaselineConfig(learn_steps=0), T, CAL, "forecast", store).enabled


def test_a_reset_relearns_and_a_gap_does_not() -> None:
    rig = Rig(BaselineConfig(learn_steps=20))
    for _ in range(25):
        rig.feed({"m": 1.0})
    assert rig.state("m") == LEARNED
    slot = rig.store.slot("m")
    assert slot is not None
    rig.store.reset_model(slot)  # a gap with on_gap=reset: the model state only
    assert rig.state("m") == LEARNED
    rig.store.reset_baseline(slot)  # a reset command
    assert rig.state("m") == LEARNING


def test_a_reload_keeps_baselines_for_the_same_model_and_relearns_for_other_weights(tmp_path: Path) -> None:
    first = write_lstm_artifact(tmp_path / "a", features=4, hidden=8, threshold=1.0, seed=1)
    other = write_lstm_artifact(tmp_path / "b", features=4, hidden=8, threshold=1.0, seed=2)
    old = engine_for(first)
    if not old.baselines.enabled:
        pytest.skip("the test artifact has no calibration statistics")
    outputs(old, messages(["a"], range(old.baselines.config.learn_steps + 40), np.random.default_rng(4)))
    slot = old.store.slot("a")
    assert slot is not None
    assert old.baselines.states(np.array([slot]))[0] != LEARNING
    same = engine_for(first)
    transfer_state(old, same)
    kept = same.store.slot("a")
    assert kept is not None
    assert same.baselines.states(np.array([kept]))[0] == old.baselines.states(np.array([slot]))[0]
    retrained = engine_for(other)
    transfer_state(old, retrained)
    again = retrained.store.slot("a")
    assert again is not None
    assert retrained.baselines.states(np.array([again]))[0] == LEARNING
