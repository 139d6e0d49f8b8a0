"""Fault: tampered artifacts against `edgewatch serve` with trust.require_signature (issue 12).

Before: manifest.json was unprotected: a threshold of 1e12 put in it was served silently, at
start and on SIGHUP. Now a gateway that trusts a public key refuses the tampered manifest on
SIGHUP (the signed model serves on) and refuses an unsigned model at start (exit 2).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_config.signing import generate_keys, sign_artifact
from runtime.tools.local_broker import Broker, free_port
from tests.support.fault_helpers import REPO, Daemon, report, wait_healthy
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def _trusting(config: Path, public: Path) -> Path:
    doc = json.loads(config.read_text())
    doc["trust"] = {"public_keys": [str(public)], "require_signature": True}
    config.write_text(json.dumps(doc))
    return config


def test_a_tampered_manifest_is_refused_and_an_unsigned_model_does_not_start(broker: Broker, tmp_path: Path) -> None:
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    generate_keys(private, public)
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0)
    unsigned = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "serve",
            "--config",
            str(_trusting(write_config(tmp_path / "u.yaml", broker, art), public)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unsigned.returncode == 2, unsigned.stderr
    assert "unsigned artifact" in unsigned.stderr

    sign_artifact(art, private, (art / "model.onnx").read_bytes(), (art / "manifest.json").read_bytes())
    port = free_port()
    config = _trusting(write_config(tmp_path / "gw.yaml", broker, art, metrics_address=f"127.0.0.1:{port}"), public)
    daemon = Daemon(config, tmp_path / "serve.log")
    try:
        daemon.start()
        wait_healthy(daemon, port)
        manifest = json.loads((art / "manifest.json").read_text())
        manifest["calibration"]["threshold"] = 1e12
        (art / "manifest.json").write_text(json.dumps(manifest))
        offset = len(daemon.text())
        daemon.signal(signal.SIGHUP)
        line = daemon.wait_line(r"reload failed[^\n]*", 30, after=offset).group(0)
        wait_healthy(daemon, port)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert "manifest.json changed since signing" in line
    check = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "config", "check", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 2
    assert "manifest.json changed since signing" in check.stdout + check.stderr
    report(tmp_path, "signed_models", unsigned_exit=unsigned.returncode, reload=line[:200], check_exit=check.returncode)
