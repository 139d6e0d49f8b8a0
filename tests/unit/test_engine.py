"""runtime.engine.engine against real ONNX Runtime: batching is invisible to each stream."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edge_config.errors import BatchError
from edge_config.manifest import Normalization
from edge_config.schema import AlertPolicy, BaselineConfig, ModelConfig
from runtime.engine.engine import Engine
from runtime.engine.scoring import score_sequence
from runtime.engine.types import InferenceBackend, Message, Outcome
from runtime.model.artifact import Artifact
from tests.support.core_artifacts import reference_steps, session, write_persistence_artifact, write_variant
from tests.support.engine_counts import totals

F = 4
NORM = Normalization(mean=[1.0, -2.0, 0.5, 10.0], std=[2.0, 0.5, 1.0, 4.0])


def _model(path: Path, **kwargs: object) -> ModelConfig:
    # The engine's mechanics against one fixed threshold: per-stream baselines off unless a test
    # asks for them (tests/unit/test_baselines.py covers them).
    kwargs.setdefault("baseline", BaselineConfig(learn_steps=0))
    return ModelConfig(path=path, target="cpu", **kwargs)  # type: ignore[arg-type]


def _engine(artifact: Artifact, backend: InferenceBackend | None = None, **kwargs: object) -> Engine:
    engine_kw = {k: kwargs.pop(k) for k in ("max_streams", "idle_ttl_s", "clock", "seq_restart_window") if k in kwargs}
    model = _model(artifact.directory, **kwargs)
    return Engine(artifact, backend or session(artifact), model, name="m", **engine_kw)  # type: ignore[arg-type]


def _msg(
    stream: str, values: np.ndarray, seq: int | None = None, ts: list[float] | None = None, received: float = 0.0
) -> Message:
    return Message(
        stream,
        np.asarray(values, dtype=np.float32).reshape(-1, F),
        seq,
        None if ts is None else np.asarray(ts, dtype=np.float64),
        received=received,
        received_wall=1_763_800_000.0 + received,
    )


def _outputs(outcomes: list[Outcome]) -> np.ndarray:
    return np.concatenate([o.outputs for o in outcomes if o.outputs is not None])


class Recorder:
    """An InferenceBackend that records each call's x shape."""

    def __init__(self, inner: InferenceBackend) -> None:
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]:
        self.shapes.append(feeds["x"].shape)
        return self.inner.run(output_names, feeds)


