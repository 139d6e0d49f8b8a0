"""The shipped demo model, run through the Engine on simulated machines (no MQTT, no torch) as
the demo serves it (the manifest's threshold, the default per-stream baselines): it flags the
failing machine soon after its failure starts and never a healthy one."""

from __future__ import annotations

import numpy as np
import pytest

from edge_config.schema import ModelConfig, TargetConfig
from runtime.engine.engine import Engine
from runtime.engine.replay import Recording, replay
from runtime.model.artifact import load_artifact
from runtime.model.session import create_session
from runtime.tools.demo.fleet import DEMO_FLEET, DEMO_STEPS, FAILURE_ONSET_S, MODEL_DIR, fleet
from runtime.tools.demo.simulator import Failure, Machine, simulate


def _engine() -> Engine:
    artifact = load_artifact(MODEL_DIR)
    session, _ = create_session(artifact, TargetConfig(type="cpu"))
    model = ModelConfig(path=MODEL_DIR, target="cpu")
    return Engine(artifact, session, model, name="pump-rig-demo")


def test_shipped_artifact_is_small_int8_and_calibrated() -> None:
    artifact = load_artifact(MODEL_DIR)
    m = artifact.manifest
    assert m.precision == "int8"
    assert m.task == "forecast"
    assert m.calibration is not None
    assert m.calibration.method == "pot"
    assert m.calibration.target_steps is not None
    assert m.score.residual_std is not None
    assert all(p.passed or p.skipped for p in m.parity)
    assert len(artifact.model_bytes) < 100_000


def test_demo_fleet_flags_the_failing_pump_only() -> None:
    recordings = {m.name: simulate(m, DEMO_STEPS) for m in DEMO_FLEET}
    out = replay(_engine(), {n: Recording(r.values, r.ts) for n, r in recordings.items()})
    for machine in DEMO_FLEET:
        raised = [a.seq for a in out[machine.name].alerts if a.state == "raised"]
        if machine.failure is None:
            assert raised == [], f"{machine.name} is healthy but raised at {raised}"
        else:
            start = machine.failure.start_s
            assert raised, f"{machine.name}: raised at {raised}"
            assert raised[0] is not None  # replay gives every message a seq
            assert start <= raised[0] <= start + 120, f"{machine.name}: raised at {raised}"
            assert out[machine.name].raised[-1], "the alert must stay raised while the valve stays shut"


def test_every_pump_has_learned_its_baseline_before_the_onset() -> None:
    """The failure starts after learning: a failure inside it would only alert above 10x the threshold."""
    engine = _engine()
    recordings = {m.name: simulate(m, FAILURE_ONSET_S) for m in fleet(20)}
    replay(engine, {n: Recording(r.values, r.ts) for n, r in recordings.items()})
    assert engine.baselines.enabled
    assert len(engine.store) == 20
    assert engine.baselines.census() == (0, 0)  # none learning, none out of range


ONSET = FAILURE_ONSET_S
"""The other failure modes start when the demo's does: after the baselines are learned."""


@pytest.mark.parametrize(
    "failure",
    [
        Failure("cavitation", start_s=ONSET),
        Failure("sensor-drift", start_s=ONSET, channel="Pressure"),
        Failure("sensor-drift", start_s=ONSET, channel="Volume Flow RateRMS"),
    ],
    ids=["cavitation", "drift-pressure", "drift-flow"],
)
def test_other_failure_modes_are_flagged(failure: Failure) -> None:
    sick = simulate(Machine("sick", seed=7, failure=failure), ONSET + 600)
    healthy = simulate(Machine("well", seed=8), ONSET + 600)
    out = replay(_engine(), {"sick": Recording(sick.values, sick.ts), "well": Recording(healthy.values, healthy.ts)})
    first = next(a.seq for a in out["sick"].alerts if a.state == "raised")
    assert first is not None  # replay gives every message a seq
    assert ONSET <= first <= ONSET + 180
    assert out["well"].alerts == []
    assert np.nanmax(out["sick"].scores[ONSET + 100 :]) > 2 * out["sick"].alerts[0].threshold
