"""`edgewatch serve` as a real process: the issue's end-to-end flow, SIGTERM and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.tools.local_broker import Broker, free_port
from tests.support.mqtt_helpers import wait_retained
from tests.support.onnx_artifacts import write_persistence_artifact

pytestmark = pytest.mark.mqtt
REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "runtime.cli"]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def gateway(broker: Broker, tmp_path: Path) -> tuple[Path, int]:
    """`edgewatch config init` for a persistence forecaster (threshold 1.0); returns (config, metrics port)."""
    model = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0)
    init = _cli("config", "init", "--broker", broker.address, "--model", str(model), "--topic", "plant/+/telemetry")
    assert init.returncode == 0, init.stderr
    config = tmp_path / "gw.yaml"
    config.write_text(init.stdout)
    return config, free_port()


def _serve(config: Path, metrics_port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "EDGEWATCH_RUNTIME__METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    return subprocess.Popen(
        [*CLI, "serve", "--config", str(config)],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_healthy(proc: subprocess.Popen[str], port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    time.sleep(0.3)  # SUBACK
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError("serve did not become healthy")


@pytest.fixture
def served(gateway: tuple[Path, int]) -> Iterator[subprocess.Popen[str]]:
    config, port = gateway
    proc = _serve(config, port)
    try:
        _wait_healthy(proc, port)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _faulty_csv(path: Path) -> Path:
    rows = ["datetime;f0;f1;f2"]
    for t in range(90):
        f0 = 4.0 * (-1) ** t if 40 <= t < 55 else 0.01 * t
        rows.append(f"2026-01-01 00:{t // 60:02d}:{t % 60:02d};{f0};1.0;2.0")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_config_init_serve_replay_alerts_and_mosquitto_sub_see_the_alert(
    broker: Broker, served: subprocess.Popen[str], tmp_path: Path
) -> None:
    watch = subprocess.Popen(
        [*CLI, "alerts", "--broker", broker.address, "--json", "--count", "1", "--timeout", "60"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", "edgewatch/alerts/#", "-C", "1", "-W", "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # both subscribed
        replay = _cli(
            "replay",
            str(_faulty_csv(tmp_path / "faulty.csv")),
            "--broker",
            broker.address,
            "--topic",
            "plant/press-1/telemetry",
            "--rate",
            "0",
        )
        assert replay.returncode == 0, replay.stderr
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 0, err
        alert = json.loads(out.strip().splitlines()[0])
        assert alert["state"] == "raised"
        assert alert["stream"] == "press-1"
        assert 40 <= alert["seq"] < 55
        seen, _ = sub.communicate(timeout=60)
        assert json.loads(seen)["id"] == alert["id"]
    finally:
        for p in (watch, sub):
            if p.poll() is None:
                p.kill()
            p.wait(10)


def test_sigterm_drains_says_stopped_and_exits_0(broker: Broker, served: subprocess.Popen[str]) -> None:
    wait_retained(broker, "edgewatch/available", b"online")
    served.send_signal(signal.SIGTERM)
    assert served.wait(30) == 0
    wait_retained(broker, "edgewatch/available", b"stopped")
    log = served.stdout.read() if served.stdout else ""
    assert "received SIGTERM" in log
    assert "stopped:" in log


def test_sigkill_leaves_the_last_will_offline(broker: Broker, served: subprocess.Popen[str]) -> None:
    wait_retained(broker, "edgewatch/available", b"online")
    served.send_signal(signal.SIGKILL)
    served.wait(10)
    wait_retained(broker, "edgewatch/available", b"offline")
