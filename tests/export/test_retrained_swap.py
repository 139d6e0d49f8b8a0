"""A SIGHUP to retrained weights (same shapes, another sha256): healthy streams stay silent,
because the old model's recurrent state is never carried into the new one (issue 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_config.schema import ModelConfig, TargetConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from runtime.model.artifact import load_artifact
from runtime.model.session import create_session
from runtime.state.transfer import transfer_state
from runtime.tools.demo.fleet import MODEL_DIR
from runtime.tools.demo.simulator import Machine, simulate

pytestmark = [pytest.mark.torch, pytest.mark.slow]
STREAMS, BEFORE, AFTER = 10, 400, 400


def _engine(directory: Path) -> Engine:
    artifact = load_artifact(directory)
    session, _ = create_session(artifact, TargetConfig(type="cpu"))
    return Engine(artifact, session, ModelConfig(path=directory, target="cpu"), name="pumps")


def _run(engine: Engine, data: dict[str, np.ndarray], rows: range) -> list[tuple[str, int | None]]:
    raised = []
    for t in rows:
        batch = [Message(name, values[t : t + 1], t, None, float(t), 1.7e9 + t) for name, values in data.items()]
        for outcome in engine.process(batch):
            raised += [(a.stream, a.seq) for a in outcome.alerts if a.state == "raised"]
    return raised


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model trained again with another seed: other weights, the same shapes."""
    from runtime.tools.demo.make_model import main

    out = tmp_path_factory.mktemp("retrained") / "model"
    assert main(["--out", str(out), "--seed", "1"]) == 0
    return out


def test_healthy_streams_stay_silent_after_a_swap_to_retrained_weights(retrained: Path) -> None:
    data = {f"pump-{i}": simulate(Machine(f"pump-{i}", seed=300 + i), BEFORE + AFTER).values for i in range(STREAMS)}
    old = _engine(MODEL_DIR)
    assert _run(old, data, range(BEFORE)) == []
    new = _engine(retrained)
    assert new.artifact.sha256 != old.artifact.sha256
    carried = transfer_state(old, new)
    assert (carried.streams, carried.model_state) == (STREAMS, False)  # they re-warm (the service counts them)
    assert _run(new, data, range(BEFORE, BEFORE + AFTER)) == []
