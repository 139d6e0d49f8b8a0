"""Fault (d): `edgewatch serve` starts on corrupt checkpoint files — truncated, zeroed, bit-flipped —
with and without an intact previous generation.

Each start must come up healthy and say in its log which generation it skipped and why, and
restore the previous generation when one is intact (3 streams) or start fresh otherwise; a stop
without traffic must leave the files as they were (nothing changed, nothing written).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge_config.schema import ModelConfig, TargetConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from runtime.model.artifact import load_artifact
from runtime.model.session import create_session
from runtime.state.checkpoint import model_checkpoint_path, previous_generation, write_checkpoint
from runtime.state.transfer import snapshot_engine
from runtime.tools.local_broker import Broker, free_port
from tests.support.fault_helpers import Daemon, report, wait_healthy
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def _generations(art: Path, path: Path) -> None:
    """Two real generations for the daemon's model: the previous with 3 streams, the newest with 5."""
    artifact = load_artifact(art)
    engine = Engine(
        artifact,
        create_session(artifact, TargetConfig(type="cpu"), name="m")[0],
        ModelConfig(path=art, target="cpu"),
        name="det",
    )
    for n in (3, 5):
        engine.process([Message(f"s{i}", np.ones((1, 3), np.float32), n, None) for i in range(n)])
        write_checkpoint(path, snapshot_engine(engine))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))


CASES = [  # (newest, previous, expected log pieces, streams restored)
    ("truncated", "intact", ("skipped: length mismatch", "restored 3 streams from", ".ckpt.1"), 3),
    ("bit-flipped", "intact", ("skipped: checksum mismatch (corrupted)", "restored 3 streams from", ".ckpt.1"), 3),
    ("zeroed", "zeroed", ("skipped: not an edgewatch checkpoint", "streams start fresh"), 0),
    ("truncated", "missing", ("skipped: length mismatch", "streams start fresh"), 0),
    ("bit-flipped", "bit-flipped", ("skipped: checksum mismatch", "streams start fresh"), 0),
]
DAMAGE = {"truncated": _truncate, "zeroed": _zero, "bit-flipped": _flip}


def test_corrupt_checkpoints_at_start_fall_back_or_start_fresh(broker: Broker, tmp_path: Path) -> None:
    started_at = time.monotonic()
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0)
    results = []
    for k, (newest, previous, pieces, restored) in enumerate(CASES):
        work = tmp_path / f"case{k}"
        work.mkdir()
        path = model_checkpoint_path(work / "state.ckpt", "det")
        _generations(art, path)
        DAMAGE[newest](path)
        if previous == "missing":
            previous_generation(path).unlink()
        elif previous != "intact":
            DAMAGE[previous](previous_generation(path))
        before = {p.name: p.read_bytes() for p in work.iterdir()}
        port = free_port()
        config = write_config(
            work / "gw.yaml", broker, art, checkpoint_path=work / "state.ckpt", metrics_address=f"127.0.0.1:{port}"
        )
        daemon = Daemon(config, work / "serve.log")
        try:
            daemon.start()
            wait_healthy(daemon, port)
            daemon.wait_line("restored|start fresh", 10)
            assert daemon.stop() == 0
        finally:
            daemon.kill()
        log = daemon.text()
        for piece in pieces:
            assert piece in log, f"{newest}/{previous}: {piece!r} not in\n{log}"
        assert "Traceback" not in log
        after = {p.name: p.read_bytes() for p in work.iterdir() if p.suffix not in (".log", ".yaml")}
        assert after == dict(before.items()), "a start and stop without traffic changed the files"
        results.append(
            {
                "newest": newest,
                "previous": previous,
                "restored": restored,
                "log": [line.split(": ", 1)[1] for line in log.splitlines() if "edgewatch.checkpoint" in line],
            }
        )
    report(
        tmp_path,
        "d_corrupt_checkpoints",
        starts=len(results),
        crashes=0,
        cases=results,
        seconds=round(time.monotonic() - started_at, 1),
    )
