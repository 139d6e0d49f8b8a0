"""runtime.engine.scoring: the score formula, online == offline, calibration, thresholds, hysteresis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_config.errors import ConfigError
from edge_config.manifest import Calibration, Manifest, ScoreSettings, read_manifest
from edge_config.schema import AlertPolicy, ModelConfig
from runtime.engine.alerts import Alert, TopFeature, alert_id
from runtime.engine.scoring import (
    AlertTracker,
    Scorer,
    calibrate,
    resolve_score_settings,
    resolve_threshold,
    score_sequence,
)
from runtime.engine.streams import StateStore
from tests.support.onnx_artifacts import write_lstm_artifact

FORECAST = ScoreSettings(kind="forecast-error", ewma_alpha=0.3, residual_std=[0.5, 2.0, 1.0])


def _by_hand(settings: ScoreSettings, x: np.ndarray, y: np.ndarray) -> list[float]:
    """The documented formula, written with plain Python floats."""
    alpha, std = settings.ewma_alpha, settings.residual_std or [1.0] * x.shape[1]
    scores, ewma = [float("nan")], None
    for t in range(1, len(x)):
        step = sum(((float(y[t - 1, f]) - float(x[t, f])) / std[f]) ** 2 for f in range(x.shape[1])) / x.shape[1]
        ewma = step if ewma is None else alpha * step + (1 - alpha) * ewma
        scores.append(ewma)
    return scores


def _store() -> StateStore:
    return StateStore([], max_streams=1000, initial_capacity=4)


def test_score_sequence_follows_the_formula() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 3)).astype(np.float32), rng.standard_normal((40, 3)).astype(np.float32)
    scores = score_sequence(FORECAST, "forecast", x, y)
    assert scores.dtype == np.float64
    assert scores.shape == (40,)
    assert np.isnan(scores[0])
    np.testing.assert_allclose(scores[1:], _by_hand(FORECAST, x, y)[1:], rtol=1e-12)


def test_probability_score_is_the_output() -> None:
    y = np.array([[0.1, 9.0], [0.7, 9.0]], dtype=np.float32)
    scores = score_sequence(ScoreSettings(kind="probability"), "probability", np.zeros((2, 3), np.float32), y)
    np.testing.assert_array_equal(scores, y[:, 0].astype(np.float64))


OPTIONS = [
    FORECAST,
    FORECAST.model_copy(update={"reduce": "max"}),
    FORECAST.model_copy(update={"reduce": "top-k", "top_k": 2}),
    FORECAST.model_copy(update={"feature_cap": 2.0}),
    FORECAST.model_copy(update={"reduce": "top-k", "top_k": 1, "feature_cap": 0.5}),
]


@pytest.mark.parametrize("settings", OPTIONS, ids=["mean", "max", "top-2", "mean-cap", "top-1-cap"])
def test_online_scores_equal_score_sequence_exactly_however_chunked(settings: ScoreSettings) -> None:
    """50 streams in one store, each fed in its own random chunk sizes, interleaved by call."""
    rng = np.random.default_rng(2)
    n_streams, steps = 50, 60
    x = rng.standard_normal((n_streams, steps, 3)).astype(np.float32)
    y = rng.standard_normal((n_streams, steps, 3)).astype(np.float32)
    store = _store()
    scorer = Scorer("forecast", settings, ["a", "b", "c"], store)
    slots = np.array([store.open(f"s{i}", 0.0) for i in range(n_streams)], dtype=np.int64)
    online: list[list[np.ndarray]] = [[] for _ in range(n_streams)]
    position = np.zeros(n_streams, dtype=int)
    while (position < steps).any():
        live = np.flatnonzero(position < steps)
        size = int(rng.integers(1, 5))  # one call: some streams, all with the same chunk length
        chosen = [i for i in live if position[i] + size <= steps] or [int(live[0])]
        size = min(size, steps - int(position[chosen[0]]))
        xs = np.stack([x[i, position[i] : position[i] + size] for i in chosen])
        ys = np.stack([y[i, position[i] : position[i] + size] for i in chosen])
        got = scorer.step(slots[chosen], xs, ys)
        for row, i in enumerate(chosen):
            online[i].append(got[row])
            position[i] += size
    for i in range(n_streams):
        np.testing.assert_array_equal(np.concatenate(online[i]), score_sequence(settings, "forecast", x[i], y[i]))


def _options_by_hand(settings: ScoreSettings, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Per-feature EWMA of the capped e², reduced by mean, max or top-k mean, in plain Python."""
    alpha, std, cap = settings.ewma_alpha, settings.residual_std or [1.0] * x.shape[1], settings.feature_cap
    scores, ewma = [float("nan")], [0.0] * x.shape[1]
    for t in range(1, len(x)):
        for f in range(x.shape[1]):
            q = ((float(y[t - 1, f]) - float(x[t, f])) / std[f]) ** 2
            q = min(q, cap) if cap is not None else q
            ewma[f] = q if t == 1 else alpha * q + (1 - alpha) * ewma[f]
        ranked = sorted(ewma, reverse=True)
        k = {"mean": len(ewma), "max": 1, "top-k": settings.top_k}[settings.reduce]
        scores.append(sum(ranked[:k]) / k)
    return scores


