"""One benchmark run: every section in order, into one JSON-able dict.

A section that fails is recorded under "errors" and the others still run, so one missing tool
(say, mosquitto) does not hide the rest; `edgewatch bench` exits 1 when anything failed.
Performance figures never fail a run: the goals are reported, not enforced.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.tools.bench import baselines, e2e, latency, limits
from runtime.tools.bench.alert_cost import measure_alert_cost
from runtime.tools.bench.breakdown import measure_breakdown
from runtime.tools.bench.e2e import MqttVersion
from runtime.tools.bench.engine_rate import MAX_BATCH, measure_engine
from runtime.tools.bench.engines import open_engine
from runtime.tools.bench.machine import describe_machine, load_average, pinned_to_one_cpu
from runtime.tools.bench.reference import ReferenceModels, prepare_reference

__all__ = ["FULL", "QUICK", "Plan", "run_bench"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How much of each section to run."""

    stream_counts: tuple[int, ...] = (1, 100, 1000, 10_000)
    engine_s: float = 1.5
    """Timed seconds per engine configuration (whole rounds, at least 2)."""
    baseline_s: float = 1.5
    e2e_streams: int = 1000
    e2e_messages: int = 60_000
    multi_samples: int = 10
    multi_messages: int = 10_000
    breakdown_rounds: int = 20
    alert_cost_rounds: int = 3
    """Timed rounds of the alert flood's limit: the service's CPU per message with an alert each."""
    """Timed rounds (one message per stream) of the per-part split of a step."""
    partitions: tuple[int, ...] = (2,)
    """Service processes over partitioned topics, beside the single one."""
    protocols: tuple[MqttVersion, ...] = ("3.1.1",)
    """MQTT versions measured beside 5 (1 sample/message, one service)."""
    latency_rate: float = 2000.0
    latency_s: float = 15.0
    latency_streams: int = 1000
    """Streams of the latency runs (each fails once in the fault-burst run)."""
    memory_counts: tuple[int, ...] = (10_000, 100_000)
    gemm_s: float = 0.5
    broker_messages: int = 100_000
    paho_messages: int = 60_000


FULL = Plan()
QUICK = Plan(
    engine_s=0.1,
    baseline_s=0.15,
    e2e_messages=4000,
    multi_messages=500,
    breakdown_rounds=3,
    alert_cost_rounds=1,
    partitions=(),
    protocols=(),
    latency_s=2.0,
    latency_streams=200,
    memory_counts=(10_000,),
    gemm_s=0.05,
    broker_messages=10_000,
    paho_messages=4000,
)


def _section(result: dict[str, Any], name: str, say: Say, fn: Callable[[], Any]) -> None:
    say(f"[{name}]")
    start = time.monotonic()
    try:
        result[name] = fn()
    except Exception as exc:  # noqa: BLE001  one section's failure must not hide the others' figures
        result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        say(f"  {name} failed: {type(exc).__name__}: {exc}")
        say("".join(traceback.format_exc(limit=4)))
    result.setdefault("section_seconds", {})[name] = round(time.monotonic() - start, 2)


