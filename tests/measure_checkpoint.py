"""Measure checkpoint bytes and write/load time for N streams of a real Engine's StateStore.

    .venv/bin/python tests/measure_checkpoint.py [--streams 1000 10000] [--hidden 64] [--layers 2]
        [--features 8] [--dir DIR] [--repeat 5]

Builds an Engine on a random-weight LSTM artifact (no torch), opens N streams, fills every
column with non-trivial values, and snapshots *every* StateStore column the way the
integration is meant to (docs/RELIABILITY.md): state slabs, last_seq/last_ts/steps, and the
other columns except the monotonic-clock ones, object columns converted to "<U".
Prints one line per N: bytes, bytes/stream, medians of snapshot (gather from the store), encode
(+ sha256), write (fsync and renames included) and load (+ verify).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx_artifacts import write_lstm_artifact

from edge_config.schema import ModelConfig
from runtime.artifact import load_artifact
from runtime.checkpoint import StateLayout, StateSnapshot, load_checkpoint, write_checkpoint
from runtime.engine import Engine

MONOTONIC = {"last_seen", "alert.last_update"}  # meaningless after a restart


class _NoSession:
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]:
        raise AssertionError("not stepped in this measurement")


def snapshot(engine: Engine) -> StateSnapshot:
    store = engine.store
    streams = list(store.slots)
    slots = np.fromiter(store.slots.values(), dtype=np.int64, count=len(streams))
    states = {s.input: store.column(s.input).take(slots, axis=1) for s in engine.artifact.manifest.state}
    fixed = {"last_seq", "last_ts", "steps", *states, *MONOTONIC}
    columns = {}
    for name in store._columns:  # noqa: SLF001 — the measurement stands in for StateStore.snapshot()
        if name in fixed:
            continue
        values = store.column(name)[slots]
        columns[name] = np.array(["" if v is None else v for v in values]) if values.dtype == object else values
    return StateSnapshot(engine.artifact.sha256, tuple(streams), states, store.last_seq[slots].copy(),
                         store.last_ts[slots].copy(), store.steps[slots].copy(), columns, created=time.time())


def fill(engine: Engine, n: int, rng: np.random.Generator) -> None:
    store = engine.store
    for i in range(n):
        store.open(f"plant1/line{i % 8}/machine{i:05d}", now=0.0)
    for name in store._columns:  # noqa: SLF001
        column = store.column(name)
        if column.dtype == object:
            column[: n] = [f"{int(v):016x}" if v > 0.7 else None for v in rng.random(n)]
        elif column.dtype == np.bool_:
            column[...] = rng.random(column.shape) > 0.5
        else:
            column[...] = rng.random(column.shape) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgewatch-ckpt-", dir=args.dir))
    artifact = load_artifact(write_lstm_artifact(work / "artifact", features=args.features, hidden=args.hidden,
                                                 layers=args.layers, threshold=1.0))
    layout = StateLayout.from_manifest(artifact.manifest)
    rng = np.random.default_rng(0)
    print(f"{args.layers}x{args.hidden} LSTM, {args.features} features, folder {work}")
    for n in args.streams:
        engine = Engine(artifact, _NoSession(), ModelConfig(path=work / "artifact", target="cpu"),
                        name="m", max_streams=max(n, 1))
        fill(engine, n, rng)
        gather, encode, write, load = [], [], [], []
        for _ in range(args.repeat):
            taken = time.perf_counter()
            snap = snapshot(engine)
            gather.append(time.perf_counter() - taken)
            result = write_checkpoint(work / "m.ckpt", snap)
            encode.append(result.encode_s)
            write.append(result.write_s)
            started = time.perf_counter()
            restored = load_checkpoint(work / "m.ckpt", layout)
            load.append(time.perf_counter() - started)
            assert restored.status == "restored"
        size = result.bytes
        print(f"{n:>7} streams: {size:>11,} bytes ({size / max(n, 1):,.0f} B/stream); "
              f"snapshot {statistics.median(gather) * 1e3:.1f} ms, encode {statistics.median(encode) * 1e3:.1f} ms, "
              f"write+fsync "
              f"{statistics.median(write) * 1e3:.1f} ms, load+verify {statistics.median(load) * 1e3:.1f} ms")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
