"""The `stale` status (issue 12): a stream with no sample stepped for stale_after_s says so.

Before: a machine whose every message was rejected kept its retained status `ok` forever.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_config.schema import AlertPolicy, BaselineConfig, ModelConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from tests.support.core_artifacts import session, write_variant

F = 4


def _msg(stream: str, seq: int, received: float, value: float = 0.0) -> Message:
    return Message(stream, np.full((1, F), value, np.float32), seq, None, received=received, received_wall=1.7e9)


def test_a_silent_stream_turns_stale_and_its_next_sample_restores_the_status(tmp_path: Path) -> None:
    artifact = write_variant(tmp_path, threshold=1.0)
    model = ModelConfig(
        path=artifact.directory,
        target="cpu",
        alerts=AlertPolicy(raise_k=1, raise_n=1, clear_m=5, warmup_steps=0),
        baseline=BaselineConfig(learn_steps=0),
    )
    now = [0.0]
    engine = Engine(artifact, session(artifact), model, name="m", clock=lambda: now[0], stale_after_s=60.0)
    engine.process([_msg("quiet", 0, 0.0), _msg("faulty", 0, 0.0)])  # warming up: no prediction yet
    first = engine.process([_msg("quiet", 1, 0.5), _msg("faulty", 1, 0.5)])
    assert [o.stream_status for o in first] == ["ok", "ok"]
    raised = engine.process([_msg("faulty", 2, 1.0, value=50.0)])[0]
    assert raised.stream_status == "alert"
    now[0] = 30.0
    assert engine.stale_statuses() == []
    now[0] = 62.0
    # "faulty" keeps `alert`: its alert is open, and a status other than alert promises none is
    assert engine.stale_statuses() == [("quiet", "stale")]
    assert engine.stale_statuses() == []  # reported once
    assert engine.take_counts().stale == 1
    back = engine.process([_msg("quiet", 2, 62.0)])[0]
    assert back.stream_status == "ok"
    never = Engine(artifact, session(artifact), model, name="m", clock=lambda: now[0])
    never.process([_msg("quiet", 0, 0.0)])
    now[0] = 1e6
    assert never.stale_statuses() == []