@pytest.mark.parametrize("settings", OPTIONS, ids=["mean", "max", "top-2", "mean-cap", "top-1-cap"])
def test_score_options_follow_the_formula(settings: ScoreSettings) -> None:
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((40, 3)).astype(np.float32), rng.standard_normal((40, 3)).astype(np.float32)
    scores = score_sequence(settings, "forecast", x, y)
    assert np.isnan(scores[0])
    np.testing.assert_allclose(scores[1:], _options_by_hand(settings, x, y)[1:], rtol=1e-12)


def test_max_counts_one_failing_sensor_fully_and_the_cap_bounds_a_transient() -> None:
    x = np.zeros((3, 8), np.float32)
    x[2, 0] = 6.0  # one sensor of eight jumps 6 residual stds
    plain = ScoreSettings(kind="forecast-error", ewma_alpha=1.0)
    assert score_sequence(plain, "forecast", x, np.zeros_like(x))[2] == pytest.approx(36 / 8)
    assert score_sequence(plain.model_copy(update={"reduce": "max"}), "forecast", x, np.zeros_like(x))[2] == 36
    capped = plain.model_copy(update={"reduce": "max", "feature_cap": 25.0})
    assert score_sequence(capped, "forecast", x, np.zeros_like(x))[2] == 25


def test_top_k_larger_than_the_features_is_refused() -> None:
    settings = ScoreSettings(kind="forecast-error", reduce="top-k", top_k=4)
    with pytest.raises(ConfigError, match="top_k is 4 for 3 features"):
        score_sequence(settings, "forecast", np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))


def test_model_reset_restarts_the_score() -> None:
    store = _store()
    scorer = Scorer("forecast", FORECAST, ["a", "b", "c"], store)
    slot = np.array([store.open("s", 0.0)], dtype=np.int64)
    x = np.ones((1, 3, 3), np.float32)
    assert not np.isnan(scorer.step(slot, x, x)[0, 1:]).any()
    store.reset_model(slot)
    assert np.isnan(scorer.step(slot, x, x)[0, 0])


def test_top_features_are_shares_of_the_score() -> None:
    store = _store()
    scorer = Scorer("forecast", FORECAST, ["a", "b", "c"], store)
    slot = store.open("s", 0.0)
    x = np.array([[[0, 0, 0], [1.0, 8.0, 2.0]]], np.float32)  # errors/std: 2, 4, 2 → e² 4, 16, 4
    scores = scorer.step(np.array([slot]), x, np.zeros_like(x))
    top = scorer.top_features(slot, 2)
    assert [name for name, _ in top] == ["b", "a"]  # ties keep the feature order
    assert top[0][1] == pytest.approx(16 / 3)
    assert sum(v for _, v in scorer.top_features(slot, 3)) == pytest.approx(scores[0, 1])


def test_calibrate_residual_std_and_threshold() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2001, 3)).astype(np.float32)
    noise = rng.standard_normal((2001, 3)) * np.array([0.5, 2.0, 0.0])  # feature 2 predicted exactly
    y = np.zeros_like(x)
    y[:-1] = x[1:] + noise[1:]
    base = ScoreSettings(kind="forecast-error", ewma_alpha=0.2)
    settings, calibration = calibrate(base, "forecast", x, y, quantile=0.99, warmup=5, source="unit")
    assert settings.kind == "forecast-error"
    assert settings.ewma_alpha == 0.2
    rs = settings.residual_std
    assert rs is not None
    assert rs[0] == pytest.approx(0.5, rel=0.05)
    assert rs[1] == pytest.approx(2.0, rel=0.05)
    assert rs[2] == 1e-3  # the floor: a perfectly predicted feature cannot blow up the score
    scores = score_sequence(settings, "forecast", x, y)[5:]
    assert calibration.threshold == pytest.approx(float(np.quantile(scores, 0.99)))
    assert calibration.steps == len(scores)
    assert calibration.method == "quantile:0.99"
    assert calibration.source == "unit"
    assert calibration.score_mean == pytest.approx(float(scores.mean()))


