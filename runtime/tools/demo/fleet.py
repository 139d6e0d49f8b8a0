"""The demo's machines, its shipped model and the threshold the demo alerts on.

Four pumps run for DEMO_STEPS simulated seconds; `pump-3`'s valve starts closing at
second 240. The shipped model (`model/`, made by `make_model`) was trained and calibrated
on other simulated healthy machines (different seeds): none of these four was seen.
"""

from __future__ import annotations

from pathlib import Path

from edge_config.manifest import Manifest
from runtime.tools.demo.simulator import Failure, Machine

MODEL_DIR = Path(__file__).resolve().parent / "model"
DEMO_STEPS = 600
DEMO_FLEET: tuple[Machine, ...] = (
    Machine("pump-1", seed=101),
    Machine("pump-2", seed=102),
    Machine("pump-3", seed=103, failure=Failure("valve-closing", start_s=240, ramp_s=60)),
    Machine("pump-4", seed=104),
)
MAX_MACHINES = 20
MAX_DURATION_S = 3600
"""`fleet(MAX_MACHINES)`, replayed through the shipped model for MAX_DURATION_S at the demo
threshold, raises on pump-3 only (tests/mqtt/test_demo.py). A bigger or longer run would be an
unchecked bet on the tail of the healthy score, so the demo refuses one."""
THRESHOLD_Z = 10.0
"""telemanom-style ε = μ + zσ over the calibration scores (z searched in 2.5–12 there). The
manifest's own threshold is the 99.5% quantile: fine for a benchmark, but every healthy
machine would cross it for a moment every few minutes, and a demo must not cry wolf."""


def demo_threshold(manifest: Manifest) -> float:
    """μ + THRESHOLD_Z·σ of the scores the exporter saw on healthy calibration data."""
    if manifest.calibration is None:
        raise ValueError(f"{manifest.name}: the demo model needs calibration statistics in its manifest")
    return manifest.calibration.score_mean + THRESHOLD_Z * manifest.calibration.score_std


def fleet(machines: int) -> tuple[Machine, ...]:
    """DEMO_FLEET resized to `machines` pumps (2..MAX_MACHINES): the failing pump-3 always
    runs, beside healthy pumps in name order (pump-5 on: seed 100 + i)."""
    if not 2 <= machines <= MAX_MACHINES:
        raise ValueError(f"the demo runs 2 to {MAX_MACHINES} machines, not {machines}")
    extra = tuple(Machine(f"pump-{i}", seed=100 + i) for i in range(len(DEMO_FLEET) + 1, MAX_MACHINES + 1))
    pool = DEMO_FLEET + extra
    failing = sum(m.failure is not None for m in pool)
    healthy = [m.name for m in pool if m.failure is None][: machines - failing]
    return tuple(m for m in pool if m.failure is not None or m.name in healthy)
