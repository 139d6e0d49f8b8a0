"""A heterogeneous fleet (runtime.tools.demo.fleet.heterogeneous_fleet) replayed offline through the
gateway's own Engine: what benchmarks/fleet_alarms.py measures and tests/unit/test_fleet_alarms.py pins."""

from __future__ import annotations

from pathlib import Path

from edge_config.schema import AlertPolicy, BaselineConfig, ModelConfig, TargetConfig
from runtime.engine.engine import Engine
from runtime.engine.replay import Recording, replay
from runtime.model.artifact import load_artifact
from runtime.model.session import create_session
from runtime.tools.demo.fleet import heterogeneous_fleet
from runtime.tools.demo.simulator import simulate

__all__ = ["fleet_recordings", "raised_alerts"]


def fleet_recordings(machines: int, steps: int, seed: int, *, shift_at: int, sigmas: float) -> dict[str, Recording]:
    """`steps` samples of every machine of `heterogeneous_fleet(machines, seed, ...)`, by name."""
    pool = heterogeneous_fleet(machines, seed, shift_at=shift_at, sigmas=sigmas)
    return {m.name: Recording(r.values, r.ts) for m in pool for r in [simulate(m, steps)]}


def raised_alerts(
    model_dir: Path,
    recordings: dict[str, Recording],
    baseline: BaselineConfig,
    *,
    threshold: float | None = None,
    ewma_alpha: float | None = None,
) -> dict[str, list[int]]:
    """Each stream's `raised` alerts (seq), served by the model with the default hysteresis and
    `baseline`; threshold and ewma_alpha: config overrides (None: the manifest's)."""
    artifact = load_artifact(model_dir)
    session, _ = create_session(artifact, TargetConfig(type="cpu"))
    config = ModelConfig(
        path=model_dir,
        target="cpu",
        threshold=threshold,
        baseline=baseline,
        alerts=AlertPolicy(),
        ewma_alpha=ewma_alpha,
    )
    out = replay(Engine(artifact, session, config, name="fleet"), recordings)
    return {name: [a.seq or 0 for a in r.alerts if a.state == "raised"] for name, r in out.items()}
