"""The pump/valve rig simulator: deterministic, SKAB-like magnitudes, failures that move the
channels physics says they move, and labels from the failure's start."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.tools.demo.simulator import SENSORS, Failure, Machine, simulate

col = {name: i for i, name in enumerate(SENSORS)}


def _means(kind: str, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    rec = simulate(Machine("m", seed=5, failure=Failure(kind, start_s=300, ramp_s=60, **kw)), 900)  # type: ignore[arg-type]
    return rec.values[:300].mean(axis=0), rec.values[420:].mean(axis=0)


def test_deterministic_shapes_and_labels() -> None:
    m = Machine("m", seed=3, failure=Failure("valve-closing", start_s=100))
    a, b = simulate(m, 200), simulate(m, 200)
    assert a.values.shape == (200, 8)
    assert a.values.dtype == np.float32
    np.testing.assert_array_equal(a.values, b.values)
    assert np.all(np.diff(a.ts) == 1.0)
    assert a.labels[:100].sum() == 0
    assert a.labels[100:].all()
    assert not np.array_equal(simulate(Machine("m", seed=4), 200).values, a.values[:200])


def test_healthy_levels_look_like_skab() -> None:
    v = simulate(Machine("m", seed=1), 1800).values
    mean, std = v.mean(axis=0), v.std(axis=0)
    assert 0.15 < mean[col["Accelerometer1RMS"]] < 0.3
    assert 1.5 < mean[col["Current"]] < 3.5
    assert 215 < mean[col["Voltage"]] < 245
    assert 4 < std[col["Voltage"]] < 15
    assert 28 < mean[col["Volume Flow RateRMS"]] < 36
    assert np.all(v[:, col["Volume Flow RateRMS"]] == np.round(v[:, col["Volume Flow RateRMS"]]))  # whole l/min
    # Temperatures are smooth: their step-to-step change is far below their spread.
    temp = v[:, col["Temperature"]]
    assert np.std(np.diff(temp)) < 0.5 * np.std(temp)


def test_valve_closing_cuts_flow_raises_pressure_lowers_current() -> None:
    before, after = _means("valve-closing")
    assert after[col["Volume Flow RateRMS"]] < 0.8 * before[col["Volume Flow RateRMS"]]
    assert after[col["Pressure"]] > before[col["Pressure"]] + 0.3
    assert after[col["Current"]] < before[col["Current"]] - 0.2


def test_cavitation_brings_vibration_bursts_and_pressure_fluctuation() -> None:
    rec = simulate(Machine("m", seed=5, failure=Failure("cavitation", start_s=300, ramp_s=60)), 900)
    a1 = rec.values[:, col["Accelerometer1RMS"]]
    assert a1[420:].max() > 3 * a1[:300].max()
    p = rec.values[:, col["Pressure"]]
    assert p[420:].std() > 1.5 * p[:300].std()
    before, after = _means("cavitation")
    assert after[col["Volume Flow RateRMS"]] < before[col["Volume Flow RateRMS"]] - 2


@pytest.mark.parametrize("channel", ["Pressure", "Thermocouple"])
def test_sensor_drift_moves_one_reading_only(channel: str) -> None:
    healthy = simulate(Machine("m", seed=5), 900).values
    drift = simulate(
        Machine("m", seed=5, failure=Failure("sensor-drift", start_s=300, ramp_s=120, channel=channel)), 900
    ).values
    changed = np.flatnonzero(np.abs(drift - healthy).max(axis=0) > 0)
    assert changed.tolist() == [col[channel]]
    np.testing.assert_array_equal(drift[:300], healthy[:300])
    offset = drift[-1, col[channel]] - healthy[-1, col[channel]]
    assert offset > 3 * healthy[:300, col[channel]].std()


def test_invalid_failures_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown failure kind 'leak'"):
        Failure("leak", start_s=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sensor-drift channel 'Humidity'"):
        Failure("sensor-drift", start_s=10, channel="Humidity")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        simulate(Machine("m"), 0)
