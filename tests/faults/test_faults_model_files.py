"""Fault: a model path that is not a regular file, or one past the size cap (issue 12).

Before: a model.onnx pointing at /dev/zero was read until the OOM killer struck (24 GB), and a
FIFO hung `config check` and `serve`; a SIGHUP onto a FIFO blocked SIGTERM. Now each is refused
at once with one line (config check: exit 2), and a SIGHUP onto one keeps the old model serving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_config.artifact_files import MAX_MODEL_BYTES
from runtime.tools.local_broker import Broker, free_port
from tests.support.fault_helpers import REPO, Daemon, report, wait_healthy
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def _replace_model(art: Path, kind: str) -> None:
    model = art / "model.onnx"
    model.unlink()
    if kind == "fifo":
        os.mkfifo(model)
    elif kind == "device":
        model.symlink_to("/dev/zero")
    else:  # sparse: the size is past the cap, nothing is written
        with model.open("wb") as f:
            f.truncate(MAX_MODEL_BYTES + 1)


@pytest.mark.parametrize("kind", ["fifo", "device", "oversized"])
def test_config_check_refuses_a_model_that_is_not_a_small_regular_file(
    broker: Broker, tmp_path: Path, kind: str
) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0)
    _replace_model(art, kind)
    config = write_config(tmp_path / "gw.yaml", broker, art)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "config", "check", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # the old code never returned on a FIFO or /dev/zero
        check=False,
    )
    seconds = time.monotonic() - started
    expected = {"fifo": "a FIFO, expected a regular file", "device": "a device", "oversized": "-byte cap"}[kind]
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    report(tmp_path, f"model_file_{kind}", exit_code=done.returncode, seconds=round(seconds, 2))


def test_sighup_onto_a_fifo_keeps_the_old_model_and_sigterm_stops(broker: Broker, tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0)
    port = free_port()
    config = write_config(tmp_path / "gw.yaml", broker, art, metrics_address=f"127.0.0.1:{port}")
    daemon = Daemon(config, tmp_path / "serve.log")
    try:
        daemon.start()
        wait_healthy(daemon, port)
        _replace_model(art, "fifo")
        offset = len(daemon.text())
        daemon.signal(signal.SIGHUP)
        line = daemon.wait_line(r"reload failed[^\n]*", 30, after=offset).group(0)
        wait_healthy(daemon, port)  # still serving the old model
        started = time.monotonic()
        code = daemon.stop(timeout=20)
        stop_seconds = time.monotonic() - started
    finally:
        daemon.kill()
    assert "a FIFO, expected a regular file" in line
    assert code == 0
    report(tmp_path, "model_file_sighup_fifo", reload=line[:200], stop_seconds=round(stop_seconds, 2))
