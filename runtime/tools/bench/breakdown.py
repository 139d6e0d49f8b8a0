"""Section 1b: where each microsecond of an engine step goes, at 1,000 streams, one sample each.

The same rounds as engine_rate (decode_samples + Message + Engine.process, batches of 1,000),
with a timer wrapped around each part the engine calls (patched on this one engine instance
and, for admission, on runtime.engine.engine for the duration): a wrapper costs ~0.2 µs per
call and a part is called once per batch, so the split costs < 0.01 µs per step. What the
timers do not cover is the engine's own glue (fancy indexing of the plan, counters, the
alert loop's Python around the tracker).

    decode       decode_samples + building the Message (the intake's work)
    admission    runtime.engine.admission.admit: slots, dedup, gaps, units, one float32 array
    normalize    (x - mean) / std, clipped
    gather       the recurrent state of the batch's slots, [layers, B, hidden]
    ort          session.run
    scatter      the new state back into the slab
    scoring      Scorer.step: forecast error, per-feature EWMA, reduce
    finite       the non-finite guard
    hysteresis   AlertTracker.observe + status_changes (baselines learn inside observe)
    outcomes     one Outcome per message, alerts attached
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import runtime.engine.engine as engine_module
from runtime.engine.types import Message
from runtime.ingest.payload import decode_samples
from runtime.tools.bench.engines import BenchEngine
from runtime.tools.bench.workload import Workload, stream_names

__all__ = ["PARTS", "Breakdown", "measure_breakdown"]

PARTS = (
    "decode",
    "admission",
    "normalize",
    "gather",
    "ort",
    "scatter",
    "scoring",
    "finite",
    "hysteresis",
    "outcomes",
    "glue",
)
_RUNS = itertools.count()
_ADMIT = "admit"  # the name Engine.process calls admission by, in runtime.engine.engine


@dataclass(frozen=True)
class Breakdown:
    streams: int
    steps: int
    """Timed stream-steps."""
    us: dict[str, float]
    """µs per stream-step of each part (PARTS order); "glue" is Engine.process minus its parts."""
    total_us: float


def _timed(fn: Callable[..., Any], into: dict[str, float], part: str) -> Callable[..., Any]:
    perf = time.perf_counter

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = perf()
        try:
            return fn(*args, **kwargs)
        finally:
            into[part] += perf() - t0

    return wrapper


class _Session:
    def __init__(self, session: Any, into: dict[str, float]) -> None:
        self.run = _timed(session.run, into, "ort")


@contextmanager
def _instrumented(bench: BenchEngine, into: dict[str, float]) -> Iterator[None]:
    engine = bench.engine
    saved_admit, saved_session = getattr(engine_module, _ADMIT), engine._session
    setattr(engine_module, _ADMIT, _timed(saved_admit, into, "admission"))
    engine._session = _Session(saved_session, into)
    patched: list[tuple[object, str]] = []
    parts: tuple[tuple[object, str, str], ...] = (
        (engine, "_normalize", "normalize"),
        (engine.store, "gather", "gather"),
        (engine.store, "scatter", "scatter"),
        (engine.scorer, "step", "scoring"),
        (engine, "_guard_finite", "finite"),
        (engine.tracker, "observe", "hysteresis"),
        (engine.tracker, "status_changes", "hysteresis"),
        (engine, "_outcomes", "outcomes"),
    )
    for owner, name, part in parts:
        try:
            setattr(owner, name, _timed(getattr(owner, name), into, part))
        except AttributeError:  # a class with __slots__: that part stays in the glue
            continue
        patched.append((owner, name))
    try:
        yield
    finally:
        setattr(engine_module, _ADMIT, saved_admit)
        engine._session = saved_session
        for owner, name in patched:
            delattr(owner, name)


def measure_breakdown(bench: BenchEngine, streams: int = 1000, rounds: int = 20) -> Breakdown:
    """rounds rounds of one message per stream (after 3 warm-up rounds), every part timed."""
    workload = Workload()
    names = stream_names(streams, prefix=f"breakdown-{next(_RUNS)}-{streams}/")  # new streams each call
    layout, limits, engine = bench.layout, bench.limits, bench.engine
    clock, wall, perf = time.monotonic, time.time, time.perf_counter
    into = dict.fromkeys(PARTS, 0.0)
    process_s = 0.0
    for k in range(rounds + 3):
        payloads = [workload.payload(i, k) for i in range(streams)]
        if k == 3:
            into = dict.fromkeys(PARTS, 0.0)
            process_s = 0.0
        with _instrumented(bench, into):
            t0 = perf()
            messages = []
            for name, payload in zip(names, payloads, strict=True):
                values, seq, ts = decode_samples(payload, layout, limits)
                messages.append(Message(name, values, seq, ts, clock(), wall()))
            t1 = perf()
            engine.process(messages)
            t2 = perf()
        into["decode"] += t1 - t0
        process_s += t2 - t1
    steps = rounds * streams
    into["glue"] = process_s - sum(into[p] for p in PARTS if p not in ("decode", "glue"))
    us = {part: into[part] / steps * 1e6 for part in PARTS}
    return Breakdown(streams=streams, steps=steps, us=us, total_us=(into["decode"] + process_s) / steps * 1e6)
