"""Shared pieces of the fault-injection suite (tests/faults/test_faults_*.py): the fault-free reference
run, alert deduplication as a consumer does it, the figures each test reports, and the
`edgewatch serve` subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_config.schema import AlertPolicy, BaselineConfig, ModelConfig, TargetConfig
from runtime.engine.engine import Engine
from runtime.engine.types import Message
from runtime.model.artifact import load_artifact
from runtime.model.session import create_session
from tests.support.fault_traffic import TS0, values

REPO = Path(__file__).resolve().parents[2]
FIGURES_ENV = "EDGEWATCH_FAULT_FIGURES"
"""A JSON-lines file the suite appends its figures to (default: the test's tmp folder)."""


@dataclass
class Reference:
    """The fault-free run: per stream id, outputs and scores by seq order, and every alert."""

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    alerts: set[tuple[str, str]] = field(default_factory=set)
    """(id, state) of every alert message."""


def reference_run(
    artifact_dir: Path,
    policy: AlertPolicy,
    streams: int,
    seqs: Sequence[int],
    faulty: int,
    skip: Iterable[tuple[int, int]] = (),
) -> Reference:
    """Step the same samples through a plain Engine, one message per stream and seq, in seq order.
    skip: (stream, seq) left out (what a test sends only as hostile copies)."""
    artifact = load_artifact(artifact_dir)
    session, _ = create_session(artifact, TargetConfig(type="cpu"), name="reference")
    engine = Engine(
        artifact,
        session,
        ModelConfig(path=artifact_dir, target="cpu", alerts=policy, baseline=BaselineConfig(learn_steps=0)),
        name="det",
    )
    left_out = set(skip)
    outs: dict[str, list[np.ndarray]] = {}
    scores: dict[str, list[np.ndarray]] = {}
    ref = Reference()
    for q in seqs:
        batch = [
            Message(f"m{s:03d}", np.array([values(s, q, s < faulty)], np.float32), q, np.array([TS0 + q]))
            for s in range(streams)
            if (s, q) not in left_out
        ]
        for o in engine.process(batch):
            assert o.outputs is not None
            assert o.scores is not None
            outs.setdefault(o.message.stream, []).append(o.outputs)
            scores.setdefault(o.message.stream, []).append(o.scores)
            ref.alerts |= {(a.id, a.state) for a in o.alerts}
    ref.outputs = {k: np.concatenate(v) for k, v in outs.items()}
    ref.scores = {k: np.concatenate(v) for k, v in scores.items()}
    return ref


@dataclass
class Deduped:
    unique: dict[tuple[str, str], dict[str, object]]
    duplicates: int
    """Copies beyond the first (QoS 1 is at least once)."""
    conflicts: list[tuple[str, str]]
    """(id, state) whose copies disagree on what they describe: a reused id would show here."""


def dedup(alerts: Sequence[dict[str, object]]) -> Deduped:
    """What a consumer does: keep the first copy per (id, state) (no updates are configured here)."""
    unique: dict[tuple[str, str], dict[str, object]] = {}
    conflicts = []
    for doc in alerts:
        key = (str(doc["id"]), str(doc["state"]))
        first = unique.setdefault(key, doc)
        if first is not doc and any(first[k] != doc[k] for k in ("stream", "started", "seq", "ts")):
            conflicts.append(key)
    return Deduped(unique, len(alerts) - len(unique), conflicts)


def report(tmp_path: Path, name: str, **figures: object) -> None:
    """Print one `FAULT-FIGURES {...}` line (visible with -s) and append it to the figures file."""
    line = json.dumps({"test": name, **figures}, sort_keys=False)
    print(f"\nFAULT-FIGURES {line}", flush=True)
    target = Path(os.environ.get(FIGURES_ENV) or tmp_path / "figures.jsonl")
    with target.open("a") as f:
        f.write(line + "\n")


# --- `edgewatch serve` as a process -----------------------------------------------------------

SERVE_WITH_OUTCOMES = (
    "import logging, sys\n"
    "from runtime.cli import main\n"
    "logging.getLogger('edgewatch.outcomes').setLevel(logging.DEBUG)  # one line per delivery\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
_OUTCOME = re.compile(r"outcome model=\S+ stream=(\S+) seq=(\d+) status=(\S+) steps=(\d+)")


class Daemon:
    """`edgewatch serve --config FILE` (runtime.cli.main), its output in a log file."""

    def __init__(self, config: Path, log: Path, *, trace_outcomes: bool = False) -> None:
        self.config, self.log = config, log
        self._trace = trace_outcomes
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        entry = ["-c", SERVE_WITH_OUTCOMES] if self._trace else ["-m", "runtime.cli"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *entry, "serve", "--config", str(self.config)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self.proc

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_line(self, pattern: str, timeout: float, *, after: int = 0) -> re.Match[str]:
        """The first match of `pattern` in the log from character `after` on."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            found = regex.search(self.text(), after)
            if found:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode} before {pattern!r}:\n{self.text()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"no {pattern!r} in {timeout} s:\n{self.text()[-3000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def outcomes(self) -> list[tuple[str, int, str]]:
        """(stream, seq, status) of every delivery logged so far, all runs of this log."""
        return [(m[1], int(m[2]), m[3]) for m in _OUTCOME.finditer(self.text())]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_healthy(daemon: Daemon, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise AssertionError(f"serve exited {daemon.proc.returncode}:\n{daemon.text()[-3000:]}")
        if healthy(port):
            time.sleep(0.3)  # SUBACK
            return
        time.sleep(0.1)
    raise TimeoutError(f"serve not healthy in {timeout} s:\n{daemon.text()[-3000:]}")


def metric(port: int, name: str) -> float:
    """One sample of the daemon's /metrics (0.0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- model files a gateway must refuse --------------------------------------------------------


def tamper(directory: Path, offset: int = 200) -> None:
    """Flip one byte of model.onnx in place; the manifest's sha256 no longer matches it."""
    path = directory / "model.onnx"
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def install_external_data_model(directory: Path) -> None:
    """model.onnx of the persistence graph with one weight pointing at a file outside the folder
    (ONNX external data), and the manifest re-signed for those bytes: only the reference is wrong."""
    from onnx import TensorProto
    from onnx.external_data_helper import set_external_data

    from edge_config.manifest import read_manifest, sha256_bytes, write_manifest
    from tests.support.onnx_artifacts import persistence_forecaster_model

    features = read_manifest(directory).features.count
    model = persistence_forecaster_model(features)
    weight = model.graph.initializer[next(i for i, t in enumerate(model.graph.initializer) if t.name == "W0")]
    set_external_data(weight, location="../../../../etc/passwd", offset=0, length=16)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    data = model.SerializeToString()
    (directory / "model.onnx").write_bytes(data)
    write_manifest(read_manifest(directory).model_copy(update={"sha256": sha256_bytes(data)}), directory)


def install_model(directory: Path, model: object) -> str:
    """Replace model.onnx with `model` (an onnx.ModelProto) and re-sign the manifest; the new sha256."""
    from edge_config.manifest import read_manifest, sha256_bytes, write_manifest

    data = model.SerializeToString()  # type: ignore[attr-defined]
    (directory / "model.onnx").write_bytes(data)
    sha = sha256_bytes(data)
    write_manifest(read_manifest(directory).model_copy(update={"sha256": sha}), directory)
    return sha
