"""Section 4: what the machine allows, measured in the same run, so every figure is a fraction of a limit.

- FLOP bound of one stream-step on one core: numpy float32 GEMM time on the step's own shapes
  ([B, in+H] x [in+H, 4H] per LSTM layer, [B, H] x [H, out] for the head) at the batch sizes
  the engine runs, in a child process with one BLAS thread pinned to one CPU. Elementwise
  work (gates, state update) is left out, so the bound is generous: nothing runs faster.
- The broker's raw rate: mosquitto's own C clients, `mosquitto_pub -l` (one message per stdin
  line) at QoS 1 into `mosquitto_sub -C N` at QoS 1, through the same local_broker config the
  end-to-end runs use. mosquitto_pub -l 2.0.11 loses messages once its packet ids wrap
  (more than 65,535 lines), so each publisher sends at most 50,000.
- The Python MQTT client's ceiling: paho receiving and acking with no work at all
  (runtime.tools.bench.paho_sink), flooded by the benchmark's publisher.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edge_config.manifest import Manifest
from runtime.tools.bench.e2e import flood_packets
from runtime.tools.bench.procs import LineProcess
from runtime.tools.bench.workload import Workload, stream_names
from runtime.tools.local_broker import start_broker

_LINES_PER_PUB = 50_000
_BLAS_ENV = dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"), "1")


@dataclass(frozen=True)
class GemmRate:
    batch: int
    gflops: float
    steps_per_s: float
    """The bound on stream-steps/s at this batch size: the step's GEMMs alone."""


@dataclass(frozen=True)
class FlopBound:
    flops_per_step: int
    """2 x multiply-adds of the step's GEMMs (LSTM layers + head) for one stream."""
    rates: list[GemmRate]

    def at(self, batch: int) -> GemmRate:
        """The measured batch size closest to `batch` from above (or the largest)."""
        fitting = [r for r in self.rates if r.batch >= batch]
        return min(fitting, key=lambda r: r.batch) if fitting else max(self.rates, key=lambda r: r.batch)


@dataclass(frozen=True)
class BrokerRate:
    what: str
    messages: int
    seconds: float
    msg_per_s: float


def _lstm_shapes(manifest: Manifest) -> list[tuple[int, int]]:
    """(K, N) of each GEMM in one step: LSTM layers (input and recurrent weights fused) + head."""
    hidden_specs = [s for s in manifest.state if s.kind.endswith("_h")] or list(manifest.state[:1])
    shapes, width = [], manifest.features.count
    for spec in hidden_specs:
        gates = 4 if spec.kind.startswith("lstm") else 3
        for _ in range(spec.layers):
            shapes.append((width + spec.hidden, gates * spec.hidden))
            width = spec.hidden
    shapes.append((width, manifest.output_size))
    return shapes


def flops_per_step(manifest: Manifest) -> int:
    return sum(2 * k * n for k, n in _lstm_shapes(manifest))