def test_calibrate_segments_and_probability() -> None:
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((100, 2)).astype(np.float32) for _ in range(3)]
    ys = [rng.standard_normal((100, 2)).astype(np.float32) for _ in range(3)]
    settings, calibration = calibrate(ScoreSettings(kind="forecast-error"), "forecast", xs, ys)
    assert calibration.steps == 3 * 99  # each segment starts a fresh stream: its first step has no score
    probs = [rng.uniform(size=(100, 1)).astype(np.float32)]
    settings, calibration = calibrate(ScoreSettings(kind="probability"), "probability", xs[:1], probs, quantile=0.5)
    assert settings.residual_std is None
    assert calibration.threshold == pytest.approx(float(np.median(probs[0])))


def test_threshold_resolution(tmp_path: Path) -> None:
    manifest = read_manifest(write_lstm_artifact(tmp_path / "a", threshold=2.5))
    bare = read_manifest(write_lstm_artifact(tmp_path / "b"))
    assert resolve_threshold(manifest, ModelConfig(path=tmp_path, target="cpu"), "m") == 2.5
    assert resolve_threshold(manifest, ModelConfig(path=tmp_path, target="cpu", threshold=7.0), "m") == 7.0
    with pytest.raises(ConfigError, match=r"no threshold: export with --calibration or set models\.press\.threshold"):
        resolve_threshold(bare, ModelConfig(path=tmp_path, target="cpu"), "press")


def test_ewma_alpha_override(tmp_path: Path) -> None:
    manifest: Manifest = read_manifest(write_lstm_artifact(tmp_path))
    assert resolve_score_settings(manifest, ModelConfig(path=tmp_path, target="cpu")).ewma_alpha == 0.2
    assert resolve_score_settings(manifest, ModelConfig(path=tmp_path, target="cpu", ewma_alpha=0.9)).ewma_alpha == 0.9


def test_score_option_overrides(tmp_path: Path) -> None:
    manifest: Manifest = read_manifest(write_lstm_artifact(tmp_path))
    assert resolve_score_settings(manifest, ModelConfig(path=tmp_path, target="cpu")) is manifest.score
    model = ModelConfig(path=tmp_path, target="cpu", reduce="top-k", top_k=1, feature_cap=16.0)
    settings = resolve_score_settings(manifest, model)
    assert (settings.reduce, settings.top_k, settings.feature_cap) == ("top-k", 1, 16.0)
    assert settings.ewma_alpha == manifest.score.ewma_alpha
    assert settings.residual_std == manifest.score.residual_std


def test_calibrate_targets_a_false_alert_rate_by_default() -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3001, 2)).astype(np.float32)
    y = np.zeros_like(x)
    y[:-1] = x[1:] + rng.standard_normal((3000, 2)).astype(np.float32)
    _, calibration = calibrate(ScoreSettings(kind="forecast-error"), "forecast", x, y, false_alert_steps=10_000)
    assert calibration.target_steps == 10_000
    assert calibration.method in {"pot", "replay"}
    assert calibration.evidence is not None
    assert calibration.evidence.steps == 3001 - AlertPolicy().warmup_steps  # steps 20..3000
    assert calibration.evidence.replay_raises == 0
    assert calibration.warnings == []
    again = Calibration.model_validate_json(calibration.model_dump_json())
    assert again == calibration


# --- hysteresis ---------------------------------------------------------------------------------

SHA = "ab" * 32


def _tracker(policy: AlertPolicy, streams: int = 1) -> tuple[AlertTracker, np.ndarray]:
    store = StateStore([], max_streams=100, initial_capacity=2)
    tracker = AlertTracker(
        policy, 1.0, store, model="m", model_sha256=SHA, explain=lambda slot, k: (TopFeature("f", 0.5),)
    )
    slots = np.array([store.open(f"s{i}", 0.0) for i in range(streams)], dtype=np.int64)
    return tracker, slots


def _feed(
    tracker: AlertTracker, slots: np.ndarray, scores: list[float], start: int = 0, now: float = 0.0
) -> list[tuple[int, Alert]]:
    """One stream's scores, step by step; returns (step, alert)."""
    out = []
    for t, score in enumerate(scores):

        def locate(row: int, t: int = t) -> tuple[int | None, float]:
            return start + t, 1000.0 + start + t

        events = tracker.observe(slots[:1], np.array([score]), np.array([start + t]), now + t, locate)
        out.extend((start + t, alert) for _, alert in events)
    return out


