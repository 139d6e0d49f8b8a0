"""`edgewatch bench [--quick] [--json FILE]`: how fast the streaming design is, beside what users
would write instead and beside what the machine allows — all measured in one run.

    runner        the sections in order → one JSON-able dict
    reference     the reference model, exported in the run (fp32 + int8), or built without torch
    engine_rate   1. Engine.process with decode, one core, 1 … 10,000 streams
    breakdown     1. where each microsecond of a step goes (decode, admission, ORT, scoring, …)
    baselines     1. PyTorch / ORT per message, re-run windows of 50 and 200
    e2e           2. through mosquitto: throughput (1 and 10 samples/message, partitioned)
    latency       2. publish → alert: fault bursts amid healthy traffic; an alert for every message
    alert_cost    2. the alert flood's own limit: the service's CPU per message with an alert each
    memory        3. RSS per idle stream, cold start to ready (a fresh process)
    limits        4. FLOP bound, broker raw rate, paho's ceiling
    goals/report  the issue's goals met / missed, the printed table

Child processes (so that what they measure has a core and a GIL of its own): publisher,
service_proc, paho_sink, memory. Figures are never asserted: CI runs `--quick` to keep it working.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["main", "register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark the engine, baselines, end to end through mosquitto, memory and the machine's limits",
        description="Measure, in one run: the Engine on one core (1 to 10,000 streams, fp32 and int8) beside "
        "PyTorch/ORT per message and re-run windows; end to end through a private mosquitto (throughput at "
        "QoS 1, publish → alert latency of fault bursts and of an alert per message, multi-sample messages); "
        "RSS per idle stream and cold start; the FLOP bound and the broker's raw rate. Prints a table with the "
        "goals met / missed.",
    )
    p.add_argument("--quick", action="store_true", help="a small run (< 60 s) that checks everything works")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    p.add_argument(
        "--workdir", type=Path, metavar="DIR", help="keep artifacts and broker logs here (default: a temp dir)"
    )
    p.set_defaults(func=run)


def _finite(value: Any) -> Any:
    """NaN/inf (a figure that could not be measured) → null: strict JSON for other tools."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """`python -m runtime.tools.bench`: the same command without the edgewatch dispatcher."""
    parser = argparse.ArgumentParser(prog="edgewatch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


def run(args: argparse.Namespace) -> int:
    from runtime.tools.bench.goals import judge, ratios
    from runtime.tools.bench.report import format_report
    from runtime.tools.bench.runner import run_bench

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-") as tmp:
        work = args.workdir or Path(tmp)
        result = run_bench(quick=args.quick, work=work, say=say)
    result["ratios"] = ratios(result)
    result["goals"] = [{**g.__dict__, "met": g.met} for g in judge(result)]
    print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(_finite(result), indent=2, default=str, allow_nan=False) + "\n")
    return 1 if result.get("errors") else 0
