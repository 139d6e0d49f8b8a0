"""Per-stream baselines (runtime.engine.baseline): each stream learns its own error scale per feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_config.manifest import Calibration, ScoreSettings, StateSpec
from edge_config.schema import AlertPolicy, BaselineConfig
from runtime.engine.alerts import Alert
from runtime.engine.baseline import LEARNED, LEARNING, OUT_OF_RANGE, Baselines, enabled_for
from runtime.engine.scoring import Scorer
from runtime.engine.streams import StateStore
from runtime.engine.tracker import AlertTracker
from runtime.state.transfer import transfer_state
from tests.support.onnx_artifacts import write_lstm_artifact
from tests.unit.test_state_transfer import engine_for, messages, outputs

F = 3
T = 2.0  # the model's threshold
CAL = Calibration(threshold=T, method="test", steps=10_000, score_mean=1.0, score_std=0.2)  # z = 5
POLICY = AlertPolicy(raise_k=3, raise_n=5, clear_m=10, warmup_steps=0)
SETTINGS = ScoreSettings(kind="forecast-error", ewma_alpha=0.2, residual_std=[1.0] * F)


class Rig:
    """A scorer, baselines and a tracker over one store, stepped on errors we choose (x = 0, so a
    stream's error on each feature is its previous prediction)."""

    def __init__(self, config: BaselineConfig, policy: AlertPolicy = POLICY) -> None:
        self.store = StateStore([StateSpec(input="h", output="hn", shape=[1, "batch", 2])], max_streams=8)
        learns = enabled_for(config, CAL, "forecast")
        self.scorer = Scorer("forecast", SETTINGS, ["a", "b", "c"], self.store, per_stream_scale=learns)
        self.baselines = Baselines(config, T, CAL, "forecast", self.store)
        self.tracker = AlertTracker(
            policy, T, self.store, model="m", model_sha256="0" * 64, explain=lambda s, k: (), baselines=self.baselines
        )
        self.step = 0
        self.statuses: dict[str, list[str]] = {}
        self.alerts: list[Alert] = []

    def feed(self, name: str, errors: np.ndarray) -> list[str]:
        """One step of stream `name` whose next prediction misses by `errors` [F]."""
        slot = self.store.open(name, 0.0)
        assert slot is not None
        slots = np.array([slot])
        squares = np.empty((1, 1, F))
        x = np.zeros((1, 1, F), np.float32)
        scores = self.scorer.step(slots, x, np.asarray(errors, np.float64).reshape(1, 1, F), squares)
        steps = np.array([self.step])
        alerts = self.tracker.observe(slots, scores[:, 0], steps, 0.0, lambda row: (self.step, 1.0), squares[:, 0])
        self.alerts += [a for _, a in alerts]
        for _, status in self.tracker.status_changes(slots):
            self.statuses.setdefault(name, []).append(status)
        self.step += 1
        return [a.state for _, a in alerts]

    def state(self, name: str) -> int:
        slot = self.store.slot(name)
        assert slot is not None
        return int(self.baselines.states(np.array([slot]))[0])

    def scale(self, name: str) -> np.ndarray:
        slot = self.store.slot(name)
        assert slot is not None
        scale: np.ndarray = self.store.column("score.scale")[slot]
        return scale


def _errors(rng: np.random.Generator, std: tuple[float, ...], n: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, (n, F)) * np.asarray(std)


def test_a_noisier_machine_learns_its_own_scale_and_stays_quiet() -> None:
    rng = np.random.default_rng(1)
    noisy = _errors(rng, (3.0, 1.0, 1.0), 1300)  # feature a: 9x the calibrated squared error
    learning, fixed = Rig(BaselineConfig(learn_steps=300)), Rig(BaselineConfig(learn_steps=0))
    assert [s for e in noisy for s in learning.feed("m", e)] == []
    assert next(s for e in noisy for s in fixed.feed("m", e)) == "raised"
    assert learning.state("m") == LEARNED
    # e_t is stepped at t+1 (the score compares with the previous prediction): steps 1..300 learned
    expected = np.maximum(np.mean(noisy[:300] ** 2, axis=0), 1.0)
    np.testing.assert_allclose(learning.scale("m"), expected, rtol=1e-6)  # float32 scales
    assert learning.statuses["m"] == ["warming-up", "learning", "ok"]  # no prediction at the first step


def test_a_change_on_a_quiet_feature_of_a_noisy_machine_still_alerts() -> None:
    rng = np.random.default_rng(2)
    rig = Rig(BaselineConfig(learn_steps=300))
    for e in _errors(rng, (3.0, 1.0, 1.0), 400):
        assert rig.feed("m", e) == []
    shifted = _errors(rng, (3.0, 1.0, 1.0), 20) + np.array([0.0, 4.0, 0.0])  # feature b moves by 4
    assert "raised" in [s for e in shifted for s in rig.feed("m", e)]


def test_while_learning_a_machine_high_from_its_first_step_is_learned_and_a_jump_alerts() -> None:
    rig = Rig(BaselineConfig(learn_steps=300, learning_factor=5.0, learning_ratio=5.0))
    steady = [s for _ in range(40) for s in rig.feed("m", np.full(F, 3.5))]  # score 12.25 > 5 x T = 10
    assert steady == []  # high for the model from the start, steady: how this machine runs
    jump = [s for _ in range(15) for s in rig.feed("m", np.full(F, 10.0))]  # towards 100 > 5 x 12.25
    assert jump == ["raised"]
    assert rig.state("m") == LEARNING
    slot = rig.store.slot("m")
    assert slot is not None
    assert rig.baselines.threshold_of(slot) < 5.0 * 15.0  # the level did not follow the ramp to 100


def test_while_learning_a_jump_alerts_only_above_learning_factor_x_t() -> None:
    rig = Rig(BaselineConfig(learn_steps=300, learning_factor=5.0, learning_ratio=5.0))
    assert [s for _ in range(40) for s in rig.feed("q", np.full(F, 0.5))] == []  # score 0.25
    assert [s for _ in range(30) for s in rig.feed("q", np.full(F, 3.0))] == []  # 9: 36 x its own, < 10
    assert [s for _ in range(30) for s in rig.feed("q", np.full(F, 3.5))] == ["raised"]  # 12.25 > 10


@pytest.mark.parametrize(("policy", "floor"), [("max", 1.0), ("stream", 0.01 - 1e-12)])
def test_a_quiet_machine_keeps_the_calibrated_scale_under_policy_max(policy: str, floor: float) -> None:
    rig = Rig(BaselineConfig(learn_steps=100, policy=policy))  # type: ignore[arg-type]
    for _ in range(110):
        rig.feed("q", np.full(F, 0.1))  # squared error 0.01: quieter than the calibration data
    assert rig.scale("q").min() >= floor
    assert (rig.scale("q") == 1.0).all() == (policy == "max")


def test_a_machine_far_outside_the_calibration_is_flagged_out_of_range() -> None:
    rng = np.random.default_rng(3)
    rig = Rig(BaselineConfig(learn_steps=100, out_of_range_factor=25.0, learning_factor=1000.0))
    assert [s for e in _errors(rng, (8.0, 8.0, 8.0), 150) for s in rig.feed("far", e)] == []
    assert rig.state("far") == OUT_OF_RANGE
    assert rig.statuses["far"] == ["warming-up", "learning", "out-of-range"]


def test_baselines_apply_to_calibrated_forecast_models_only() -> None:
    assert enabled_for(BaselineConfig(), CAL, "forecast")
    assert not enabled_for(BaselineConfig(), None, "forecast")
    assert not enabled_for(BaselineConfig(), CAL, "probability")
    assert not enabled_for(BaselineConfig(learn_steps=0), CAL, "forecast")


def test_a_reset_relearns_and_a_gap_does_not() -> None:
    rig = Rig(BaselineConfig(learn_steps=20))
    for _ in range(25):
        rig.feed("m", np.full(F, 2.0))
    assert rig.state("m") == LEARNED
    slot = rig.store.slot("m")
    assert slot is not None
    rig.store.reset_model(slot)  # a gap with on_gap=reset: the model state only
    assert rig.state("m") == LEARNED
    assert (rig.scale("m") == 4.0).all()
    rig.store.reset_baseline(slot)  # a reset command
    assert rig.state("m") == LEARNING
    assert (rig.scale("m") == 1.0).all()


def test_a_reload_keeps_baselines_for_the_same_model_and_relearns_for_other_weights(tmp_path: Path) -> None:
    first = write_lstm_artifact(tmp_path / "a", features=4, hidden=8, threshold=1.0, seed=1)
    other = write_lstm_artifact(tmp_path / "b", features=4, hidden=8, threshold=1.0, seed=2)
    old = engine_for(first)
    assert old.baselines.enabled
    outputs(old, messages(["a"], range(old.baselines.config.learn_steps + 40), np.random.default_rng(4)))
    slot = old.store.slot("a")
    assert slot is not None
    assert old.baselines.states(np.array([slot]))[0] != LEARNING
    same = engine_for(first)
    transfer_state(old, same)
    kept = same.store.slot("a")
    assert kept is not None
    assert same.baselines.states(np.array([kept]))[0] == old.baselines.states(np.array([slot]))[0]
    np.testing.assert_array_equal(same.store.column("score.scale")[kept], old.store.column("score.scale")[slot])
    retrained = engine_for(other)
    transfer_state(old, retrained)
    again = retrained.store.slot("a")
    assert again is not None
    assert retrained.baselines.states(np.array([again]))[0] == LEARNING
    assert (retrained.store.column("score.scale")[again] == 1.0).all()


def test_learned_baselines_survive_a_checkpoint_file(tmp_path: Path) -> None:
    from runtime.state.checkpoint import StateLayout, load_checkpoint, write_checkpoint
    from runtime.state.transfer import restore_engine, snapshot_columns, snapshot_engine

    art = write_lstm_artifact(tmp_path / "a", features=4, hidden=8, threshold=1.0, seed=1)
    old = engine_for(art)
    outputs(old, messages(["a"], range(old.baselines.config.learn_steps + 40), np.random.default_rng(5)))
    write_checkpoint(tmp_path / "s.ckpt", snapshot_engine(old))
    loaded = load_checkpoint(tmp_path / "s.ckpt", StateLayout.from_manifest(old.artifact.manifest))
    assert loaded.snapshot is not None
    restarted = engine_for(art)
    restore_engine(restarted, loaded.snapshot.streams, snapshot_columns(loaded.snapshot), 0.0, restart=True)
    slot, again = old.store.slot("a"), restarted.store.slot("a")
    assert slot is not None
    assert again is not None
    assert restarted.baselines.states(np.array([again]))[0] == old.baselines.states(np.array([slot]))[0]
    np.testing.assert_array_equal(restarted.store.column("score.scale")[again], old.store.column("score.scale")[slot])


def _shift_rig(level_steps: int) -> Rig:
    return Rig(BaselineConfig(learn_steps=50, level_steps=level_steps, cusum_k=2.0, cusum_h=60.0))


def test_a_persistent_shift_under_the_threshold_alerts_through_the_cusum_and_clears_after() -> None:
    # Errors 1 on every feature: scale 1, score 1 (the stream's level). Then errors √1.5: score
    # 1.5, under T = 2 at every step, so only the sum can see it: (1.5 - 1) / 0.2 - 2 = 0.5 a step.
    with_sum, without = _shift_rig(50), _shift_rig(0)
    for rig in (with_sum, without):
        assert [s for _ in range(200) for s in rig.feed("m", np.ones(F))] == []
    events = [with_sum.feed("m", np.full(F, np.sqrt(1.5))) for _ in range(200)]
    raised_at = next(i for i, e in enumerate(events) if "raised" in e)
    # h / 0.5 = 120 steps, more while the EWMA climbs from 1 to 1.5, then 3 of 5 for the hysteresis
    assert 120 <= raised_at <= 150
    raised = next(a for a in with_sum.alerts if a.state == "raised")
    assert raised.score < raised.threshold  # the sum raised it, not the step's score
    assert raised.shift is not None
    assert raised.shift > 1.0
    assert raised.severity == "minor"
    assert [s for _ in range(200) for s in without.feed("m", np.full(F, np.sqrt(1.5)))] == []
    # back to its level: the sum (capped at 2h) falls by k a step, then clear_m steps under h
    back = [s for _ in range(200) for s in with_sum.feed("m", np.ones(F))]
    assert back == ["cleared"]


def test_the_level_is_learned_after_the_scales_and_relearned_after_a_reset() -> None:
    rig = _shift_rig(50)
    for _ in range(60):
        rig.feed("m", np.full(F, 0.5))  # quieter than the calibration: scale 1 (policy max), score 0.25
    slot = rig.store.slot("m")
    assert slot is not None
    assert rig.state("m") == LEARNED
    assert 0 < rig.store.column("baseline.level_n")[slot] < 50  # scales first, then the level
    for _ in range(60):
        rig.feed("m", np.full(F, 0.5))
    assert rig.store.column("baseline.level")[slot] == pytest.approx(0.25, rel=1e-5)
    rig.store.reset_baseline(slot)
    assert rig.store.column("baseline.level_n")[slot] == 0
    assert rig.store.column("baseline.cusum")[slot] == 0.0


def test_a_machine_that_stays_at_its_own_level_never_shifts() -> None:
    rng = np.random.default_rng(6)
    rig = _shift_rig(200)
    assert [s for e in _errors(rng, (1.5, 1.0, 0.7), 3000) for s in rig.feed("m", e)] == []
    assert rig.baselines.shifts == 0


def test_the_one_slot_threshold_equals_the_batch_one_while_learning_and_after() -> None:
    rng = np.random.default_rng(7)
    rig = Rig(BaselineConfig(learn_steps=60))
    for n, e in enumerate(_errors(rng, (1.5, 1.0, 0.7), 100)):
        rig.feed("m", e)
        slot = rig.store.slot("m")
        assert slot is not None
        assert rig.baselines.threshold_of(slot) == rig.baselines.thresholds(np.array([slot]))[0], n
