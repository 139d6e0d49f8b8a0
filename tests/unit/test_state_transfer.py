"""State out of one Engine and into another: checkpoints after a restart, a model swap, eviction
clears, re-warming counts, and the background checkpoint writer. No MQTT."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge_config.errors import CheckpointError
from edge_config.schema import AlertPolicy, ModelConfig, TargetConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from runtime.model.artifact import load_artifact
from runtime.model.session import create_session
from runtime.state.checkpoint import CheckpointWrite, load_checkpoint, write_checkpoint
from runtime.state.format import StateLayout, StateSnapshot
from runtime.state.transfer import restore_engine, snapshot_columns, snapshot_engine, transfer_state
from runtime.state.writer import CheckpointWriter
from tests.support.engine_counts import totals
from tests.support.onnx_artifacts import write_lstm_artifact, write_persistence_artifact

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas" / "alert.schema.json").read_text())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def engine_for(
    directory: Path, *, alerts: AlertPolicy | None = None, clock: Clock | None = None, idle_ttl_s: float = 3600.0
) -> Engine:
    artifact = load_artifact(directory)
    session, _ = create_session(artifact, TargetConfig(type="cpu"), name="m")
    model = ModelConfig(path=directory, target="cpu", alerts=alerts or AlertPolicy())
    return Engine(artifact, session, model, name="m", idle_ttl_s=idle_ttl_s, clock=clock or Clock())


def messages(streams: list[str], seqs: range, rng: np.random.Generator, features: int = 4) -> list[list[Message]]:
    """One batch per seq, one message per stream; values fixed by rng."""
    return [
        [Message(s, rng.normal(size=(1, features)).astype(np.float32), q, None, 0.0, 1.7e9 + q) for s in streams]
        for q in seqs
    ]


def outputs(engine: Engine, batches: list[list[Message]]) -> dict[str, list[np.ndarray]]:
    got: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for o in engine.process(batch):
            assert o.status == "processed"
            assert o.outputs is not None
            got.setdefault(o.message.stream, []).append(o.outputs)
    return got


def test_a_snapshot_round_trip_through_a_file_continues_exactly(tmp_path: Path) -> None:
    art = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1.0)
    batches = messages(["a", "b", "c"], range(40), np.random.default_rng(1))
    reference = engine_for(art)
    outputs(reference, batches[:20])
    path = tmp_path / "state.m.ckpt"
    write_checkpoint(path, snapshot_engine(reference))
    expected = outputs(reference, batches[20:])
    loaded = load_checkpoint(path, StateLayout.from_manifest(reference.artifact.manifest))
    assert loaded.snapshot is not None
    assert set(loaded.snapshot.streams) == {"a", "b", "c"}
    restarted = engine_for(art)
    restored = restore_engine(restarted, loaded.snapshot.streams, snapshot_columns(loaded.snapshot), 0.0, restart=True)
    assert (restored.streams, restored.model_state, restored.dropped) == (3, True, ())
    got = outputs(restarted, batches[20:])
    for stream in "abc":  # same state, same next inputs: the same outputs (no gap: nothing re-warms)
        np.testing.assert_allclose(np.concatenate(got[stream]), np.concatenate(expected[stream]), rtol=0, atol=1e-6)
    assert totals(restarted).rewarming == 0


def test_after_a_restart_a_gap_rewarms_the_stream_and_is_counted(tmp_path: Path) -> None:
    art = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1.0)
    batches = messages(["a", "b"], range(40), np.random.default_rng(2))
    reference = engine_for(art)
    outputs(reference, batches[:20])
    snapshot = snapshot_engine(reference)  # the checkpoint; seq 20..29 are then processed, acked, lost
    restarted = engine_for(art)
    restore_engine(restarted, snapshot.streams, snapshot_columns(snapshot), 0.0, restart=True)
    # "a" comes back at seq 30 (a gap: re-warms); "b" at 20 (its next seq: resumes as saved)
    outcomes = restarted.process([batches[30][0], batches[20][1]])
    assert [o.status for o in outcomes] == ["processed", "processed"]
    steps = restarted.store.steps
    assert steps[restarted.store.slot("a")] == 1
    assert steps[restarted.store.slot("b")] == 21
    assert totals(restarted).rewarming == 1
    assert totals(restarted).gaps == 1


def test_a_reload_keeps_state_only_for_the_same_model_and_rewarms_other_weights_or_shapes(tmp_path: Path) -> None:
    small = write_lstm_artifact(tmp_path / "a", features=4, hidden=8, threshold=1.0, seed=1)
    same_shape = write_lstm_artifact(tmp_path / "b", features=4, hidden=8, threshold=1.0, seed=2)
    bigger = write_lstm_artifact(tmp_path / "c", features=4, hidden=16, threshold=1.0, seed=3)
    old = engine_for(small)
    outputs(old, messages(["a", "b"], range(10), np.random.default_rng(3)))
    kept = engine_for(small)  # the same model bytes (a reload that changed only settings)
    carried = transfer_state(old, kept)
    assert (carried.streams, carried.model_state) == (2, True)
    slot = kept.store.slot("a")
    before = old.store.column("h0.lstm")[:, old.store.slot("a")]
    np.testing.assert_array_equal(kept.store.column("h0.lstm")[:, slot], before)
    retrained = engine_for(same_shape)  # other weights of the same shapes: their h/c mean nothing here
    carried = transfer_state(old, retrained)
    assert (carried.streams, carried.model_state) == (2, False)
    slot = retrained.store.slot("a")
    assert retrained.store.steps[slot] == 0
    assert retrained.store.last_seq[slot] == 9
    assert not retrained.store.column("h0.lstm")[:, slot].any()
    other = engine_for(bigger)
    carried = transfer_state(old, other)
    assert (carried.streams, carried.model_state) == (2, False)
    # model_state False: the service counts these 2 streams in `rewarming` (runtime.service.swap)
    slot = other.store.slot("a")
    assert other.store.steps[slot] == 0
    assert other.store.last_seq[slot] == 9
    assert not other.store.column("h0.lstm")[:, slot].any()


def test_a_changed_raise_window_drops_the_window_columns_together(tmp_path: Path) -> None:
    art = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1.0)
    old = engine_for(art, alerts=AlertPolicy(raise_k=2, raise_n=5))
    outputs(old, messages(["a"], range(5), np.random.default_rng(4)))
    new = engine_for(art, alerts=AlertPolicy(raise_k=2, raise_n=3))
    carried = transfer_state(old, new)
    assert carried.dropped == ("alert.above", "alert.pos", "alert.ring")
    assert carried.model_state


def test_a_new_stream_first_seen_mid_sequence_is_rewarming(tmp_path: Path) -> None:
    art = write_lstm_artifact(tmp_path / "lstm", features=4, threshold=1.0)
    engine = engine_for(art)
    x = np.zeros((1, 4), np.float32)
    engine.process([Message("new", x, 0, None), Message("lost", x, 500, None), Message("noseq", x, None, None)])
    engine.process([Message("lost", x, 501, None)])
    assert totals(engine).rewarming == 1


def test_an_evicted_stream_with_an_open_alert_gets_a_cleared_with_reason_evicted(tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "p", features=3, threshold=1.0, ewma_alpha=1.0)
    clock = Clock()
    engine = engine_for(
        art, alerts=AlertPolicy(raise_k=1, raise_n=1, clear_m=3, warmup_steps=0), clock=clock, idle_ttl_s=10.0
    )
    raised = []
    for seq, v in enumerate([0.0, 5.0]):  # a jump of 5: score 25/3 > 1
        for name in ("loud", "quiet"):
            values = np.full((1, 3), v if name == "loud" else 0.0, np.float32)
            for o in engine.process([Message(name, values, seq, None, clock.now, 1.7e9)]):
                raised += o.alerts
    assert [(a.stream, a.state) for a in raised] == [("loud", "raised")]
    clock.now = 11.0
    evictions = engine.evict_idle(wall_now=1.7e9 + 11)
    by_stream = {e.stream: e.cleared for e in evictions}
    assert set(by_stream) == {"loud", "quiet"}
    assert by_stream["quiet"] is None
    cleared = by_stream["loud"]
    assert cleared is not None
    assert (cleared.state, cleared.reason, cleared.id) == ("cleared", "evicted", raised[0].id)
    assert cleared.ts == 1.7e9  # the stream's last step, the clock of `started` (issue 14)
    assert cleared.evicted_at == 1.7e9 + 11  # the gateway's clock
    assert cleared.seq is None
    assert cleared.score == raised[0].score
    doc = json.loads(cleared.to_json())
    jsonschema.validate(doc, SCHEMA)
    assert doc["reason"] == "evicted"
    assert "reason" not in json.loads(raised[0].to_json())
    assert len(engine.store) == 0
    assert sum(e.cleared is not None for e in evictions) == 1


# --- the background writer --------------------------------------------------------------------


def _snapshot(n: int = 1) -> StateSnapshot:
    return StateSnapshot(
        "0" * 64, tuple(f"s{i}" for i in range(n)), {}, np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.int64)
    )


def test_the_writer_keeps_one_pending_snapshot_per_file_and_writes_the_newest(tmp_path: Path) -> None:
    release = threading.Event()
    written: list[int] = []

    def slow(path: Path, snapshot: StateSnapshot) -> CheckpointWrite:
        release.wait(10)
        written.append(len(snapshot.streams))
        return write_checkpoint(path, snapshot)

    writer = CheckpointWriter(write=slow)
    path = tmp_path / "x.ckpt"
    writer.submit(path, _snapshot(1))  # taken by the thread, blocked in the "disk"
    time.sleep(0.2)
    writer.submit(path, _snapshot(2))
    writer.submit(path, _snapshot(3))  # replaces 2, still waiting
    release.set()
    assert writer.close(10)
    stats = writer.stats()
    assert written == [1, 3]
    assert (stats.written, stats.superseded, stats.failed) == (2, 1, 0)
    assert stats.bytes == stats.last_bytes + path.with_name("x.ckpt.1").stat().st_size


def test_a_failing_disk_is_counted_logged_once_and_recovery_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fail = [True]

    def flaky(path: Path, snapshot: StateSnapshot) -> CheckpointWrite:
        if fail[0]:
            raise CheckpointError(f"{path}: checkpoint write failed: No space left on device")
        return write_checkpoint(path, snapshot)

    caplog.set_level(logging.INFO, logger="edgewatch.checkpoint")
    writer = CheckpointWriter(write=flaky)
    path = tmp_path / "x.ckpt"
    for _ in range(5):
        writer.submit(path, _snapshot())
        assert writer.wait_idle(5)
    fail[0] = False
    writer.submit(path, _snapshot())
    assert writer.close(5)
    stats = writer.stats()
    assert (stats.failed, stats.written) == (5, 1)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "No space left on device" in errors[0].getMessage()
    assert any("work again" in r.getMessage() for r in caplog.records)
