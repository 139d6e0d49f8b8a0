"""Section 1: the Engine without a network — stream-steps/s on one core, all per-message work in.

What one timed message costs here is what the daemon's worker and intake spend on it:
`decode_samples` of real JSON bytes (with seq and ts), building the Message, and its share of
`Engine.process` (admission/dedup, normalization, state gather/scatter, ONNX Runtime, scoring,
the alert decision). Messages go to `process` in batches of up to `max_batch` (the service's
default, 1024), one message per stream per round, in round-robin order — what the worker gets
when every stream has a message waiting. With 1 stream every call holds one message (the
latency-bound case: the per-call overhead is paid by one step).

"ORT alone" is the bare session.run at the same batch size with zero state: the part of a
step that the model itself costs, so the rest is the engine's and the decoder's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.engine.types import Message
from runtime.ingest.payload import decode_samples
from runtime.tools.bench.engines import BenchEngine
from runtime.tools.bench.workload import Workload, stream_names

MAX_BATCH = 1024  # RuntimeConfig.max_batch's default
_WARMUP_ROUNDS = 3  # BENCH_ALERTS.warmup_steps + 1: every stream scored and judged afterwards


@dataclass(frozen=True)
class EngineRate:
    precision: str
    streams: int
    samples_per_message: int
    batch: int
    """Messages per Engine.process call."""
    messages: int
    """Timed messages."""
    seconds: float
    steps_per_s: float
    """Stream-steps (samples) per second."""
    us_per_step: float
    decode_us: float
    """decode_samples + Message per stream-step."""
    engine_us: float
    """Engine.process per stream-step."""
    ort_us: float
    """session.run alone per stream-step at the same batch size."""
    alerts: int
    """Alerts raised during the timed rounds (a healthy plant: few)."""


def _run_round(
    bench: BenchEngine, workload: Workload, names: list[str], k: int, batch: int
) -> tuple[float, float, int]:
    """Message k of every stream; returns (decode s, process s, alerts)."""
    decode_s = process_s = 0.0
    alerts = 0
    layout, limits, engine = bench.layout, bench.limits, bench.engine
    clock, wall, perf = time.monotonic, time.time, time.perf_counter
    for start in range(0, len(names), batch):
        stop = min(len(names), start + batch)
        payloads = [workload.payload(i, k) for i in range(start, stop)]  # the broker's bytes: not timed
        t0 = perf()
        messages = []
        for i, payload in zip(range(start, stop), payloads, strict=False):
            values, seq, ts = decode_samples(payload, layout, limits)
            messages.append(Message(names[i], values, seq, ts, clock(), wall()))
        t1 = perf()
        outcomes = engine.process(messages)
        t2 = perf()
        decode_s += t1 - t0
        process_s += t2 - t1
        alerts += sum(len(o.alerts) for o in outcomes)
    return decode_s, process_s, alerts


def _timed(fn: Callable[[], object], min_seconds: float, min_calls: int = 3) -> float:
    """Seconds per call of fn, calling it for at least min_seconds."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        took = time.perf_counter() - start
        if calls >= min_calls and took >= min_seconds:
            return took / calls


def ort_alone_us(bench: BenchEngine, batch: int, min_seconds: float, steps: int = 1) -> float:
    """session.run per stream-step at `batch` streams of `steps` time steps, zero state."""
    manifest = bench.artifact.manifest
    feeds = {s.input: np.zeros((s.layers, batch, s.hidden), np.float32) for s in manifest.state}
    feeds[manifest.input] = np.zeros((batch, steps, manifest.features.count), np.float32)
    per_call = _timed(lambda: bench.session.run(list(manifest.outputs), feeds), min_seconds)
    return per_call / (batch * steps) * 1e6


def measure_engine(
    bench: BenchEngine, precision: str, streams: int, *, min_seconds: float, min_rounds: int = 2, samples: int = 1
) -> EngineRate:
    """Warm up (3 rounds), then time whole rounds until min_seconds and min_rounds are reached.

    samples > 1: every message carries that many consecutive samples (one ORT call with T
    time steps per batch), so the per-message costs are shared by several stream-steps."""
    workload = Workload(samples=samples)
    names = stream_names(streams, prefix=f"{precision}-{streams}-{samples}/")
    batch = min(streams, MAX_BATCH)
    k = 0
    for _ in range(_WARMUP_ROUNDS):
        _run_round(bench, workload, names, k, batch)
        k += 1
    decode_s = process_s = 0.0
    alerts = rounds = 0
    while rounds < min_rounds or decode_s + process_s < min_seconds:
        d, p, a = _run_round(bench, workload, names, k, batch)
        decode_s, process_s, alerts, rounds, k = decode_s + d, process_s + p, alerts + a, rounds + 1, k + 1
    messages = rounds * streams
    steps = messages * samples
    total = decode_s + process_s
    return EngineRate(
        precision=precision,
        streams=streams,
        samples_per_message=samples,
        batch=batch,
        messages=messages,
        seconds=total,
        steps_per_s=steps / total,
        us_per_step=total / steps * 1e6,
        decode_us=decode_s / steps * 1e6,
        engine_us=process_s / steps * 1e6,
        ort_us=ort_alone_us(bench, batch, min(0.3, min_seconds), samples),
        alerts=alerts,
    )
