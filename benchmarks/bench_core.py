"""Measure the runtime core on one core: payload decoding and Engine.process per stream-step.

    python benchmarks/bench_core.py [--quick]

Engine figures: every stream sends one single-sample message per batch (the common case), the
batch is all streams, ORT runs with intra_op_num_threads=1. "ORT only" is the bare session.run
on the same batch shapes, so the difference is the engine's own cost (admission, gather/scatter,
normalization, scoring, hysteresis, outcomes). Best of several repeats (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_config.schema import ModelConfig
from runtime.engine.engine import Engine
from runtime.ingest.payload import FeatureLayout, Message, PayloadLimits, decode_payload
from runtime.model.artifact import Artifact, load_artifact
from tests.support.onnx_artifacts import write_lstm_artifact


def _best_us(fn: Callable[[], object], number: int, repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def _session(artifact: Artifact) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(artifact.model_bytes, options, providers=["CPUExecutionProvider"])


def bench_decode(artifact: Artifact, quick: bool) -> None:
    layout, limits = FeatureLayout.from_manifest(artifact.manifest), PayloadLimits()
    n = artifact.manifest.features.count
    rng = np.random.default_rng(0)
    row = [round(float(v), 4) for v in rng.standard_normal(n)]
    rows = np.round(rng.standard_normal((64, n)), 4).tolist()
    cases = {
        "positional, 1 sample": {"seq": 42, "ts": 1763800000.25, "values": row},
        "named, 1 sample": {"seq": 42, "ts": 1763800000.25, "values": dict(zip(layout.names, row, strict=False))},
        "positional, 64 samples": {"seq": 42, "ts": [1763800000.25 + i for i in range(64)], "values": rows},
    }
    for name, doc in cases.items():
        payload = json.dumps(doc).encode()
        samples = len(doc["ts"]) if isinstance(doc["ts"], list) else 1
        number = (2000 if quick else 20000) // samples
        us = _best_us(lambda: decode_payload(payload, layout, limits), number)
        bare = _best_us(lambda: json.loads(payload), number)
        print(
            f"  decode {name:24s} {n} features: {us:7.2f} us/message "
            f"({us / samples:5.2f} us/sample; json.loads alone {bare:6.2f})"
        )


def bench_engine(artifact: Artifact, streams: int, quick: bool) -> None:
    sess = _session(artifact)
    n = artifact.manifest.features.count
    engine = Engine(artifact, sess, ModelConfig(path=artifact.directory, target="cpu", threshold=1e9), name="bench")
    rng = np.random.default_rng(1)
    values = rng.standard_normal((streams, 1, n)).astype(np.float32)
    names = [f"plant/line{i % 10}/m{i}" for i in range(streams)]
    seq = [0]

    def step() -> None:
        s = seq[0]
        engine.process([Message(names[i], values[i], s, None, 0.0, 0.0) for i in range(streams)])
        seq[0] = s + 1

    number = max(3, (200 if quick else 2000) // max(1, streams // 10))
    for _ in range(25):  # past the warm-up steps, so hysteresis runs as in steady state
        step()
    total = _best_us(step, number) / streams
    feeds = {spec.input: np.zeros((spec.layers, streams, spec.hidden), np.float32) for spec in artifact.manifest.state}
    feeds[artifact.manifest.input] = values
    ort_only = _best_us(lambda: sess.run(artifact.manifest.outputs, feeds), number) / streams
    build = _best_us(lambda: [Message(names[i], values[i], 0, None, 0.0, 0.0) for i in range(streams)], number)
    build /= streams
    print(
        f"  engine {streams:5d} streams: {total - build:7.2f} us/stream-step "
        f"(ORT alone {ort_only:6.2f}, engine's own {total - build - ort_only:6.2f}; "
        f"building the Messages {build:4.2f} not counted)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        for features, hidden in ((4, 8), (8, 64)):
            directory = write_lstm_artifact(Path(tmp) / f"f{features}h{hidden}", features=features, hidden=hidden)
            artifact = load_artifact(directory)
            print(f"LSTM 2 layers, hidden {hidden}, {features} features")
            bench_decode(artifact, args.quick)
            for streams in (1, 100, 1000):
                bench_engine(artifact, streams, args.quick)


if __name__ == "__main__":
    main()