VARIANTS: dict[str, dict[str, object]] = {
    "sequence": {},
    "last": {"output_kind": "last"},
    "time_steps_1": {"time_steps": 1},
    "probability": {"task": "probability"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_200_interleaved_streams_equal_each_stream_alone(tmp_path: Path, variant: str) -> None:
    artifact = write_variant(tmp_path, normalization=NORM, **VARIANTS[variant])  # type: ignore[arg-type]
    sess = session(artifact)
    rng = np.random.default_rng(10)
    n_streams, steps = 200, 10
    raw = (rng.standard_normal((n_streams, steps, F)) * NORM.std + NORM.mean).astype(np.float32)
    # Each stream's samples in messages of 1-3 samples, the streams' messages shuffled together
    # (each stream's own order kept), cut into batches of random sizes.
    queues = []
    for i in range(n_streams):
        cuts = np.cumsum(rng.integers(1, 4, size=steps))
        bounds = [0, *[int(c) for c in cuts if c < steps], steps]
        queues.append([_msg(f"line/{i}", raw[i, a:b], seq=a) for a, b in itertools.pairwise(bounds)])
    order = np.concatenate([np.full(len(q), i) for i, q in enumerate(queues)])
    rng.shuffle(order)
    stream_msgs = [iter(q) for q in queues]
    messages = [next(stream_msgs[i]) for i in order]
    engine = _engine(artifact, threshold=1.0)
    outcomes: list[Outcome] = []
    position = 0
    while position < len(messages):
        size = int(rng.integers(1, 400))
        outcomes.extend(engine.process(messages[position : position + size]))
        position += size
    assert [o.message for o in outcomes] == messages
    assert all(o.status == "processed" for o in outcomes)
    per_stream: dict[str, list[Outcome]] = {}
    for o in outcomes:
        per_stream.setdefault(o.message.stream, []).append(o)
    for i in range(n_streams):
        got = per_stream[f"line/{i}"]
        norm = artifact.manifest.normalization
        x_norm = raw[i] if norm is None else norm.apply(raw[i])
        expected = reference_steps(sess, artifact, x_norm)
        np.testing.assert_allclose(_outputs(got), expected, atol=1e-5, rtol=0)
        scores = np.concatenate([o.scores for o in got if o.scores is not None])
        settings, task = engine.scorer.settings, artifact.manifest.task
        # Offline scoring of the outputs the engine produced gives exactly the engine's numbers.
        np.testing.assert_array_equal(scores, score_sequence(settings, task, x_norm, _outputs(got)))
        np.testing.assert_allclose(scores, score_sequence(settings, task, x_norm, expected), rtol=1e-4, atol=1e-6)
    assert totals(engine).steps == n_streams * steps
    assert len(engine.store) == n_streams


def test_one_ort_call_per_distinct_length_per_round(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    recorder = Recorder(session(artifact))
    engine = _engine(artifact, recorder, threshold=1.0)
    one, three = np.zeros((1, F)), np.zeros((3, F))
    batch = [_msg("a", one), _msg("b", one), _msg("a", one), _msg("c", three), _msg("d", three), _msg("b", three)]
    outcomes = engine.process(batch)
    # round 0: a, b (T=1) and c, d (T=3); round 1: a (T=1) and b (T=3)
    assert recorder.shapes == [(2, 1, F), (2, 3, F), (1, 1, F), (1, 3, F)]
    assert [o.steps for o in outcomes] == [1, 1, 1, 3, 3, 3]


def test_stepwise_graph_runs_one_sample_per_call(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path, time_steps=1)
    recorder = Recorder(session(artifact))
    engine = _engine(artifact, recorder, threshold=1.0)
    engine.process([_msg("a", np.zeros((3, F))), _msg("b", np.zeros((1, F))), _msg("c", np.zeros((2, F)))])
    assert recorder.shapes == [(3, 1, F), (2, 1, F), (1, 1, F)]


@pytest.mark.parametrize("variant", ["sequence", "last"])
def test_multi_sample_messages_equal_one_by_one(tmp_path: Path, variant: str) -> None:
    artifact = write_variant(tmp_path, **VARIANTS[variant])  # type: ignore[arg-type]
    raw = _faulty(np.random.default_rng(11), steps=120, fault=(50, 80))
    policy = AlertPolicy(raise_k=2, raise_n=3, clear_m=5, warmup_steps=5)
    chunked, single = _engine(artifact, threshold=1.0, alerts=policy), _engine(artifact, threshold=1.0, alerts=policy)
    sizes = np.random.default_rng(12).integers(1, 12, size=40)
    bounds = [0, *[int(c) for c in np.cumsum(sizes) if c < len(raw)], len(raw)]
    a = [
        o
        for lo, hi in itertools.pairwise(bounds)
        for o in chunked.process([_msg("s", raw[lo:hi], seq=lo, ts=list(range(lo, hi)))])
    ]
    b = [o for t in range(len(raw)) for o in single.process([_msg("s", raw[t : t + 1], seq=t, ts=[t])])]
    np.testing.assert_allclose(_outputs(a), _outputs(b), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.concatenate([o.scores for o in a]), np.concatenate([o.scores for o in b]), rtol=1e-4)
    alerts_a = [(al.id, al.state, al.seq) for o in a for al in o.alerts]
    alerts_b = [(al.id, al.state, al.seq) for o in b for al in o.alerts]
    assert alerts_a == alerts_b
    assert [s for _, s, _ in alerts_a] == ["raised", "cleared"]


def _faulty(
    rng: np.random.Generator, steps: int = 300, fault: tuple[int, int] | None = None, phase: float = 0.0
) -> np.ndarray:
    """Smooth, slightly noisy normal data; an offset of 6 (≈ 8 std) on feature 0 during the fault."""
    t = np.arange(steps)[:, None]
    x = 0.8 * np.sin(2 * np.pi * t / 40 + phase + np.arange(F)) + 0.1 * rng.standard_normal((steps, F))
    if fault is not None:
        x[fault[0] : fault[1], 0] += 6.0
    return x.astype(np.float32)


def test_injected_fault_raises_one_alert_and_clears_it(tmp_path: Path) -> None:
    """The random-weight LSTM's forecasts are poor but stable: healthy scores stay below ~0.45."""
    artifact = write_variant(tmp_path, threshold=1.0)
    rng = np.random.default_rng(13)
    streams = {f"plant/m{i}": _faulty(rng, phase=i) for i in range(20)}
    streams["plant/bad"] = _faulty(rng, fault=(150, 200), phase=99)
    engine = _engine(artifact)  # threshold 1.0 from the manifest's calibration; default hysteresis
    alerts: dict[str, list[tuple[str, int | None]]] = {name: [] for name in streams}
    statuses: dict[str, list[str]] = {name: [] for name in streams}
    for t in range(300):
        batch = [_msg(name, x[t], seq=t, ts=[1_763_800_000.0 + t]) for name, x in streams.items()]
        for o in engine.process(batch):
            alerts[o.message.stream].extend((a.state, a.seq) for a in o.alerts)
            if o.stream_status:
                statuses[o.message.stream].append(o.stream_status)
    bad = alerts.pop("plant/bad")
    assert [state for state, _ in bad] == ["raised", "cleared"]
    assert 150 <= bad[0][1] <= 155
    assert 200 < bad[1][1] <= 240
    assert all(not a for a in alerts.values()), {k: v for k, v in alerts.items() if v}
    assert statuses["plant/bad"] == ["warming-up", "ok", "alert", "ok"]
    assert all(s == ["warming-up", "ok"] for name, s in statuses.items() if name != "plant/bad")
    assert (
        sum(state == "raised" for name in streams for state, _ in (bad if name == "plant/bad" else alerts[name])) == 1
    )
    assert sum(state == "cleared" for state, _ in bad) == 1


def test_duplicates_and_out_of_order_are_dropped_and_counted(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    raw = np.random.default_rng(14).standard_normal((20, F)).astype(np.float32)
    engine = _engine(artifact, threshold=1.0)
    first = engine.process([_msg("s", raw[t], seq=t) for t in range(10)])
    again = engine.process([_msg("s", raw[t], seq=t) for t in (3, 9, 12, 11)])
    assert [o.status for o in again] == ["duplicate", "duplicate", "processed", "out-of-order"]
    assert [o.steps for o in again] == [0, 0, 1, 0]
    assert again[0].outputs is None
    # seq 10-14 overlaps: 10 was never seen (late), 11 was seen late before, 12 processed → keep 13, 14
    overlap = engine.process([_msg("s", raw[10:15], seq=10), _msg("s", raw[14], seq=14)])
    assert overlap[0].status == "processed"
    assert overlap[0].steps == 2
    assert overlap[1].status == "duplicate"
    c = totals(engine)
    assert (c.duplicate_samples, c.out_of_order_samples, c.gaps) == (2 + 2 + 1, 1 + 1, 1)
    sess = session(artifact)
    kept = np.concatenate([raw[:10], raw[12:13], raw[13:15]])
    np.testing.assert_allclose(_outputs(first + again + overlap), reference_steps(sess, artifact, kept), atol=1e-5)


def test_duplicate_within_one_batch(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    engine = _engine(artifact, threshold=1.0)
    x = np.ones((1, F))
    outcomes = engine.process([_msg("s", x, seq=5), _msg("s", x, seq=5), _msg("t", x, seq=5)])
    assert [o.status for o in outcomes] == ["processed", "duplicate", "processed"]


def test_seq_gap_resets_state_when_configured(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    sess = session(artifact)
    raw = np.random.default_rng(15).standard_normal((10, F)).astype(np.float32)
    for on_gap in ("reset", "ignore"):
        engine = _engine(artifact, threshold=1.0, on_gap=on_gap)
        engine.process([_msg("s", raw[:5], seq=0)])
        after = engine.process([_msg("s", raw[5:], seq=20)])[0]
        fresh, carried_on = reference_steps(sess, artifact, raw[5:]), reference_steps(sess, artifact, raw)[5:]
        expected = fresh if on_gap == "reset" else carried_on
        np.testing.assert_allclose(after.outputs, expected, atol=1e-5)
        assert totals(engine).gaps == 1
        assert totals(engine).model_resets == (on_gap == "reset")
        assert (after.stream_status == "warming-up") == (on_gap == "reset") or after.stream_status is None


def test_time_gaps_between_and_inside_messages(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    sess = session(artifact)
    raw = np.random.default_rng(16).standard_normal((9, F)).astype(np.float32)
    engine = _engine(artifact, threshold=1.0, on_gap="reset", max_gap_s=5.0)
    a = engine.process([_msg("s", raw[:3], ts=[0, 1, 2])])[0]
    b = engine.process([_msg("s", raw[3:6], ts=[4, 5, 60])])[0]  # continues, then a gap before the 3rd sample
    c = engine.process([_msg("s", raw[6:], ts=[61, 70, 71])])[0]  # continues, then a gap inside
    first, second = np.concatenate([a.outputs, b.outputs[:2]]), np.concatenate([b.outputs[2:], c.outputs[:1]])
    np.testing.assert_allclose(first, reference_steps(sess, artifact, raw[:5]), atol=1e-5)
    np.testing.assert_allclose(second, reference_steps(sess, artifact, raw[5:7]), atol=1e-5)
    np.testing.assert_allclose(c.outputs[1:], reference_steps(sess, artifact, raw[7:]), atol=1e-5)
    assert totals(engine).gaps == 2
    assert totals(engine).model_resets == 2
    assert b.steps == 3
    assert c.steps == 3


def test_arrival_gap_on_the_monotonic_clock(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    engine = _engine(artifact, threshold=1.0, on_gap="reset", max_gap_s=5.0)
    x = np.ones((1, F))
    engine.process([_msg("s", x, received=0.0), _msg("s", x, received=3.0)])
    assert totals(engine).gaps == 0
    engine.process([_msg("s", x, received=9.0)])
    assert totals(engine).gaps == 1
    assert engine.store.steps[engine.store.slot("s")] == 1


def test_seq_restart_is_accepted_with_a_fresh_state(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    raw = np.random.default_rng(17).standard_normal((4, F)).astype(np.float32)
    engine = _engine(artifact, threshold=1.0)
    engine.process([_msg("s", raw[:2], seq=5000)])
    restarted = engine.process([_msg("s", raw[2:], seq=0)])[0]
    assert restarted.status == "processed"
    assert totals(engine).seq_restarts == 1
    np.testing.assert_allclose(restarted.outputs, reference_steps(session(artifact), artifact, raw[2:]), atol=1e-5)
    assert engine.process([_msg("s", raw[:1], seq=1)])[0].status == "duplicate"
    strict = _engine(artifact, threshold=1.0, seq_restart_window=None)
    strict.process([_msg("s", raw[:2], seq=5000)])
    assert strict.process([_msg("s", raw[2:], seq=0)])[0].status == "out-of-order"


def test_reset_command(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    raw = np.random.default_rng(18).standard_normal((6, F)).astype(np.float32)
    engine = _engine(artifact, threshold=1.0)
    engine.process([_msg("s", raw[:3], seq=100)])
    assert engine.reset("s")
    assert not engine.reset("unknown")
    after = engine.process([_msg("s", raw[3:], seq=0)])[0]  # any seq is accepted after a reset
    assert after.status == "processed"
    assert after.stream_status is None
    np.testing.assert_allclose(after.outputs, reference_steps(session(artifact), artifact, raw[3:]), atol=1e-5)


def test_idle_streams_are_evicted_on_the_injected_clock(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    now = [0.0]

    def clock() -> float:
        return now[0]

    engine = _engine(artifact, threshold=1.0, idle_ttl_s=10.0, clock=clock)
    x = np.random.default_rng(19).standard_normal((2, F)).astype(np.float32)
    engine.process([_msg("old", x[0], seq=7, received=0.0), _msg("new", x[0], seq=7, received=8.0)])
    now[0] = 15.0
    assert [e.stream for e in engine.evict_idle()] == ["old"]
    assert "old" not in engine.store
    assert "new" in engine.store
    again = engine.process([_msg("old", x[1], seq=1, received=15.0)])[0]  # a fresh stream: seq 1 is fine
    assert again.status == "processed"
    assert again.stream_status == "warming-up"
    np.testing.assert_allclose(again.outputs, reference_steps(session(artifact), artifact, x[1:]), atol=1e-5)
    assert totals(engine).evicted == 1


def test_streams_beyond_max_streams_are_refused(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path)
    engine = _engine(artifact, threshold=1.0, max_streams=2)
    x = np.ones((1, F))
    outcomes = engine.process([_msg("a", x), _msg("b", x), _msg("c", x), _msg("a", x)])
    assert [o.status for o in outcomes] == ["processed", "processed", "refused", "processed"]
    assert outcomes[2].outputs is None
    assert totals(engine).rejected == {"max-streams": 1}


def test_probability_scores_are_the_output(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path, task="probability")
    engine = _engine(artifact, threshold=0.5)
    o = engine.process([_msg("s", np.random.default_rng(20).standard_normal((5, F)))])[0]
    assert o.outputs is not None
    assert o.outputs.shape == (5, 1)
    np.testing.assert_array_equal(o.scores, o.outputs[:, 0].astype(np.float64))


def test_persistence_model_scores_the_step_change(tmp_path: Path) -> None:
    artifact = write_persistence_artifact(tmp_path, threshold=1.0)
    engine = _engine(artifact, alerts=AlertPolicy(raise_k=1, raise_n=1, clear_m=1, warmup_steps=0))
    x = np.zeros((4, F), np.float32)
    x[2] = 2.0  # one jump up and back: e² = 4 per feature at steps 2 and 3
    o = engine.process([_msg("s", x, seq=0)])[0]
    assert artifact.manifest.score.ewma_alpha == 0.2
    np.testing.assert_allclose(o.scores[1:], [0.0, 0.2 * 4, 0.2 * 4 + 0.8 * 0.2 * 4])  # 0, 0.8, 1.44
    assert [(a.state, a.seq) for a in o.alerts] == [("raised", 3)]


def test_messages_of_the_wrong_width_are_a_caller_bug(tmp_path: Path) -> None:
    engine = _engine(write_variant(tmp_path), threshold=1.0)
    with pytest.raises(BatchError, match=r"expected \[T>=1, 4\]"):
        engine.process([Message("s", np.zeros((1, F + 1), np.float32), None, None)])


def test_state_exported_and_restored_continues_exactly(tmp_path: Path) -> None:
    """A restart from an exported state (as a checkpoint does it) continues the streams exactly."""
    artifact = write_variant(tmp_path, threshold=1.0)
    rng = np.random.default_rng(21)
    data = {"ok": _faulty(rng, steps=120), "bad": _faulty(rng, steps=120, fault=(40, 120))}
    policy = AlertPolicy(raise_k=2, raise_n=3, clear_m=5, warmup_steps=5)
    straight, before = _engine(artifact, alerts=policy), _engine(artifact, alerts=policy)

    def feed(engine: Engine, lo: int, hi: int) -> list[Outcome]:
        batches = ([_msg(n, x[t], seq=t, ts=[t]) for n, x in data.items()] for t in range(lo, hi))
        return [o for batch in batches for o in engine.process(batch)]

    expected = feed(straight, 0, 120)
    first = feed(before, 0, 50)
    streams, columns = before.store.export()
    columns = {k: np.array(["" if v is None else v for v in c]) if c.dtype == object else c for k, c in columns.items()}
    after = _engine(artifact, alerts=policy)
    assert after.store.restore(streams, columns, now=0.0) == []
    rest = feed(after, 50, 120)
    np.testing.assert_array_equal(_outputs(first + rest), _outputs(expected))
    resumed = [(a.id, a.state) for o in first + rest for a in o.alerts]
    assert resumed == [(a.id, a.state) for o in expected for a in o.alerts]
    assert any(a.state == "raised" for o in first for a in o.alerts)  # an alert open across the restart
    assert after.process([_msg("ok", data["ok"][110], seq=110)])[0].status == "duplicate"


HALF = Normalization(mean=[0.0] * F, std=[0.5] * F)  # raw = x / 2: a raw 3e38 is 6e38 after normalization


def _run_alerts(engine: Engine, raw: np.ndarray, stream: str = "s") -> list[tuple[str, int]]:
    """(state, seq) of every alert, one sample per message (seq = t)."""
    alerts: list[tuple[str, int]] = []
    for t in range(len(raw)):
        for o in engine.process([_msg(stream, raw[t], seq=t, ts=[1_763_800_000.0 + t])]):
            alerts.extend((a.state, -1 if a.seq is None else a.seq) for a in o.alerts)
    return alerts


@pytest.mark.parametrize("extreme", [3e38, 1e30, -3e38])
def test_an_extreme_legal_value_does_not_blind_the_stream(tmp_path: Path, extreme: float) -> None:
    """A finite float32 far outside the model's range (3e38 overflows in normalization) is clipped
    (docs/INPUT.md): its alert clears, and a gross fault later on the same stream still alerts."""
    artifact = write_variant(tmp_path, threshold=1.0, normalization=HALF)
    raw = _faulty(np.random.default_rng(21), steps=400, fault=(250, 300)) * np.float32(0.5)
    raw[60, 0] = extreme
    engine = _engine(artifact)
    alerts = _run_alerts(engine, raw)
    assert [state for state, _ in alerts] == ["raised", "cleared", "raised", "cleared"], alerts
    assert 60 <= alerts[0][1] <= 65
    assert alerts[1][1] < 250
    assert 250 <= alerts[2][1] <= 255
    assert totals(engine).clipped_samples == 1


class NaNOnce:
    """An InferenceBackend whose state outputs (and y) turn NaN for the rows of call number `at`."""

    def __init__(self, inner: InferenceBackend, at: int) -> None:
        self.inner, self.at, self.calls = inner, at, 0

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]:
        outputs = self.inner.run(output_names, feeds)
        self.calls += 1
        if self.calls == self.at:
            outputs = [np.full_like(o, np.nan) for o in outputs]
        return outputs


def test_a_stream_whose_state_goes_non_finite_is_reset_counted_and_keeps_alerting(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path, threshold=1.0)
    engine = _engine(artifact, NaNOnce(session(artifact), at=60))
    raw = _faulty(np.random.default_rng(22), steps=300, fault=(200, 250))
    alerts = _run_alerts(engine, raw)
    assert [state for state, _ in alerts] == ["raised", "cleared"], alerts
    assert 200 <= alerts[0][1] <= 205
    counts = totals(engine)
    assert counts.non_finite_resets == 1
    assert counts.model_resets == 1
    assert np.isfinite(engine.store.column(artifact.manifest.state[0].input)).all()