def _gemm_seconds(shapes: list[tuple[int, int]], batch: int, min_seconds: float) -> float:
    """Seconds for one pass over the step's GEMMs at `batch` rows (best of repeated runs)."""
    import numpy as np

    rng = np.random.default_rng(0)
    pairs = [
        (rng.standard_normal((batch, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
        for k, n in shapes
    ]
    outs = [np.empty((batch, n), np.float32) for _, n in shapes]
    best, spent = float("inf"), 0.0
    reps = max(1, 2000 // batch)
    while spent < min_seconds:
        start = time.perf_counter()
        for _ in range(reps):
            for (a, b), out in zip(pairs, outs, strict=False):
                np.matmul(a, b, out=out)
        took = time.perf_counter() - start
        spent += took
        best = min(best, took / reps)
    return best


def _gemm_child(shapes: list[tuple[int, int]], batches: list[int], min_seconds: float, cpu: int) -> dict[int, float]:
    code = (
        f"import json, os, sys; os.sched_setaffinity(0, {{{cpu:d}}});"
        "from runtime.tools.bench.limits import _gemm_seconds;"
        "s, bs = json.loads(sys.argv[1]), json.loads(sys.argv[2]);"
        f"print(json.dumps({{b: _gemm_seconds([tuple(x) for x in s], b, {min_seconds!r}) for b in bs}}))"
    )
    env = {**os.environ, **_BLAS_ENV}  # one BLAS thread: the bound of one core
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(shapes), json.dumps(batches)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    ).stdout
    return {int(k): float(v) for k, v in json.loads(out).items()}


def flop_bound(manifest: Manifest, *, batches: list[int], min_seconds: float, cpu: int) -> FlopBound:
    shapes = _lstm_shapes(manifest)
    flops = flops_per_step(manifest)
    seconds = _gemm_child(shapes, sorted(set(batches)), min_seconds, cpu)
    rates = [GemmRate(b, flops * b / t / 1e9, b / t) for b, t in sorted(seconds.items())]
    return FlopBound(flops_per_step=flops, rates=rates)


def _publisher(binary: str, port: str, topic: str, lines: Path) -> subprocess.Popen[bytes]:
    """mosquitto_pub -l: one QoS 1 message per line of `lines`."""
    with open(lines, "rb") as stdin:  # the child keeps its own descriptor
        return subprocess.Popen(
            [binary, "-p", port, "-q", "1", "-t", topic, "-l"],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def broker_raw_rate(work: Path, *, messages: int, publishers: int = 2) -> BrokerRate:
    """mosquitto_pub -l (QoS 1) x publishers → mosquitto_sub -C (QoS 1), 1-sample payloads."""
    pub_bin, sub_bin = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    if pub_bin is None or sub_bin is None:
        raise RuntimeError("mosquitto_pub/mosquitto_sub are not installed (apt-get install mosquitto-clients)")
    work.mkdir(parents=True, exist_ok=True)
    per_pub = min(_LINES_PER_PUB, max(1, messages // publishers))
    workload = Workload()
    lines = []
    for j in range(publishers):
        path = work / f"lines-{j}.txt"
        path.write_bytes(b"\n".join(workload.payload(n % 1000, n // 1000) for n in range(per_pub)) + b"\n")
        lines.append(path)
    total = per_pub * publishers
    broker = start_broker(work / "broker")
    try:
        port = str(broker.port)
        sub = subprocess.Popen(
            [sub_bin, "-p", port, "-q", "1", "-t", "raw/#", "-C", str(total)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # its SUBACK
        start = time.monotonic()
        pubs = [_publisher(pub_bin, port, f"raw/{j}", path) for j, path in enumerate(lines)]
        for pub in pubs:
            pub.wait(120)
        try:
            sub.wait(max(30.0, total / 5000))
        except subprocess.TimeoutExpired:
            sub.kill()
            raise RuntimeError(f"mosquitto_sub did not receive all {total} messages") from None
        seconds = time.monotonic() - start
    finally:
        broker.stop()
    what = f"mosquitto_pub -l x{publishers} → mosquitto_sub, QoS 1"
    return BrokerRate(what, total, seconds, total / seconds)


def paho_ceiling(work: Path, *, messages: int, streams: int = 1000, ours: bool = False) -> BrokerRate:
    """The benchmark's publisher floods; a bare paho subscriber receives and acks (QoS 1).
    ours: the service's own client and ack batching instead of stock paho (paho_sink --ours)."""
    work.mkdir(parents=True, exist_ok=True)
    rounds = max(1, messages // streams)
    files = flood_packets(work, "paho-ceiling", list(enumerate(stream_names(streams))), rounds, 1, 1, 1)
    total = rounds * streams
    broker = start_broker(work / "broker")
    try:
        args = [str(broker.port), "bench/#", str(total), *(["--ours"] if ours else [])]
        sink = LineProcess("runtime.tools.bench.paho_sink", args)
        try:
            sink.wait_ready(30.0)
            pub = LineProcess("runtime.tools.bench.publisher", [str(broker.port), str(files[0])])
            pub.wait_ready(30.0)
            pub.send("go\n")
            sent = pub.result(120.0)
            got = sink.result(max(60.0, total / 1000))
            pub.stop()
        finally:
            sink.stop()
    finally:
        broker.stop()
    seconds = got["done_at"] - sent["first_send"]
    what = (
        "the service's client (PahoClient), acks batched from another thread, ack only, QoS 1"
        if ours
        else "paho subscriber, ack only (Python client ceiling), QoS 1"
    )
    return BrokerRate(what, total, seconds, total / seconds)
