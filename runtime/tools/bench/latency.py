"""Section 2, latency: publish → alert through mosquitto at a fixed offered load.

Publications are paced at a fixed rate; the model's alert policy is set so that *every* scored
step publishes an alert (threshold below any score, raise after 1 of 1, an `update` on every
step while raised). A C subscriber (mosquitto_sub -F '%U %p') timestamps each alert as it
arrives; the alert's (stream, seq) names the publication, whose send time the publisher
recorded. So the latency is publish → broker → service → alert → broker → subscriber, on one
clock. It is pessimistic: a healthy plant publishes few alerts, here the service publishes one
per message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_config.schema import AlertPolicy
from runtime.tools.bench.e2e import PREFIX, flood_packets, publish, quantile_bound, report, service_processes
from runtime.tools.bench.workload import stream_names
from runtime.tools.local_broker import Broker, start_broker

EVERY_STEP_ALERTS = AlertPolicy(raise_k=1, raise_n=1, clear_m=1, warmup_steps=0, update_interval_s=1e-9, top_features=3)
"""Every scored step above the threshold publishes an alert: with threshold -1, every step."""
_STEADY_FROM = 2


@dataclass(frozen=True)
class E2ELatency:
    offered_per_s: float
    achieved_per_s: float
    messages: int
    matched: int
    """Alerts matched to their publication (every message but each stream's first)."""
    expected: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    steady_p99_ms: float
    """p99 without each stream's first _STEADY_FROM messages (new streams take slots, the slab grows)."""
    service_p50_ms: float
    service_p99_ms: float
    processed: int
    lost: int


def _subscriber(broker: Broker, out: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        raise RuntimeError("mosquitto_sub is not installed (apt-get install mosquitto-clients)")
    with open(out, "wb") as handle:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [binary, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", f"{PREFIX}/alerts/#", "-F", "%U %p"],
            stdout=handle,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(0.3)  # its SUBACK
    return proc


def _wait_lines(path: Path, lines: int, stall: float) -> None:
    """Until `path` has `lines` lines, or `stall` seconds pass without a new one (a service that
    is behind keeps delivering: its backlog is part of the latency, not a loss)."""
    seen, last_progress = -1, time.monotonic()
    while (count := path.read_bytes().count(b"\n")) < lines:
        if count != seen:
            seen, last_progress = count, time.monotonic()
        elif time.monotonic() - last_progress > stall:
            return
        time.sleep(0.05)


def _alert_times(path: Path) -> dict[tuple[str, int], float]:
    """(stream, seq) → arrival time (s since the epoch) of its alert at the subscriber."""
    out: dict[tuple[str, int], float] = {}
    for line in path.read_bytes().splitlines():
        stamp, _, payload = line.partition(b" ")
        try:
            alert = json.loads(payload)
            out.setdefault((alert["stream"], int(alert["seq"])), float(stamp))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def measure_latency(artifact: Path, work: Path, *, streams: int, rate: float, seconds: float) -> E2ELatency:
    """Paced publications at `rate`/s for `seconds`; every scored step raises or updates an alert."""
    work.mkdir(parents=True, exist_ok=True)
    names = stream_names(streams)
    rounds = max(2, round(rate * seconds / streams))
    total = rounds * streams
    files = flood_packets(work, "paced", list(enumerate(names)), rounds, 1, 1, 1)
    times_path = work / "send-times.f64"
    alerts_path = work / "alerts.txt"
    broker = start_broker(work / "broker")
    try:
        sub = _subscriber(broker, alerts_path)
        try:
            with service_processes(broker, artifact, work, [total], alerts=EVERY_STEP_ALERTS, threshold=-1.0) as procs:
                pub = publish(broker, files, qos=1, rate=rate, times=[times_path])[0]
                pub_result = pub.result(timeout=seconds * 3 + 60)
                # every alert out before the service stops (its stop flushes for 5 s at most)
                _wait_lines(alerts_path, total - streams, stall=10.0)
                svc = report(procs[0], timeout=30.0)
                pub.stop()
        finally:
            sub.terminate()
            sub.wait(10)
    finally:
        broker.stop()
    sent = np.frombuffer(times_path.read_bytes(), dtype=np.float64)
    arrivals = _alert_times(alerts_path)
    latencies, steady = [], []
    for n, send_time in enumerate(sent):  # message n is message k = n // streams of stream n % streams
        arrived = arrivals.get((names[n % streams], n // streams))
        if arrived is not None:
            latencies.append(arrived - send_time)
            if n // streams >= _STEADY_FROM:
                steady.append(arrived - send_time)
    lat_ms = np.asarray(latencies) * 1000.0
    steady_ms = np.asarray(steady) * 1000.0
    buckets = [tuple(b) for b in svc["latency_buckets"]]
    processed = svc["counters"]["processed"]
    return E2ELatency(
        offered_per_s=rate,
        achieved_per_s=total / max(1e-9, pub_result["last_send"] - pub_result["first_send"]),
        messages=total,
        matched=len(latencies),
        expected=total - streams,
        p50_ms=float(np.percentile(lat_ms, 50)) if lat_ms.size else float("nan"),
        p99_ms=float(np.percentile(lat_ms, 99)) if lat_ms.size else float("nan"),
        max_ms=float(lat_ms.max()) if lat_ms.size else float("nan"),
        mean_ms=float(lat_ms.mean()) if lat_ms.size else float("nan"),
        steady_p99_ms=float(np.percentile(steady_ms, 99)) if steady_ms.size else float("nan"),
        service_p50_ms=quantile_bound(buckets, 0.5),
        service_p99_ms=quantile_bound(buckets, 0.99),
        processed=processed,
        lost=total - processed,
    )
