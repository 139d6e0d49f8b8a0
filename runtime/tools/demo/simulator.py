"""A pump/valve rig simulator for the demo: numpy only (the gateway has no torch).

Each machine is a centrifugal pump pushing water through a valve, sampled at 1 Hz with the
8 channels of SKAB's testbed (same names, similar magnitudes):

    Accelerometer1RMS, Accelerometer2RMS  vibration RMS [g], pump and motor bearings
    Current                               motor current [A], follows hydraulic power
    Pressure                              discharge pressure [bar], a coarse noisy sensor
    Temperature                           motor winding temperature [°C], slow (I² heating)
    Thermocouple                          water temperature [°C], slower still
    Voltage                               supply voltage [V], mains noise
    Volume Flow RateRMS                   flow [l/min], read as whole numbers like SKAB's meter

Physics, simplified but with the couplings a detector should learn: the valve opening sets
the flow (first-order lag of a few seconds); the pump curve turns less flow into more
pressure; hydraulic power (and so current) falls with the flow; the motor heats with the
current squared; vibration rises when the pump runs away from its best-efficiency flow.

Failure modes, each starting at a chosen second and developing over `ramp_s`:

- valve-closing: the valve creeps shut (flow down, pressure up, current down).
- cavitation: suction pressure too low; flow drops, vibration bursts, pressure fluctuates.
- sensor-drift: one channel's reading ramps away from the truth (the process is healthy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["FAILURE_KINDS", "SENSORS", "Failure", "Machine", "Recording", "Shift", "Variation", "simulate"]

SENSORS: tuple[str, ...] = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
FailureKind = Literal["valve-closing", "cavitation", "sensor-drift"]
FAILURE_KINDS: tuple[str, ...] = ("valve-closing", "cavitation", "sensor-drift")


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    start_s: int
    """Second at which the failure begins (labels are 1 from here on)."""
    ramp_s: int = 60
    """Seconds until it is fully developed."""
    severity: float = 1.0
    """1.0 is a clear, plant-relevant failure; smaller is subtler."""
    channel: str = "Pressure"
    """sensor-drift only: which reading drifts."""

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {self.kind!r}; known: {', '.join(FAILURE_KINDS)}")
        if self.start_s < 0 or self.ramp_s < 1 or self.severity <= 0:
            raise ValueError("start_s must be >= 0, ramp_s >= 1 and severity > 0")
        if self.kind == "sensor-drift" and self.channel not in SENSORS:
            raise ValueError(f"sensor-drift channel {self.channel!r} is not one of {SENSORS}")


@dataclass(frozen=True)
class Variation:
    """How one machine's readings differ from the machines a model was trained on: a fleet is
    never uniform (other mounting, calibration, wear, load). Units are the sensor's own healthy
    standard deviation on this machine, so a variation means the same for every channel."""

    offset: tuple[float, ...] = ()
    """Added to each sensor (SENSORS order), in healthy standard deviations; () for none."""
    gain: float = 1.0
    """Fluctuations around each sensor's mean, scaled by this."""
    noise: float = 0.0
    """Extra white noise on each sensor, in healthy standard deviations."""
    phase_s: int = 0
    """The recording starts this many seconds into the machine's life (slow cycles out of step)."""
    seed: int = 0

    @classmethod
    def random(cls, rng: np.random.Generator, scale: float = 1.0) -> Variation:
        """A plausible healthy machine of a heterogeneous fleet; scale 1: offsets up to ±1.5
        standard deviations, gains 0.7-1.4, up to 0.5 standard deviations of extra noise."""
        return cls(
            offset=tuple(float(v) for v in rng.uniform(-1.5, 1.5, len(SENSORS)) * scale),
            gain=float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)) * scale)),
            noise=float(rng.uniform(0.0, 0.5) * scale),
            phase_s=int(rng.integers(0, 3600)),
            seed=int(rng.integers(0, 2**31)),
        )


@dataclass(frozen=True)
class Shift:
    """A step change on some sensors: `sigmas` healthy standard deviations from `start_s` on
    (a fault that moves readings without a ramp: a fouled sensor, a slipped belt)."""

    start_s: int
    sensors: tuple[str, ...]
    sigmas: float = 2.0


@dataclass(frozen=True)
class Machine:
    """One pump. The operating point varies a little from machine to machine (seeded)."""

    name: str
    seed: int = 0
    failure: Failure | None = None
    nominal_flow: float = 32.0
    """l/min at the normal valve opening (SKAB's rig runs at ~32 or ~125)."""
    variation: Variation | None = None
    """How its readings differ from the rig the model was trained on (None: not at all)."""
    shift: Shift | None = None
    """A step change on some sensors (labelled like a failure)."""


@dataclass(frozen=True)
class Recording:
    values: np.ndarray
    """float32 [T, 8] in SENSORS order, raw units."""
    ts: np.ndarray
    """float64 [T] seconds since the epoch (1 Hz)."""
    labels: np.ndarray
    """int8 [T]: 1 from the failure's start on."""


def _ramp(t: np.ndarray, failure: Failure | None, kind: str) -> np.ndarray:
    """0 before the failure, rising linearly to `severity` over ramp_s, 0 for other kinds."""
    if failure is None or failure.kind != kind:
        return np.zeros_like(t)
    return np.clip((t - failure.start_s) / failure.ramp_s, 0.0, 1.0) * failure.severity


