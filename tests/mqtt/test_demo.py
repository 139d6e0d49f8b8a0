"""`edgewatch demo`: end to end as a user runs it (mosquitto, `edgewatch serve` as a child, MQTT),
its failure path, and the parts it is made of. No torch: the model is shipped."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_config.errors import EdgewatchError
from edge_config.schema import BaselineConfig
from runtime.ingest.payload import FeatureLayout, PayloadLimits, decode_payload
from runtime.model.artifact import load_artifact
from runtime.tools.demo import command
from runtime.tools.demo.fleet import (
    DEMO_FLEET,
    DEMO_STEPS,
    FAILURE_ONSET_S,
    MAX_DURATION_S,
    MAX_MACHINES,
    MIN_DURATION_S,
    MODEL_DIR,
    fleet,
)
from runtime.tools.demo.gateway import input_topic, write_gateway
from runtime.tools.demo.plotting import PLOTS_MISSING, alert_flags, plots_available
from runtime.tools.demo.publisher import sample_payload
from runtime.tools.demo.report import MachineResult
from runtime.tools.demo.simulator import Failure, Machine, Recording, simulate
from runtime.tools.demo.watch import SeenAlert

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "runtime.cli"]
SHORT = ["--duration", "600", "--speed", "100"]  # 6 s of streaming: learning, the failure, its alert, 2 minutes after


def _processes_mentioning(text: str) -> list[int]:
    """pids whose command line contains `text` (the demo's own files name its broker and daemon)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def _row(stdout: str, machine: str) -> str:
    rows = [line for line in stdout.splitlines() if line.startswith(f"{machine} ")]
    assert len(rows) == 1, stdout
    return rows[0]


@pytest.mark.mqtt
def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [*CLI, "demo", "--out", str(out), *SHORT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert "demo passed" in text
    assert re.search(r"pump-3 +RAISED +t=(\d+)s", text), text
    assert "the daemon processed 2400 of 2400 samples; SIGTERM → exit 0, stopped on edgewatch/available" in text
    assert "ok: failure caught" in _row(text, "pump-3")
    for healthy in ("pump-1", "pump-2", "pump-4"):
        assert "ok: healthy, no alert" in _row(text, healthy)
    assert {line.split()[2] for line in text.splitlines() if " RAISED " in line} == {"pump-3"}
    if plots_available():
        for name in ("pump-3", "pump-1"):
            png = out / f"{name}.png"
            assert png.read_bytes()[:4] == b"\x89PNG"
            assert png.stat().st_size > 20_000
    else:
        assert PLOTS_MISSING in text
    # The config the demo wrote is a real one, and nothing it started is left running.
    assert "threshold:" in (out / "gateway.yaml").read_text()
    assert "threshold: null" in (out / "gateway.yaml").read_text()  # the manifest's: no override
    assert _processes_mentioning(str(out / "broker" / "mosquitto.conf")) == []
    assert _processes_mentioning(str(out / "gateway.yaml")) == []


@pytest.mark.mqtt
def test_demo_fails_when_a_healthy_pump_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pump the demo counts as healthy raises an alert (here its valve secretly closes too, as
    a false alarm would look to the verdict): the demo must say so and exit 1."""

    def secretly_failing(machine: Machine, steps: int, *, t0: float) -> Recording:
        if machine.name == "pump-4":
            machine = dataclasses.replace(machine, failure=Failure("valve-closing", start_s=FAILURE_ONSET_S))
        return simulate(machine, steps, t0=t0)

    monkeypatch.setattr(command, "simulate", secretly_failing)
    monkeypatch.setattr(command, "plots_available", lambda: False)  # the verdict is what this test is about
    args = argparse.Namespace(out=tmp_path / "demo", speed=100.0, machines=10, duration=600)
    assert command.run(args) == 1
    text = capsys.readouterr().out
    assert "demo FAILED" in text
    assert "FALSE ALERT" in text
    assert "pump-4: FALSE ALERT" in text
    assert _processes_mentioning(str(tmp_path / "demo" / "gateway.yaml")) == []


def test_missing_mosquitto_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(command, "_SBIN_MOSQUITTO", tmp_path / "no-mosquitto")
    with pytest.raises(EdgewatchError) as caught:
        command.require_mosquitto()
    assert "apt-get install -y mosquitto mosquitto-clients" in str(caught.value)
    assert "bash .ci/setup" in str(caught.value)


@pytest.mark.parametrize(
    "option",
    [
        ["--duration", "200"],
        ["--duration", str(MIN_DURATION_S - 1)],
        ["--duration", str(MAX_DURATION_S + 1)],
        ["--machines", "1"],
        ["--machines", str(MAX_MACHINES + 1)],
        ["--speed", "0"],
    ],
)
def test_options_out_of_range_exit_2_with_one_line(option: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "demo", "--out", str(tmp_path / "d"), *option],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("edgewatch demo: error: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_help_states_the_fleet_defaults() -> None:
    done = subprocess.run([*CLI, "demo", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    text = " ".join(done.stdout.split())
    assert f"default {DEMO_STEPS}" in text
    assert f"{MIN_DURATION_S}..{MAX_DURATION_S}" in text
    assert f"the failure begins at t={FAILURE_ONSET_S}s" in text


def test_fleet_sizes_keep_the_failing_pump() -> None:
    assert fleet(4) == DEMO_FLEET
    for n in (2, 5, MAX_MACHINES):
        machines = fleet(n)
        assert len(machines) == n
        assert len({m.name for m in machines}) == n
        assert [m.name for m in machines if m.failure is not None] == ["pump-3"]
    with pytest.raises(ValueError, match="the demo runs 2 to"):
        fleet(1)


@pytest.mark.slow
@pytest.mark.parametrize("duration", [MIN_DURATION_S, DEMO_STEPS, MAX_DURATION_S])
def test_largest_fleet_alerts_on_the_failing_pump_only(duration: int) -> None:
    """What MAX_MACHINES and MAX_DURATION_S promise, at the shortest, default and longest run:
    the manifest's threshold and the default per-stream baselines, as the demo serves them."""
    from edge_config.schema import ModelConfig, TargetConfig
    from runtime.engine.engine import Engine
    from runtime.engine.replay import Recording, replay
    from runtime.model.session import create_session

    artifact = load_artifact(MODEL_DIR)
    session, _ = create_session(artifact, TargetConfig(type="cpu"))
    model = ModelConfig(path=MODEL_DIR, target="cpu")
    engine = Engine(artifact, session, model, name="demo")
    assert artifact.manifest.calibration is not None
    assert engine.threshold == artifact.manifest.calibration.threshold
    machines = fleet(MAX_MACHINES)
    recordings = {m.name: simulate(m, duration) for m in machines}
    out = replay(engine, {n: Recording(r.values, r.ts) for n, r in recordings.items()})
    raised = {n: [a.seq or 0 for a in o.alerts if a.state == "raised"] for n, o in out.items()}
    assert {n for n, seqs in raised.items() if seqs} == {"pump-3"}
    assert FAILURE_ONSET_S <= raised["pump-3"][0] <= FAILURE_ONSET_S + 60


def test_sample_payload_reaches_the_engine_exactly() -> None:
    manifest = load_artifact(MODEL_DIR).manifest
    rec = simulate(Machine("m", seed=1), 5)
    values, seq, ts = decode_payload(sample_payload(rec, 3), FeatureLayout.from_manifest(manifest), PayloadLimits())
    np.testing.assert_array_equal(values, rec.values[3:4])
    assert seq == 3
    assert ts is not None
    assert ts[0] == rec.ts[3]


def test_gateway_yaml_loads_with_the_manifest_threshold(tmp_path: Path) -> None:
    manifest = load_artifact(MODEL_DIR).manifest
    assert manifest.calibration is not None
    gw = write_gateway(tmp_path, host="127.0.0.1", port=1884, model_dir=MODEL_DIR, manifest=manifest)
    model = gw.config.models[manifest.name]
    assert model.threshold is None  # no override: the daemon alerts on the manifest's
    assert model.baseline == BaselineConfig()
    assert gw.threshold == manifest.calibration.threshold
    text = gw.path.read_text()
    assert f"the manifest's threshold, {manifest.calibration.threshold:.3f}" in text
    assert f"{manifest.calibration.target_steps:,} steps" in text
    assert f"{manifest.calibration.threshold:.3f} from the manifest" in gw.alerting()
    assert f"over {BaselineConfig().learn_steps} s" in gw.alerting()
    assert model.path == tmp_path / "model"
    assert gw.config.runtime.metrics_address is None
    assert gw.config.broker.port == 1884
    assert load_artifact(model.path).manifest.sha256 == manifest.sha256
    assert input_topic("pump-3") == "demo/pump-3/telemetry"


def _alert(state: str, seq: int, stream: str = "p") -> SeenAlert:
    return SeenAlert(stream, state, seq, 5.0, 3.0, (), 0.0)


def test_alert_flags_from_published_alerts() -> None:
    flags = alert_flags([_alert("raised", 2), _alert("cleared", 4), _alert("raised", 7)], 9)
    assert flags.tolist() == [False, False, True, True, False, False, False, True, True]


def test_verdicts() -> None:
    healthy, failing = DEMO_FLEET[0], DEMO_FLEET[2]
    caught = FAILURE_ONSET_S + 25
    assert MachineResult(healthy, DEMO_STEPS, (), 0, "ok").verdict()[0]
    assert not MachineResult(healthy, DEMO_STEPS, (100,), 1, "ok").verdict()[0]
    assert MachineResult(failing, DEMO_STEPS, (caught,), 0, "alert").verdict() == (
        True,
        "ok: failure caught 25 s after onset",
    )
    assert not MachineResult(failing, DEMO_STEPS, (), 0, "ok").verdict()[0]
    assert "before the failure" in MachineResult(failing, DEMO_STEPS, (100, caught), 1, "alert").verdict()[1]