def _asdict(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def _engine(ref: ReferenceModels, plan: Plan, say: Say) -> dict[str, Any]:
    rows = []
    for precision, directory in (("fp32", ref.fp32), ("int8", ref.int8)):
        if directory is None:
            continue
        for streams in plan.stream_counts:
            rate = measure_engine(open_engine(directory), precision, streams, min_seconds=plan.engine_s)
            say(f"  {precision} {streams:>6} streams: {rate.steps_per_s:>9,.0f} steps/s")
            rows.append(_asdict(rate))
    # what lifts the per-message costs: several samples per message share them
    rate = measure_engine(
        open_engine(ref.fp32), "fp32", plan.e2e_streams, min_seconds=plan.engine_s, samples=plan.multi_samples
    )
    say(
        f"  fp32 {plan.e2e_streams:>6} streams, {plan.multi_samples} samples/message: {rate.steps_per_s:>9,.0f} steps/s"
    )
    rows.append(_asdict(rate))
    split = measure_breakdown(open_engine(ref.fp32), streams=plan.e2e_streams, rounds=plan.breakdown_rounds)
    say(f"  where a step goes (fp32, {split.streams} streams): {split.total_us:.1f} µs")
    return {"rows": rows, "breakdown": _asdict(split)}


def _baselines(ref: ReferenceModels, plan: Plan, say: Say) -> dict[str, Any]:
    bench = open_engine(ref.fp32)
    out: dict[str, Any] = {}
    if ref.torch_module is not None:
        out["torch"] = _asdict(baselines.torch_per_message(bench, ref.torch_module, min_seconds=plan.baseline_s))
    else:
        out["torch"] = None
        out["torch_skipped"] = "torch is not installed"
    out["ort"] = _asdict(baselines.ort_per_message(bench, min_seconds=plan.baseline_s))
    for window in (50, 200):
        out[f"window{window}"] = _asdict(baselines.window_per_message(bench, window, min_seconds=plan.baseline_s))
    for key, row in out.items():
        if isinstance(row, dict):
            say(f"  {key}: {row['steps_per_s']:,.0f} messages/s")
    return out


def _memory(ref: ReferenceModels, plan: Plan) -> dict[str, Any]:
    """runtime.tools.bench.memory in a fresh interpreter (see its docstring for why)."""
    args = [sys.executable, "-m", "runtime.tools.bench.memory", str(ref.fp32), *map(str, plan.memory_counts)]
    start = time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"runtime.tools.bench.memory exited with {out.returncode}: {out.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.monotonic() - start
    result["state_bytes_per_stream"] = _state_bytes(ref)
    return result


def _state_bytes(ref: ReferenceModels) -> int:
    """The recurrent state of one stream (float32 h and c of every layer): the floor of its memory."""
    from runtime.model.artifact import load_artifact

    return sum(4 * s.layers * s.hidden for s in load_artifact(ref.fp32).manifest.state)


def _e2e(ref: ReferenceModels, plan: Plan, work: Path, say: Say) -> dict[str, Any]:
    out: dict[str, Any] = {}
    single = e2e.measure_throughput(ref.fp32, work / "single", streams=plan.e2e_streams, messages=plan.e2e_messages)
    out["single"] = _asdict(single)
    say(f"  1 sample/message: {single.msg_per_s:,.0f} msg/s, lost {single.lost}")
    multi = e2e.measure_throughput(
        ref.fp32, work / "multi", streams=plan.e2e_streams, messages=plan.multi_messages, samples=plan.multi_samples
    )
    out["multi"] = _asdict(multi)
    say(f"  {plan.multi_samples} samples/message: {multi.samples_per_s:,.0f} samples/s, lost {multi.lost}")
    out["protocols"] = []
    for protocol in plan.protocols:
        other = e2e.measure_throughput(
            ref.fp32, work / f"mqtt{protocol}", streams=plan.e2e_streams, messages=plan.e2e_messages, protocol=protocol
        )
        out["protocols"].append(_asdict(other))
        say(f"  MQTT {protocol}: {other.msg_per_s:,.0f} msg/s, lost {other.lost}")
    out["partitioned"] = []
    for services in plan.partitions:
        for protocol in ("5", *plan.protocols):
            part = e2e.measure_throughput(
                ref.fp32,
                work / f"part{services}-{protocol}",
                streams=plan.e2e_streams,
                messages=plan.e2e_messages,
                services=services,
                protocol=protocol,
            )
            out["partitioned"].append(_asdict(part))
            say(f"  {services} service processes, MQTT {protocol}: {part.msg_per_s:,.0f} msg/s, lost {part.lost}")
    hop = latency.measure_broker_hop(
        work / "hop", streams=plan.latency_streams, rate=plan.latency_rate, seconds=plan.latency_s
    )
    out["broker_hop"] = _asdict(hop)
    say(f"  broker hop at {plan.latency_rate:,.0f} msg/s: p50 {hop.p50_ms:.1f} ms, p99 {hop.p99_ms:.1f} ms")
    for run, key in (("faults", "latency"), ("flood", "alert_flood")):
        lat = latency.measure_latency(
            ref.fp32, work / run, streams=plan.latency_streams, rate=plan.latency_rate, seconds=plan.latency_s, run=run
        )
        out[key] = _asdict(lat)
        say(f"  latency at {plan.latency_rate:,.0f} msg/s, {run}: p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms")
    cost = measure_alert_cost(ref.fp32, streams=plan.e2e_streams, rounds=plan.alert_cost_rounds)
    out["alert_cost"] = _asdict(cost)
    say(f"  an alert per message, service side: {cost.us_per_message:.0f} µs/message (≤ {cost.max_msg_per_s:,.0f}/s)")
    return out


def _limits(ref: ReferenceModels, plan: Plan, work: Path, cpu: int) -> dict[str, Any]:
    from runtime.model.artifact import load_artifact

    manifest = load_artifact(ref.fp32).manifest
    batches = sorted({1, *(min(s, MAX_BATCH) for s in plan.stream_counts)})
    return {
        "flop_bound": _asdict(limits.flop_bound(manifest, batches=batches, min_seconds=plan.gemm_s, cpu=cpu)),
        "broker_raw": _asdict(limits.broker_raw_rate(work / "broker-raw", messages=plan.broker_messages)),
        "paho_ceiling": _asdict(limits.paho_ceiling(work / "paho", messages=plan.paho_messages)),
        "client_ceiling": _asdict(limits.paho_ceiling(work / "ours", messages=plan.paho_messages, ours=True)),
    }


def run_bench(*, quick: bool, work: Path, say: Say) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    started = time.monotonic()
    result: dict[str, Any] = {
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": dataclasses.asdict(plan),
        "machine": dataclasses.asdict(describe_machine()),
        "load_before": list(load_average()),
    }
    say("[reference model]")
    ref = prepare_reference(work / "models")
    result["model"] = {
        "source": ref.source,
        "notes": list(ref.notes),
        "fp32": str(ref.fp32),
        "int8": str(ref.int8) if ref.int8 else None,
    }
    gc.collect()
    gc.freeze()  # as Service.start does: what setup built (torch, the export) is not walked by later collections
    with pinned_to_one_cpu() as cpu:
        result["pinned_cpu"] = cpu
        _section(result, "engine", say, lambda: _engine(ref, plan, say))
        _section(result, "baselines", say, lambda: _baselines(ref, plan, say))
    _section(result, "limits", say, lambda: _limits(ref, plan, work, cpu))
    _section(result, "memory", say, lambda: _memory(ref, plan))
    _section(result, "e2e", say, lambda: _e2e(ref, plan, work / "e2e", say))
    gc.unfreeze()
    result["load_after"] = list(load_average())
    result["seconds"] = round(time.monotonic() - started, 1)
    return result
