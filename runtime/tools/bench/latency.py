"""Section 2, latency: publish → alert through mosquitto at a fixed offered load.

Publications are paced at a fixed rate over 1,000 streams. A C subscriber (mosquitto_sub -F
'%U %p') timestamps each alert as it arrives; the alert's (stream, seq) names the publication
whose send time the publisher recorded. So a latency is publish → broker → service → alert →
broker → subscriber, on one clock. Two runs:

- **fault bursts** (the goal's figure): a healthy plant in which every stream fails once, for
  FAULT_BURST consecutive messages with every sensor FAULT_SIGMAS standard deviations off, at a
  round of its own spread over the run; the model's calibrated threshold, the default hysteresis
  (raise after 3 steps above it of 5) with a warm-up of 2, default baselines (every stream is
  still learning: only extreme scores alert, as these do). The third faulty message raises the
  alert; its latency counts from that message's publication (the hysteresis's own delay, two
  messages of the stream, is the policy's, not the path's). Healthy traffic goes on around it:
  what a plant sees, where alerts are few and messages many.
- **alert flood**: every scored step publishes an alert (threshold below any score, raise after
  1 of 1, an `update` on every step while raised): the service answers every message with an
  alert, so this measures its alert volume limit (section alert_cost gives the CPU side).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_config.schema import AlertPolicy
from runtime.tools.bench.e2e import (
    PREFIX,
    flood_packets,
    input_topic,
    publish,
    quantile_bound,
    report,
    service_processes,
)
from runtime.tools.bench.engines import BENCH_ALERTS
from runtime.tools.bench.workload import LEVEL, SPREAD, Workload, stream_names
from runtime.tools.local_broker import Broker, start_broker

__all__ = [
    "EVERY_STEP_ALERTS",
    "FAULT_BURST",
    "FAULT_SIGMAS",
    "BrokerHop",
    "E2ELatency",
    "FaultyPlant",
    "measure_broker_hop",
    "measure_latency",
]

EVERY_STEP_ALERTS = AlertPolicy(raise_k=1, raise_n=1, clear_m=1, warmup_steps=0, update_interval_s=1e-9, top_features=3)
"""Every scored step above the threshold publishes an alert: with threshold -1, every step."""
FAULT_SIGMAS = 10.0
FAULT_BURST = 5
_FIRST_FAULT_ROUND = BENCH_ALERTS.warmup_steps + 2
_STEADY_FROM = 2


@dataclass
class FaultyPlant(Workload):
    """The healthy plant, but stream i's messages burst_start(i) .. + FAULT_BURST - 1 read every
    sensor at LEVEL + FAULT_SIGMAS * SPREAD; bursts start at rounds spread over `rounds`."""

    rounds: int = 0
    _fault_row: str = field(init=False, repr=False, default="")

    def __post_init__(self) -> None:
        super().__post_init__()
        least = _FIRST_FAULT_ROUND + FAULT_BURST + 1
        if self.samples != 1 or self.rounds < least:
            raise ValueError(f"a faulty plant needs 1 sample per message and at least {least} rounds")
        value = LEVEL + FAULT_SIGMAS * SPREAD
        self._fault_row = "[" + ",".join(f"{value:.3f}" for _ in range(self.rows.shape[1])) + "]"

    def burst_start(self, stream: int) -> int:
        span = self.rounds - _FIRST_FAULT_ROUND - FAULT_BURST
        return _FIRST_FAULT_ROUND + (stream * 7919) % span  # a prime stride: starts spread evenly

    def faulty(self, stream: int, k: int) -> bool:
        start = self.burst_start(stream)
        return start <= k < start + FAULT_BURST

    def sample_text(self, stream: int, k: int) -> str:
        return self._fault_row if self.faulty(stream, k) else super().sample_text(stream, k)


@dataclass(frozen=True)
class E2ELatency:
    run: str
    """"faults" or "flood" (module doc)."""
    offered_per_s: float
    achieved_per_s: float
    messages: int
    matched: int
    """Alerts matched to their publication: raised within a stream's burst (faults), or any
    alert of every message but each stream's first (flood)."""
    expected: int
    unexpected: int
    """faults: alerts raised outside a stream's burst (false alerts on the healthy plant)."""
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    steady_p99_ms: float
    """p99 without each stream's first _STEADY_FROM messages (new streams take slots, the slab grows)."""
    service_p50_ms: float
    service_p99_ms: float
    """Arrival at the service → alerts handed to paho, every message, histogram bucket bound."""
    mean_batch: float
    """Messages per engine call."""
    dropped_outgoing: int
    """Publications the service's outbox refused (counted; an `update` or a status gives way when
    the outbox is past its share for them)."""
    alerts_sent: int
    """Alerts the service handed to its MQTT client (its `alerts` counts): every one of them must
    arrive (matched == alerts_sent). In the flood, expected - alerts_sent are steps without an
    alert by design: refused by the outbox (dropped_outgoing), or a stream's second message in one
    engine call, whose step shares the call's clock with the first, inside update_interval_s."""
    processed: int
    lost: int


