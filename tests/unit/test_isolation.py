"""Batch isolation on a cpu-int8 artifact, through the real Engine: a stream's alerts do not
depend on which streams share its batch, and replaying its input gives the same alert ids.

The artifact is quantized by the exporter's own cpu-int8 code (int8 weights, float compute),
built without torch. The last test shows why: ORT's quantize_dynamic, which cpu-int8 used
before, fails the export's isolation gate on the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edge_config.schema import AlertPolicy, ModelConfig
from exporter import parity
from exporter.onnx_run import GraphRunner, StateNames
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from runtime.model.artifact import Artifact, load_artifact
from tests.support.artifact_variants import write_int8_artifact, write_weight_int8_artifact
from tests.support.core_artifacts import session

F = 4
STEPS = 240
NEIGHBOURS = 40
THRESHOLD = 3.0

AlertKey = tuple[str, str, int | None]


def _probe() -> NDArray[np.float32]:
    """A healthy stream [STEPS, F] with a 3-sigma shift on two sensors from step 120 to 170."""
    x = np.random.default_rng(7).standard_normal((STEPS, F)).astype(np.float32)
    x[120:170, :2] += 3.0
    return x


def _glitching(seed: int) -> NDArray[np.float32]:
    """NEIGHBOURS streams [NEIGHBOURS, STEPS, F] whose sensors glitch ×100 on a fifth of the steps."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((NEIGHBOURS, STEPS, F)).astype(np.float32)
    glitch = rng.random(x.shape) < 0.2
    return np.where(glitch, x * 100, x).astype(np.float32)


def _engine(artifact: Artifact) -> Engine:
    model = ModelConfig(path=artifact.directory, target="cpu", threshold=THRESHOLD, alerts=AlertPolicy(warmup_steps=5))
    return Engine(artifact, session(artifact), model, name="m")


def _msg(stream: str, values: NDArray[np.float32], seq: int) -> Message:
    return Message(stream, values.reshape(1, F), seq, None, received=float(seq), received_wall=1.7e9 + seq)


def _probe_run(
    artifact: Artifact, neighbours: NDArray[np.float32] | None
) -> tuple[list[AlertKey], NDArray[np.float64]]:
    """Step the probe one sample per call, alone or in one batch with every neighbour's sample:
    its alerts (id, state, seq) and its scores [STEPS]."""
    engine, probe = _engine(artifact), _probe()
    alerts: list[AlertKey] = []
    scores: list[NDArray[np.float64]] = []
    for t in range(STEPS):
        batch = [_msg("probe", probe[t], t)]
        if neighbours is not None:
            batch += [_msg(f"glitchy-{i}", neighbours[i, t], t) for i in range(NEIGHBOURS)]
        for outcome in engine.process(batch):
            if outcome.message.stream != "probe":
                continue
            assert outcome.scores is not None
            scores.append(outcome.scores)
            alerts += [(a.id, a.state, a.seq) for a in outcome.alerts]
    return alerts, np.concatenate(scores)


@pytest.fixture
def int8_artifact(tmp_path: Path) -> Artifact:
    return load_artifact(write_weight_int8_artifact(tmp_path / "int8"))


def test_probe_alerts_alone_equal_probe_alerts_among_glitching_neighbours(int8_artifact: Artifact) -> None:
    alone, scores = _probe_run(int8_artifact, None)
    assert [state for _, state, _ in alone].count("raised") >= 1  # the shift raises: the comparison means something
    for seed in (1, 2):
        among, among_scores = _probe_run(int8_artifact, _glitching(seed))
        assert among == alone
        # Bit for bit, NaN (no prediction yet) where alone has NaN: not merely the same decisions.
        assert np.array_equal(among_scores, scores, equal_nan=True)


def test_replaying_the_same_input_gives_the_same_alert_ids(int8_artifact: Artifact) -> None:
    first, _ = _probe_run(int8_artifact, _glitching(seed=3))
    assert first
    again, _ = _probe_run(int8_artifact, _glitching(seed=3))
    assert again == first


def _runner(artifact: Artifact) -> GraphRunner:
    names = StateNames(
        inputs=[s.input for s in artifact.manifest.state],
        outputs=[s.output for s in artifact.manifest.state],
        shapes=[(int(s.shape[0]), int(s.shape[2])) for s in artifact.manifest.state],
    )
    return GraphRunner(session(artifact), names, output_kind=artifact.manifest.output_kind)


def test_isolation_gate_passes_int8_weights_and_fails_quantize_dynamic(tmp_path: Path) -> None:
    probe = _probe()[: parity.ISOLATION_STEPS]
    weights = load_artifact(write_weight_int8_artifact(tmp_path / "weights"))
    result = parity.gate_isolation(_runner(weights), probe, evaluator="CPUExecutionProvider")
    assert result.passed
    assert result.value == 0.0
    assert result.gate == "batch-isolation"

    dynamic = load_artifact(write_int8_artifact(tmp_path / "dynamic"))
    result = parity.gate_isolation(_runner(dynamic), probe, evaluator="CPUExecutionProvider")
    assert not result.passed
    assert result.value > 0.0
