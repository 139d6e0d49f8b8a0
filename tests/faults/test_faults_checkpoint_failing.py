"""Fault (j): checkpoint writes start failing under a running `edgewatch serve` (its state folder is
replaced by a file: ENOTDIR, as root too), and the daemon is then stopped with SIGTERM.

Before issue 12 /healthz said `ready` throughout and a failed last checkpoint at the stop was
not reported. Expected: serving goes on; /healthz answers 200 `ready, degraded: checkpoint
writes failing: …`, `edgewatch_checkpoint_failing` is 1; the stop logs that the checkpoint on
disk is older than the state being stopped, and exits 0.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.tools.local_broker import Broker, free_port
from tests.support.fault_helpers import Daemon, metric, report, wait_healthy
from tests.support.mqtt_helpers import publish_many
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def _healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _items(seqs: range) -> list[tuple[str, bytes]]:
    return [
        (f"plant/s{i}/telemetry", json.dumps({"seq": q, "values": [0.1 * q, 0, i]}).encode())
        for q in seqs
        for i in range(3)
    ]


def _wait_metric(port: int, name: str, predicate: Callable[[float], bool], timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = metric(port, name)
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"{name} = {value}"
        time.sleep(0.1)


def test_failing_checkpoints_show_in_healthz_metrics_and_the_stop(broker: Broker, tmp_path: Path) -> None:
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1e6)
    port = free_port()
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(
        tmp_path / "gw.yaml",
        broker,
        art,
        checkpoint_path=state / "state.ckpt",
        checkpoint_interval_s=0.3,
        metrics_address=f"127.0.0.1:{port}",
    )
    daemon = Daemon(config, tmp_path / "serve.log")
    try:
        daemon.start()
        wait_healthy(daemon, port)
        publish_many(broker, _items(range(5)))
        _wait_metric(port, "edgewatch_checkpoints_written_total", lambda v: v >= 1)
        before = _healthz(port)
        state.rename(tmp_path / "state.moved")
        state.write_text("not a folder")  # every write from now on fails
        publish_many(broker, _items(range(5, 10)))
        failing = _wait_metric(port, "edgewatch_checkpoint_failing", lambda v: v == 1)
        during = _healthz(port)
        processed = metric(port, "edgewatch_messages_processed_total")
        code = daemon.stop()
    finally:
        daemon.kill()
    stop_lines = [line for line in daemon.text().splitlines() if "stopping with checkpoint writes failing" in line]
    report(
        tmp_path,
        "j_checkpoint_failing",
        healthz_before=before,
        healthz_during=during,
        checkpoint_failing_gauge=failing,
        processed=processed,
        stop_log_lines=len(stop_lines),
        exit_code=code,
    )
    assert before == (200, "ready\n")
    assert during[0] == 200
    assert during[1].startswith("ready, degraded: checkpoint writes failing:")
    assert processed == 30
    assert len(stop_lines) == 1
    assert code == 0