def _ar1(rng: np.random.Generator, steps: int, rho: float, sigma: float) -> np.ndarray:
    """Stationary AR(1) noise with standard deviation sigma (slow wander, not white)."""
    noise = rng.standard_normal(steps) * sigma * np.sqrt(1.0 - rho * rho)
    out = np.empty(steps)
    out[0] = rng.standard_normal() * sigma
    for i in range(1, steps):
        out[i] = rho * out[i - 1] + noise[i]
    return out


def _lag(signal: np.ndarray, tau_s: float, start: float) -> np.ndarray:
    """First-order lag (time constant tau_s, 1 s steps): how flows and temperatures follow."""
    k = 1.0 - np.exp(-1.0 / tau_s)
    out = np.empty_like(signal)
    state = start
    for i, v in enumerate(signal):
        state += k * (v - state)
        out[i] = state
    return out


def simulate(machine: Machine, steps: int, *, t0: float = 1_700_000_000.0) -> Recording:
    """`steps` seconds of one machine, deterministic for a given machine (name-free seed)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    v, shift = machine.variation, machine.shift
    if v is None and shift is None:
        return _simulate(machine, steps, t0)
    phase = v.phase_s if v is not None else 0
    base = _simulate(machine, steps + phase, t0 - phase)
    values = base.values[phase:].astype(np.float64)
    labels = base.labels[phase:]
    healthy_end = machine.failure.start_s if machine.failure is not None else steps
    if shift is not None:
        healthy_end = min(healthy_end, shift.start_s)
    healthy = values[: max(healthy_end, 60)]
    mean, std = healthy.mean(axis=0), np.maximum(healthy.std(axis=0), 1e-6)
    if v is not None:
        rng = np.random.default_rng(v.seed)
        values = mean + v.gain * (values - mean)
        if v.offset:
            values += np.asarray(v.offset) * std
        values += v.noise * std * rng.standard_normal(values.shape)
    if shift is not None:
        columns = [SENSORS.index(name) for name in shift.sensors]
        values[shift.start_s :, columns] += shift.sigmas * std[columns]
        labels = labels.copy()
        labels[shift.start_s :] = 1
    return Recording(values.astype(np.float32), base.ts[phase:], labels)


def _simulate(machine: Machine, steps: int, t0: float) -> Recording:
    rng = np.random.default_rng(machine.seed)
    t = np.arange(steps, dtype=np.float64)
    f = machine.failure
    closing, cavitation = _ramp(t, f, "valve-closing"), _ramp(t, f, "cavitation")

    # Valve opening in [0, 1]: operators trim it a little; a closing valve creeps shut.
    opening = 0.85 + _ar1(rng, steps, 0.999, 0.01) - 0.45 * closing
    flow_true = _lag(machine.nominal_flow * np.sqrt(np.clip(opening, 0.05, 1.0) / 0.85), 4.0, machine.nominal_flow)
    flow_true *= 1.0 - 0.12 * cavitation + 0.04 * cavitation * rng.standard_normal(steps)
    q = flow_true / machine.nominal_flow  # relative flow, 1 at the normal operating point

    # Pump curve: head rises as flow falls; cavitation makes the discharge pressure unsteady.
    pressure = 0.1 + 0.9 * (1.0 - q**2) + rng.standard_normal(steps) * (0.25 + 0.35 * cavitation)
    pressure = np.round(pressure * 3.0) / 3.0  # the rig's transmitter reads in coarse steps

    supply = 229.0 + _ar1(rng, steps, 0.995, 1.5) + rng.standard_normal(steps) * 8.0
    power = 0.55 + 0.45 * q  # shaft power falls with flow for a centrifugal pump
    current = 2.4 * power * (229.0 / supply) + _ar1(rng, steps, 0.6, 0.25)

    # Winding temperature follows I² slowly around a machine-specific level; water warms slower.
    base_temp = 80.0 + 6.0 * rng.random()
    temperature = _lag(base_temp + 14.0 * (current / 2.4) ** 2 - 14.0, 300.0, base_temp) + _ar1(rng, steps, 0.98, 0.15)
    thermocouple = (
        25.0 + 2.0 * rng.random() + _lag(0.4 * (current / 2.4) ** 2, 1800.0, 0.4) + _ar1(rng, steps, 0.995, 0.03)
    )

    # Vibration grows off the best-efficiency flow; cavitation adds bursts (bubble collapse).
    off_design = np.abs(1.0 - q)
    bursts = cavitation * rng.gamma(0.6, 0.35, steps) * (rng.random(steps) < 0.5)
    accel1 = 0.21 * (1.0 + 0.8 * off_design) + _ar1(rng, steps, 0.9, 0.004) + 0.8 * bursts
    accel2 = 0.27 * (1.0 + 0.6 * off_design) + _ar1(rng, steps, 0.9, 0.005) + 1.0 * bursts
    flow_read = np.round(flow_true + rng.standard_normal(steps) * 0.45)

    values = np.stack([accel1, accel2, current, pressure, temperature, thermocouple, supply, flow_read], axis=1)
    if f is not None and f.kind == "sensor-drift":
        column = SENSORS.index(f.channel)
        healthy_std = float(np.std(values[: max(f.start_s, 2), column])) or 1.0
        # A drifting transmitter walks away by ~6 of its normal noise widths once fully developed.
        values[:, column] += _ramp(t, f, "sensor-drift") * 6.0 * healthy_std
    labels = np.zeros(steps, dtype=np.int8)
    if f is not None:
        labels[f.start_s :] = 1
    return Recording(values.astype(np.float32), t0 + t, labels)
