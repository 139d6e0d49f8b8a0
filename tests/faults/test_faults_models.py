"""Fault (f) and SIGHUP: model files a gateway must refuse, at start and on reload, and reloads
that must go through — all against `edgewatch serve` as a process.

At start a tampered model.onnx (sha256 mismatch) or one referring to external data stops the
daemon with exit 2 and one line. While serving, SIGHUP re-reads the config and the model
folder: a new model of the same state shapes is verified, warmed up and swapped in with every
stream's state (an alert open under the old model is cleared under the new one, same id); a
tampered model, an external-data model and an invalid config are refused with one line while
the running model serves on; a model of other state shapes is swapped in with the streams'
seq and alerts kept and their model state re-warming (counted).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.model.artifact import load_artifact
from runtime.state.checkpoint import StateLayout, load_checkpoint, model_checkpoint_path
from runtime.tools.local_broker import Broker, free_port
from tests.support.fault_helpers import (
    REPO,
    Daemon,
    install_external_data_model,
    install_model,
    metric,
    report,
    tamper,
    wait_healthy,
)
from tests.support.mqtt_helpers import Collector, publish_many
from tests.support.onnx_artifacts import persistence_forecaster_model, write_lstm_artifact, write_persistence_artifact
from tests.support.service_helpers import write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
POLICY = {"raise_k": 1, "raise_n": 1, "clear_m": 2, "warmup_steps": 0}


@pytest.mark.parametrize("damage", ["tampered", "external-data"])
def test_a_model_that_fails_verification_stops_the_start_with_exit_2(
    broker: Broker, tmp_path: Path, damage: str
) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0)
    (tamper if damage == "tampered" else install_external_data_model)(art)
    config = write_config(tmp_path / "gw.yaml", broker, art)
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # the config check (edge_config.checks) or load_artifact: either names the sha256 mismatch
    expected = "does not match the" if damage == "tampered" else "refers to external data"
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr
    assert last.startswith("edgewatch serve: error: "), done.stderr
    assert expected in last, done.stderr
    assert "Traceback" not in done.stderr
    assert "connected to" not in done.stderr
    report(tmp_path, f"f_start_{damage}", exit_code=done.returncode, message=last)


def _jump(stream: str, seq: int, value: float) -> tuple[str, bytes]:
    return (f"plant/{stream}/telemetry", json.dumps({"seq": seq, "values": [value, 0.0, 0.0]}).encode())


def _alerts_after(collector: Collector, n: int, timeout: float = 15.0) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in collector.wait_for(lambda got: len(got) >= n, timeout)]


def test_sighup_swaps_verified_models_and_refuses_bad_ones(broker: Broker, tmp_path: Path) -> None:
    started_at = time.monotonic()
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    sha_a = load_artifact(art).sha256
    port = free_port()
    config = write_config(
        tmp_path / "gw.yaml",
        broker,
        art,
        alerts=POLICY,
        checkpoint_path=tmp_path / "state.ckpt",
        metrics_address=f"127.0.0.1:{port}",
    )
    good_config = config.read_text()
    daemon = Daemon(config, tmp_path / "serve.log")
    alerts = Collector(broker, "edgewatch/alerts/#")
    seq = 0
    outcomes: dict[str, str] = {}

    def send(bad_values: list[float]) -> None:
        nonlocal seq
        items = []
        for value in bad_values:
            items += [_jump("bad", seq, value), _jump("good", seq, 0.0)]
            seq += 1
        publish_many(broker, items)

    def reload(expect: str) -> str:
        offset = len(daemon.text())
        daemon.signal(signal.SIGHUP)
        return daemon.wait_line(expect, 60, after=offset).group(0)

    try:
        daemon.start()
        wait_healthy(daemon, port)
        send([0.0, 0.0, 0.0, 5.0, 5.0])  # a jump at seq 3: raised under model A, still open
        raised = _alerts_after(alerts, 1)[0]
        assert (raised["state"], raised["model_sha256"]) == ("raised", sha_a)

        sha_b = install_model(art, persistence_forecaster_model(3, seed=7))  # same shapes, other bytes
        outcomes["swap, same shapes"] = reload(r"reload: model 'det' now [^\n]*")
        send([5.0, 5.0, 5.0])  # the score decays below the threshold: cleared by model B, same id
        cleared = _alerts_after(alerts, 2)[1]
        assert (cleared["state"], cleared["id"], cleared["model_sha256"]) == ("cleared", raised["id"], sha_b)

        tamper(art)
        outcomes["tampered"] = reload(r"reload failed[^\n]*")
        install_model(art, persistence_forecaster_model(3, seed=7))  # B again, intact
        install_external_data_model(art)
        outcomes["external data"] = reload(r"reload failed[^\n]*")
        install_model(art, persistence_forecaster_model(3, seed=7))
        config.write_text(good_config.replace('"max_wait_ms"', '"max_wiat_ms"'))
        outcomes["invalid config"] = reload(r"reload failed[^\n]*")
        send([0.0, 0.0, 0.0])  # model B still serves: a new alert under B
        still = _alerts_after(alerts, 3)[2]
        assert (still["state"], still["model_sha256"]) == ("raised", sha_b)

        config.write_text(good_config)
        other = write_lstm_artifact(tmp_path / "wider", features=3, hidden=8, layers=1, threshold=1.0)
        sha_c = install_model(other, persistence_forecaster_model(3, hidden=8))
        for name in ("model.onnx", "manifest.json"):
            shutil.copy(other / name, art / name)
        outcomes["swap, other shapes"] = reload(r"reload: model 'det' now [^\n]*")
        rewarming = metric(port, "edgewatch_streams_rewarming_total")
        send([0.0] * 12)
        deadline = time.monotonic() + 15
        while metric(port, "edgewatch_messages_processed_total") < seq * 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ok, failed = metric(port, 'edgewatch_reloads_total{result="ok"}'), 0.0
        with_labels = [line for line in _metrics(port) if line.startswith("edgewatch_reloads_total{")]
        failed = next(float(line.rsplit(" ", 1)[1]) for line in with_labels if 'result="failed"' in line)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        alerts.close()
    log = daemon.text()
    # Other weights of the same shapes: the old h/c mean nothing to them (issue 11): re-warm.
    assert "other weights: 2 streams keep their seq and alerts and warm up again" in outcomes["swap, same shapes"]
    assert sha_b[:12] in outcomes["swap, same shapes"]
    assert "does not match the" in outcomes["tampered"]
    assert "sha256" in outcomes["tampered"]
    assert "refers to external data" in outcomes["external data"]
    assert "max_wiat_ms" in outcomes["invalid config"]
    assert "did you mean 'max_wait_ms'" in outcomes["invalid config"]
    assert "state shapes differ: 2 streams keep their seq and alerts" in outcomes["swap, other shapes"]
    assert rewarming == 4  # 2 streams at each of the two swaps
    assert ok == 2
    assert failed == 3
    final = load_checkpoint(
        model_checkpoint_path(tmp_path / "state.ckpt", "det"), StateLayout.from_manifest(load_artifact(art).manifest)
    )
    assert final.snapshot is not None
    assert final.snapshot.model_sha256 == sha_c
    assert "Traceback" not in log
    report(
        tmp_path,
        "f_sighup",
        reloads_ok=int(ok),
        reloads_refused=int(failed),
        rewarming_after_shape_change=int(rewarming),
        lines={k: v.split(": ", 1)[-1][:300] for k, v in outcomes.items()},
        seconds=round(time.monotonic() - started_at, 1),
    )


def _metrics(port: int) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode().splitlines()
