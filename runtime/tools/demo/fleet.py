"""The demo's machines and its shipped model.

Four pumps run for DEMO_STEPS simulated seconds; `pump-3`'s valve starts closing at second
FAILURE_ONSET_S. The shipped model (`model/`, made by `make_model`) was trained and calibrated
on other simulated healthy machines (different seeds): none of these four was seen. The demo
alerts on the manifest's threshold, with the gateway's default per-stream baselines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.tools.demo.simulator import Failure, Machine, Shift, Variation

MODEL_DIR = Path(__file__).resolve().parent / "model"
FAILURE_ONSET_S = 480
"""When pump-3's valve starts closing: after every pump has learned its baseline. With the
default baselines a stream warms up for 20 steps and learns over its next 300 (t≈320 s); a
failure inside that window would only alert above 10x the threshold, and this margin also
covers the learning steps a healthy pump's scores skip (those above its learning threshold)."""
DEMO_STEPS = 900
MIN_DURATION_S = FAILURE_ONSET_S + 60
"""A run ends at least a minute after the onset: the valve is fully shut by then."""
DEMO_FLEET: tuple[Machine, ...] = (
    Machine("pump-1", seed=101),
    Machine("pump-2", seed=102),
    Machine("pump-3", seed=103, failure=Failure("valve-closing", start_s=FAILURE_ONSET_S, ramp_s=60)),
    Machine("pump-4", seed=104),
)
MAX_MACHINES = 20
MAX_DURATION_S = 3600
"""`fleet(MAX_MACHINES)`, replayed through the shipped model for MAX_DURATION_S at the
manifest's threshold with the default baselines, raises on pump-3 only (tests/mqtt/test_demo.py).
A bigger or longer run would be an unchecked bet on the tail of the healthy score, so the demo
refuses one."""


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


SHIFTED_SENSORS = ("Current", "Pressure", "Temperature")


def heterogeneous_fleet(machines: int, seed: int, *, shift_at: int, sigmas: float = 2.0) -> tuple[Machine, ...]:
    """`machines` healthy pumps whose readings differ from the rig the model was trained on
    (Variation.random: offsets, gains, noise, phase), and one more, "faulty", whose Current,
    Pressure and Temperature step by `sigmas` healthy standard deviations at `shift_at`.
    Deterministic per seed (benchmarks/fleet_alarms.py, tests/unit/test_fleet_alarms.py)."""
    rng = np.random.default_rng(seed)
    pool = [Machine(f"m{i:02d}", seed=10_000 * seed + i, variation=Variation.random(rng)) for i in range(machines)]
    shift = Shift(shift_at, SHIFTED_SENSORS, sigmas)
    pool.append(Machine("faulty", seed=10_000 * seed + 999, variation=Variation.random(rng), shift=shift))
    return tuple(pool)
