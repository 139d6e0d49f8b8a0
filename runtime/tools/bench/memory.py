"""Section 3: cold start to ready, and resident memory per idle stream — in a fresh process.

    python -m runtime.tools.bench.memory ARTIFACT_DIR COUNT [COUNT ...]

A fresh interpreter, because the benchmark's own process has already allocated and freed far
more than a gateway would (the allocator would hand freed pages to new streams and hide them).

Ready = load_artifact (read, sha256, ONNX checks) + create_session (ORT session, one warm-up
step) + the Engine: what `edgewatch serve` does per model before it reports READY. The
interpreter's start and imports are measured too, separately.

Memory: after one full batch of 1,024 warm-up streams has stepped (so the working set of a
batch — gather/scatter copies, ORT's buffers — exists, as on any busy gateway), COUNT new
streams each step once (batches of 1024) and are then left idle; the resident set is read
after each COUNT (cumulative). The growth includes everything a stream costs: its slots in every column
of the StateStore (the slabs grow by a quarter, so part of the growth is capacity kept for the
next streams), its id string and dict entries.
"""

from __future__ import annotations

import time

_T0 = time.monotonic()  # before the imports below: ColdStart.imports_s counts them (hence the E402s)

import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402

from runtime.tools.bench.machine import rss_bytes  # noqa: E402

if TYPE_CHECKING:
    from runtime.engine.engine import Engine

_BATCH = 1024


@dataclass(frozen=True)
class ColdStart:
    imports_s: float
    """Interpreter start → numpy, onnxruntime and the runtime imported."""
    load_artifact_s: float
    create_session_s: float
    """ORT session build + its warm-up step."""
    engine_s: float
    ready_s: float
    """load_artifact + create_session (with warm-up) + Engine."""


@dataclass(frozen=True)
class StreamMemory:
    streams: int
    """Idle streams held (cumulative)."""
    rss_growth_bytes: int
    bytes_per_stream: float


def _step_new_streams(engine: Engine, start: int, count: int, features: int) -> None:
    from runtime.engine.types import Message

    values = np.full((1, features), 50.0, np.float32)
    for first in range(start, start + count, _BATCH):
        last = min(start + count, first + _BATCH)
        messages = [Message(f"l{i % 16}/m{i}", values, 0, None) for i in range(first, last)]
        engine.process(messages)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    directory, counts = Path(args[0]), [int(c) for c in args[1:]]
    import onnxruntime  # noqa: F401  timed with the imports (create_session imports it anyway)

    from edge_config.schema import ModelConfig, TargetConfig
    from runtime.engine.engine import Engine
    from runtime.engine.streams import no_hugepage_slabs
    from runtime.model.artifact import load_artifact
    from runtime.model.session import create_session

    no_hugepage_slabs()  # as the Service does
    t_imports = time.monotonic()
    artifact = load_artifact(directory)
    t_loaded = time.monotonic()
    session, _ = create_session(artifact, TargetConfig(type="cpu", intra_op_threads=1), name="bench")
    t_session = time.monotonic()
    engine = Engine(
        artifact, session, ModelConfig(path=directory, target="cpu"), name="bench", max_streams=max(counts) * 2
    )
    t_ready = time.monotonic()
    cold = ColdStart(
        imports_s=t_imports - _T0,
        load_artifact_s=t_loaded - t_imports,
        create_session_s=t_session - t_loaded,
        engine_s=t_ready - t_session,
        ready_s=t_ready - t_imports,
    )
    features = artifact.manifest.features.count
    # One full batch first: the arrays of a 1,024-message step (gather/scatter copies, ORT's
    # buffers) are the working set of any busy gateway, whatever the number of streams it holds.
    _step_new_streams(engine, 10**9, _BATCH, features)
    gc.collect()
    base = rss_bytes()
    held, rows = 0, []
    for count in counts:
        _step_new_streams(engine, held, count - held, features)
        held = count
        gc.collect()
        growth = rss_bytes() - base
        rows.append(StreamMemory(held, growth, growth / held))
    print(json.dumps({"cold_start": cold.__dict__, "streams": [r.__dict__ for r in rows]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