def test_raise_after_k_of_n_and_clear_after_m() -> None:
    tracker, slots = _tracker(AlertPolicy(raise_k=3, raise_n=5, clear_m=4, warmup_steps=0))
    hi, lo = 2.0, 0.5
    events = _feed(tracker, slots, [hi, lo, hi, lo, lo, lo, hi, hi, lo, hi, lo, lo, lo, hi, lo, lo, lo, lo, hi, lo])
    # steps 0, 2 above, then 3 lows: only 2 of the last 5 → no alert until steps 6, 7, 9 (3 of 5 at 9)
    # the high at 13 breaks the run of lows
    assert [(t, a.state) for t, a in events] == [(9, "raised"), (17, "cleared")]
    raised, cleared = events[0][1], events[1][1]
    assert raised.id == cleared.id == alert_id("s0", 9, 1009.0, SHA)
    assert raised.started == cleared.started == 1009.0
    assert cleared.ts == 1017.0
    assert cleared.seq == 17
    assert raised.score == 2.0
    assert raised.threshold == 1.0
    assert raised.top_features == (TopFeature("f", 0.5),)
    assert not tracker.is_raised(int(slots[0]))


def test_nothing_during_warmup_and_nan_is_not_a_step() -> None:
    tracker, slots = _tracker(AlertPolicy(raise_k=1, raise_n=1, clear_m=1, warmup_steps=5))
    assert _feed(tracker, slots, [9.0] * 5) == []
    assert tracker.status_changes(slots) == [(0, "warming-up")]
    assert _feed(tracker, slots, [float("nan")], start=5) == []
    events = _feed(tracker, slots, [9.0], start=6)
    assert [a.state for _, a in events] == ["raised"]
    assert tracker.status_changes(slots) == [(0, "alert")]
    assert tracker.status_changes(slots) == []


def test_status_ok_then_alert_then_ok() -> None:
    tracker, slots = _tracker(AlertPolicy(raise_k=1, raise_n=1, clear_m=2, warmup_steps=0))
    _feed(tracker, slots, [0.1])
    assert tracker.status_changes(slots) == [(0, "ok")]
    _feed(tracker, slots, [5.0], start=1)
    assert tracker.status_changes(slots) == [(0, "alert")]
    _feed(tracker, slots, [0.1, 0.1], start=2)
    assert tracker.status_changes(slots) == [(0, "ok")]


def test_updates_are_rate_limited() -> None:
    tracker, slots = _tracker(AlertPolicy(raise_k=1, raise_n=1, clear_m=100, warmup_steps=0, update_interval_s=3.0))
    events = _feed(tracker, slots, [5.0] * 10)  # one step per second
    assert [(t, a.state) for t, a in events] == [(0, "raised"), (3, "update"), (6, "update"), (9, "update")]
    assert len({a.id for _, a in events}) == 1


def test_clearing_forgets_old_highs() -> None:
    tracker, slots = _tracker(AlertPolicy(raise_k=2, raise_n=5, clear_m=2, warmup_steps=0))
    events = _feed(tracker, slots, [5.0, 5.0, 0.1, 0.1, 5.0, 0.1, 5.0])
    # raised at 1, cleared at 3; the highs at 0-1 are forgotten, so the next raise needs 2 new ones (4 and 6)
    assert [(t, a.state) for t, a in events] == [(1, "raised"), (3, "cleared"), (6, "raised")]
    assert events[0][1].id != events[2][1].id


def test_streams_are_independent_in_one_call() -> None:
    tracker, slots = _tracker(AlertPolicy(raise_k=1, raise_n=1, clear_m=1, warmup_steps=0), streams=3)
    events = tracker.observe(slots, np.array([0.1, 5.0, 5.0]), np.array([3, 3, 0]), 0.0, lambda row: (None, 50.0 + row))
    assert [(row, a.stream, a.seq) for row, a in events] == [(1, "s1", None), (2, "s2", None)]
    assert events[0][1].id == alert_id("s1", None, 51.0, SHA)


def test_threshold_must_be_finite() -> None:
    store = StateStore([], max_streams=1)
    with pytest.raises(ValueError, match="threshold must be finite"):
        AlertTracker(AlertPolicy(), float("nan"), store, model="m", model_sha256=SHA, explain=lambda s, k: ())


def test_calibration_object_shape() -> None:
    # Calibration is the manifest's own type: what calibrate returns can be written as-is.
    _, calibration = calibrate(ScoreSettings(kind="probability"), "probability", np.zeros((3, 1)), np.ones((3, 1)))
    assert isinstance(calibration, Calibration)
    assert calibration.threshold == 1.0
