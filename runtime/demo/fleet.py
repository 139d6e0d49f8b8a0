"""The demo's machines, its shipped model and the threshold the demo alerts on.

Four pumps run for DEMO_STEPS simulated seconds; `pump-3`'s valve starts closing at
second 240. The shipped model (`model/`, made by `make_model`) was trained and calibrated
on other simulated healthy machines (different seeds): none of these four was seen.
"""

from __future__ import annotations

from pathlib import Path

from edge_config.manifest import Manifest
from runtime.demo.simulator import Failure, Machine

__all__ = ["DEMO_FLEET", "DEMO_STEPS", "MODEL_DIR", "THRESHOLD_Z", "demo_threshold"]

MODEL_DIR = Path(__file__).resolve().parent / "model"
DEMO_STEPS = 600
DEMO_FLEET: tuple[Machine, ...] = (
    Machine("pump-1", seed=101),
    Machine("pump-2", seed=102),
    Machine("pump-3", seed=103, failure=Failure("valve-closing", start_s=240, ramp_s=60)),
    Machine("pump-4", seed=104),
)
THRESHOLD_Z = 10.0
"""telemanom-style ε = μ + zσ over the calibration scores (z searched in 2.5–12 there). The
manifest's own threshold is the 99.5% quantile: fine for a benchmark, but every healthy
machine would cross it for a moment every few minutes, and a demo must not cry wolf."""


def demo_threshold(manifest: Manifest) -> float:
    """μ + THRESHOLD_Z·σ of the scores the exporter saw on healthy calibration data."""
    if manifest.calibration is None:
        raise ValueError(f"{manifest.name}: the demo model needs calibration statistics in its manifest")
    return manifest.calibration.score_mean + THRESHOLD_Z * manifest.calibration.score_std
