"""One Service in its own process, the way `edgewatch serve` runs it, reporting its own counters.

    python -m runtime.tools.bench.service_proc CONFIG.json EXPECT [--poll-s S]

CONFIG.json is a GatewayConfig (model_dump_json). The process builds the Service, starts it,
prints "ready" once connected and subscribed, then watches the service's exact counters until
EXPECT input messages are accounted for (processed + skipped + rejected + dropped) or stdin
closes, and prints one JSON line: the counter snapshot, the monotonic time the last one was
processed, and the service's own step-latency histogram. Then it stops the service.

A process, not a thread of the benchmark: the service's two threads get a GIL of their own,
and several of them can serve partitions of the topic space side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.ops.counts import Counts

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

_SUBACK_WAIT_S = 0.5  # the bus does not expose SUBACK: publications before it would not reach us
_POLL_S = 0.002
_TIMEOUT_S = 600.0


def histogram_buckets(registry: CollectorRegistry, name: str) -> list[tuple[float, float]]:
    """[(upper bound s, cumulative count)] of a Prometheus histogram, +Inf last."""
    out: list[tuple[float, float]] = []
    for metric in registry.collect():
        if metric.name != name:
            continue
        out.extend(
            (float(sample.labels["le"]), float(sample.value))
            for sample in metric.samples
            if sample.name == f"{name}_bucket"
        )
    return sorted(out)


def _accounted(s: Counts) -> int:
    """Input messages the service is done with, whatever became of them."""
    return s.processed + sum(s.skipped.values()) + sum(s.rejected.values()) + sum(s.dropped.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.tools.bench.service_proc")
    p.add_argument("config", type=Path)
    p.add_argument("expect", type=int)
    p.add_argument(
        "--poll-s",
        type=float,
        default=_POLL_S,
        help="how often the counters are read (each read takes the GIL from the service's threads)",
    )
    args = p.parse_args(argv)

    from edge_config.schema import GatewayConfig
    from runtime.service import Service

    config = GatewayConfig.model_validate_json(args.config.read_text())
    service = Service(config)
    service.start()
    if not service.bus.wait_connected(10.0):
        service.stop()
        print(json.dumps({"error": "the service did not connect"}), flush=True)
        return 1
    time.sleep(_SUBACK_WAIT_S)
    print("ready", flush=True)
    closed = threading.Event()

    def wait_stdin_closed() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait_stdin_closed, daemon=True).start()
    deadline = time.monotonic() + _TIMEOUT_S
    first_at = None
    done_at = None
    while not closed.is_set() and time.monotonic() < deadline:
        snap = service.tally.snapshot()
        if first_at is None and snap.received:
            first_at = time.monotonic()
        if _accounted(snap) >= args.expect:
            done_at = time.monotonic()
            break
        time.sleep(args.poll_s)
    snap = service.tally.snapshot()
    report = {
        "pid": os.getpid(),
        "counters": snap.as_json_dict(),
        "first_at": first_at,
        "done_at": done_at,
        "latency_buckets": histogram_buckets(service.metrics.registry, "edgewatch_step_latency_seconds"),
        "batch_buckets": histogram_buckets(service.metrics.registry, "edgewatch_batch_messages"),
        "bus": {"dropped_outgoing": service.bus.snapshot().dropped_outgoing},
    }
    print(json.dumps(report), flush=True)
    service.stop(timeout=10.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
