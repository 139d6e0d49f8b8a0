"""Measure checkpoint bytes and write/load time for N streams of a real Engine's StateStore.

    .venv/bin/python benchmarks/measure_checkpoint.py [--streams 1000 10000] [--hidden 64] [--layers 2]
        [--features 8] [--dir DIR] [--repeat 5]

Builds an Engine on a random-weight LSTM artifact (no torch), opens N streams, fills every
column with non-trivial values, and snapshots it with the service's own
`runtime.state.transfer.snapshot_engine` (state slabs, last_seq/last_ts/steps, every other
portable column, object columns as "<U").
Prints one line per N: bytes, bytes/stream, medians of snapshot (gather from the store), encode
(+ sha256), write (fsync and renames included) and load (+ verify), and the bytes the kernel
accounted as written to storage per write (/proc/self/io write_bytes: the file's pages; the
file system's journal and metadata blocks are written by the kernel and not included).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.support helpers
from edge_config.schema import ModelConfig
from runtime.engine.engine import Engine
from runtime.model.artifact import load_artifact
from runtime.state.checkpoint import StateLayout, load_checkpoint, write_checkpoint
from runtime.state.transfer import snapshot_engine
from tests.support.onnx_artifacts import write_lstm_artifact


class _NoSession:
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray], /) -> list[np.ndarray]:
        raise AssertionError("not stepped in this measurement")


def storage_write_bytes() -> int:
    """Bytes this process caused to be written to storage so far (Linux; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fill(engine: Engine, n: int, rng: np.random.Generator) -> None:
    store = engine.store
    for i in range(n):
        store.open(f"plant1/line{i % 8}/machine{i:05d}", now=0.0)
    for name in store._columns:
        column = store.column(name)
        if column.dtype == object:
            column[:n] = [f"{int(v):016x}" if v > 0.7 else None for v in rng.random(n)]
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
    artifact = load_artifact(
        write_lstm_artifact(
            work / "artifact", features=args.features, hidden=args.hidden, layers=args.layers, threshold=1.0
        )
    )
    layout = StateLayout.from_manifest(artifact.manifest)
    rng = np.random.default_rng(0)
    print(f"{args.layers}x{args.hidden} LSTM, {args.features} features, folder {work}")
    for n in args.streams:
        engine = Engine(
            artifact, _NoSession(), ModelConfig(path=work / "artifact", target="cpu"), name="m", max_streams=max(n, 1)
        )
        fill(engine, n, rng)
        gather, encode, write, load, disk = [], [], [], [], []
        for _ in range(args.repeat):
            taken = time.perf_counter()
            snap = snapshot_engine(engine)
            gather.append(time.perf_counter() - taken)
            before = storage_write_bytes()
            result = write_checkpoint(work / "m.ckpt", snap)
            disk.append(storage_write_bytes() - before)
            encode.append(result.encode_s)
            write.append(result.write_s)
            started = time.perf_counter()
            restored = load_checkpoint(work / "m.ckpt", layout)
            load.append(time.perf_counter() - started)
            assert restored.status == "restored"
        size = result.bytes
        print(
            f"{n:>7} streams: {size:>11,} bytes ({size / max(n, 1):,.0f} B/stream); "
            f"snapshot {statistics.median(gather) * 1e3:.1f} ms, encode {statistics.median(encode) * 1e3:.1f} ms, "
            f"write+fsync "
            f"{statistics.median(write) * 1e3:.1f} ms, load+verify {statistics.median(load) * 1e3:.1f} ms, "
            f"storage write_bytes {statistics.median(disk):,.0f} per write"
        )
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