def _subscriber(
    broker: Broker, out: Path, topic: str = f"{PREFIX}/alerts/#", fmt: str = "%U %p"
) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        raise RuntimeError("mosquitto_sub is not installed (apt-get install mosquitto-clients)")
    with open(out, "wb") as handle:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [binary, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-F", fmt],
            stdout=handle,
            stderr=subprocess.DEVNULL,
        )
    time.sleep(0.3)  # its SUBACK
    return proc


@contextlib.contextmanager
def _watched_broker(work: Path, out: Path, topic: str = f"{PREFIX}/alerts/#", fmt: str = "%U %p") -> Iterator[Broker]:
    """A private broker with a C subscriber to `topic` writing `fmt` lines to `out`; both stopped after."""
    broker = start_broker(work / "broker")
    try:
        sub = _subscriber(broker, out, topic, fmt)
        try:
            yield broker
        finally:
            sub.terminate()
            sub.wait(10)
    finally:
        broker.stop()


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


def _alert_times(path: Path, state: str | None) -> dict[tuple[str, int], float]:
    """(stream, seq) → arrival time (s since the epoch) of its first alert (of `state`, if given)."""
    out: dict[tuple[str, int], float] = {}
    for line in path.read_bytes().splitlines():
        stamp, _, payload = line.partition(b" ")
        try:
            alert = json.loads(payload)
            if state is None or alert["state"] == state:
                out.setdefault((alert["stream"], int(alert["seq"])), float(stamp))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _quantiles(values: list[float]) -> tuple[float, float, float, float]:
    """p50, p99, max, mean in ms of latencies in s (NaN when there are none)."""
    if not values:
        return (float("nan"),) * 4
    ms = np.asarray(values) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.max()), float(ms.mean())


def measure_latency(
    artifact: Path, work: Path, *, streams: int, rate: float, seconds: float, run: str = "faults"
) -> E2ELatency:
    """Paced publications at `rate`/s for `seconds` (at least the rounds a fault burst needs)."""
    if run not in ("faults", "flood"):
        raise ValueError(f"unknown latency run {run!r}")
    work.mkdir(parents=True, exist_ok=True)
    names = stream_names(streams)
    faults = run == "faults"
    rounds = max(_FIRST_FAULT_ROUND + FAULT_BURST + 4 if faults else 2, round(rate * seconds / streams))
    total = rounds * streams
    plant = FaultyPlant(rounds=rounds) if faults else Workload()
    files = flood_packets(work, run, list(enumerate(names)), rounds, 1, 1, 1, workload=plant)
    times_path = work / "send-times.f64"
    alerts_path = work / "alerts.txt"
    policy, threshold = (BENCH_ALERTS, None) if faults else (EVERY_STEP_ALERTS, -1.0)
    with (
        _watched_broker(work, alerts_path) as broker,
        service_processes(
            broker, artifact, work, [total], alerts=policy, threshold=threshold, poll_s=0.05
        ) as procs,  # the end of the run needs no precision here: fewer counter reads, less GIL taken
    ):
        pub = publish(broker, files, qos=1, rate=rate, times=[times_path])[0]
        pub_result = pub.result(timeout=seconds * 3 + 60)
        # every alert out before the service stops (its stop flushes for 5 s at most)
        _wait_lines(alerts_path, streams if faults else total - streams, stall=10.0 if not faults else 3.0)
        svc = report(procs[0], timeout=30.0)
        pub.stop()
    sent = np.frombuffer(times_path.read_bytes(), dtype=np.float64)
    arrivals = _alert_times(alerts_path, "raised" if faults else None)
    index = {name: i for i, name in enumerate(names)}
    latencies: list[float] = []
    steady: list[float] = []
    unexpected = 0
    if faults:
        assert isinstance(plant, FaultyPlant)
        for (stream, seq), arrived in arrivals.items():
            i = index.get(stream)
            if i is None or not plant.faulty(i, seq):
                unexpected += 1
                continue
            latencies.append(arrived - float(sent[seq * streams + i]))  # message n = round * streams + stream
        steady = latencies
    else:
        for n, send_time in enumerate(sent):  # message n is message k = n // streams of stream n % streams
            at = arrivals.get((names[n % streams], n // streams))
            if at is not None:
                latencies.append(at - float(send_time))
                if n // streams >= _STEADY_FROM:
                    steady.append(at - float(send_time))
    p50, p99, worst, mean = _quantiles(latencies)
    buckets = [tuple(b) for b in svc["latency_buckets"]]
    processed = svc["counters"]["processed"]
    return E2ELatency(
        run=run,
        offered_per_s=rate,
        achieved_per_s=total / max(1e-9, pub_result["last_send"] - pub_result["first_send"]),
        messages=total,
        matched=len(latencies),
        expected=streams if faults else total - streams,
        unexpected=unexpected,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=worst,
        mean_ms=mean,
        steady_p99_ms=_quantiles(steady)[1],
        service_p50_ms=quantile_bound(buckets, 0.5),
        service_p99_ms=quantile_bound(buckets, 0.99),
        mean_batch=processed / max(1, svc["counters"]["batches"]),
        dropped_outgoing=int(svc["bus"]["dropped_outgoing"]),
        alerts_sent=sum(svc["counters"]["alerts"].values()),
        processed=processed,
        lost=total - processed,
    )


@dataclass(frozen=True)
class BrokerHop:
    """publisher → mosquitto → a C subscriber, no service: one hop of the alert path's two, at
    the same paced rate. An alert travels publisher → broker → service, then service → broker →
    subscriber, so twice this is the path's floor on this machine, before the service's own time."""

    offered_per_s: float
    messages: int
    matched: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def measure_broker_hop(work: Path, *, streams: int, rate: float, seconds: float) -> BrokerHop:
    """Paced publications of the healthy plant at `rate`/s, timed at a subscriber to the input topics."""
    work.mkdir(parents=True, exist_ok=True)
    names = stream_names(streams)
    rounds = max(2, round(rate * seconds / streams))
    total = rounds * streams
    files = flood_packets(work, "hop", list(enumerate(names)), rounds, 1, 1, 1)
    times_path, seen_path = work / "send-times.f64", work / "seen.txt"
    with _watched_broker(work, seen_path, topic="bench/p0/#", fmt="%U %t %p") as broker:
        pub = publish(broker, files, qos=1, rate=rate, times=[times_path])[0]
        pub.result(timeout=seconds * 3 + 60)
        _wait_lines(seen_path, total, stall=3.0)
        pub.stop()
    sent = np.frombuffer(times_path.read_bytes(), dtype=np.float64)
    index = {input_topic(name, 0): i for i, name in enumerate(names)}
    latencies = []
    for line in seen_path.read_bytes().splitlines():
        stamp, topic, payload = line.split(b" ", 2)
        try:
            seq = int(json.loads(payload)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
        i = index.get(topic)
        if i is not None and 0 <= seq < rounds:
            latencies.append(float(stamp) - float(sent[seq * streams + i]))
    p50, p99, worst, _mean = _quantiles(latencies)
    return BrokerHop(rate, total, len(latencies), p50, p99, worst)
