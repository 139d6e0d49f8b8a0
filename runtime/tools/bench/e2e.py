"""Section 2: end to end through a real mosquitto on loopback.

    publisher process(es) ─QoS 1─▶ mosquitto ─QoS 1─▶ service process(es) ─alerts─▶ mosquitto

Throughput: the publishers hand every message to the broker as fast as it takes them (the
broker queues what the service has not taken yet: local_broker allows 100,000 per client,
more than any run sends); the figure is messages / (first publication → the service's
counters account for the last one). Zero loss means: the broker acknowledged every
publication, and the service's counters show every one processed — none rejected, skipped
or dropped.

Latency: runtime.tools.bench.latency.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge_config.schema import AlertPolicy, BrokerConfig, GatewayConfig, ModelConfig, RuntimeConfig, StreamConfig
from runtime.tools.bench.procs import LineProcess
from runtime.tools.bench.publisher import encode_publish, write_packets
from runtime.tools.bench.workload import Workload, stream_names
from runtime.tools.local_broker import Broker, start_broker

__all__ = [
    "E2ERate",
    "flood_packets",
    "input_topic",
    "measure_throughput",
    "publish",
    "quantile_bound",
    "report",
    "service_processes",
]

PREFIX = "edgewatch"

Qos = Literal[0, 1]
MqttVersion = Literal["5", "3.1.1"]


@dataclass(frozen=True)
class E2ERate:
    label: str
    streams: int
    messages: int
    samples_per_message: int
    services: int
    seconds: float
    """First publication → the last message accounted for by the (slowest) service."""
    msg_per_s: float
    samples_per_s: float
    publish_s: float
    """How long the publishers took to hand everything to the broker (they are not the bound)."""
    broker_acked: int
    processed: int
    lost: int
    """Published but not processed (rejected, skipped, dropped or never seen)."""
    mean_batch: float
    service_p50_ms: float
    """Arrival at the service → alerts handed to paho, histogram bucket bound."""
    service_p99_ms: float


def quantile_bound(buckets: list[tuple[float, float]], q: float) -> float:
    """The smallest histogram bucket bound holding a share q of the observations (ms)."""
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound * 1000.0
    return float("inf")


def _mean_batch(report: dict[str, Any]) -> float:
    c = report["counters"]
    return c["processed"] / c["batches"] if c["batches"] else 0.0


def input_topic(stream: str, partition: int) -> bytes:
    """The topic the bench publishes stream's samples of `partition` on (the services subscribe to it)."""
    return f"bench/p{partition}/{stream}/telemetry".encode()


def _config(
    broker: Broker,
    artifact: Path,
    partition: int,
    *,
    qos: Qos,
    alerts: AlertPolicy | None,
    threshold: float | None,
    protocol: MqttVersion = "5",
) -> GatewayConfig:
    return GatewayConfig(
        broker=BrokerConfig(
            host=broker.host,
            port=broker.port,
            client_id=f"bench-svc-{partition}",
            input_qos=qos,
            protocol=protocol,
            reconnect_min_s=0.1,
            reconnect_max_s=1.0,
        ),
        streams=[StreamConfig(name="plant", topics=[f"bench/p{partition}/+/+/telemetry"], model="ref")],
        models={"ref": ModelConfig(path=artifact, target="cpu", threshold=threshold, alerts=alerts or AlertPolicy())},
        runtime=RuntimeConfig(metrics_address=None, stats_interval_s=None, topic_prefix=PREFIX),
    )


def flood_packets(
    work: Path,
    name: str,
    streams: list[tuple[int, str]],
    rounds: int,
    samples: int,
    qos: int,
    partitions: int,
    workload: Workload | None = None,
) -> list[Path]:
    """One packet file per partition: message k of every stream of the partition, round-robin
    (payloads from `workload`, default the healthy plant with `samples` samples per message)."""
    workload = workload or Workload(samples=samples)
    files = []
    for part in range(partitions):
        mine = [(i, s) for i, s in streams if i % partitions == part]
        packets = [
            encode_publish(input_topic(s, part), workload.payload(i, k), qos, (n % 65535) + 1)
            for n, (k, (i, s)) in enumerate((k, stream) for k in range(rounds) for stream in mine)
        ]
        files.append(write_packets(work / f"{name}-p{part}.bin", packets))
    return files


@contextlib.contextmanager
def service_processes(
    broker: Broker,
    artifact: Path,
    work: Path,
    expect: list[int],
    *,
    qos: Qos = 1,
    alerts: AlertPolicy | None = None,
    threshold: float | None = None,
    protocol: MqttVersion = "5",
    poll_s: float | None = None,
) -> Iterator[list[LineProcess]]:
    """One service process per partition (expect[j] messages for partition j), all ready.
    poll_s: how often each reads its counters (the throughput's end is known to that much;
    None: service_proc's default)."""
    procs = []
    try:
        for part, n in enumerate(expect):
            cfg = work / f"service-p{part}.json"
            config = _config(broker, artifact, part, qos=qos, alerts=alerts, threshold=threshold, protocol=protocol)
            cfg.write_text(config.model_dump_json())
            poll = [] if poll_s is None else ["--poll-s", str(poll_s)]
            procs.append(LineProcess("runtime.tools.bench.service_proc", [str(cfg), str(n), *poll]))
        for proc in procs:
            proc.wait_ready(60.0)
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def publish(
    broker: Broker, files: list[Path], *, qos: int, rate: float = 0.0, times: list[Path] | None = None
) -> list[LineProcess]:
    """One publisher process per packet file, connected and told to go (rate: msg/s over all)."""
    pubs = []
    for j, path in enumerate(files):
        args = [str(broker.port), str(path), "--qos", str(qos), "--client-id", f"bench-pub-{j}"]
        if rate:
            args += ["--rate", str(rate / len(files))]
        if times:
            args += ["--times", str(times[j])]
        pubs.append(LineProcess("runtime.tools.bench.publisher", args))
    for pub in pubs:
        pub.wait_ready(30.0)
    for pub in pubs:
        pub.send("go\n")
    return pubs


def measure_throughput(
    artifact: Path,
    work: Path,
    *,
    streams: int,
    messages: int,
    samples: int = 1,
    services: int = 1,
    qos: Qos = 1,
    protocol: MqttVersion = "5",
    label: str = "",
) -> E2ERate:
    """Flood `messages` (round-robin over `streams`) through `services` partitioned service processes."""
    work.mkdir(parents=True, exist_ok=True)
    names = list(enumerate(stream_names(streams)))
    rounds = max(1, messages // streams)
    total = rounds * streams
    files = flood_packets(work, f"flood-{samples}-{services}", names, rounds, samples, qos, services)
    expect = [rounds * sum(1 for i, _ in names if i % services == part) for part in range(services)]
    broker = start_broker(work / "broker")
    try:
        with service_processes(broker, artifact, work, expect, qos=qos, protocol=protocol) as procs:
            pubs = publish(broker, files, qos=qos)
            pub_results = [pub.result(timeout=300.0) for pub in pubs]
            # the services finish within what the broker still holds; a stall means loss
            reports = [report(proc, timeout=max(30.0, total / 2000.0)) for proc in procs]
            for pub in pubs:
                pub.stop()
    finally:
        broker.stop()
    first = min(r["first_send"] for r in pub_results)
    last_send = max(r["last_send"] for r in pub_results)
    done = [r["done_at"] for r in reports]
    end = max(d for d in done if d is not None) if any(d is not None for d in done) else time.monotonic()
    processed = sum(r["counters"]["processed"] for r in reports)
    seconds = end - first
    latency = _merge([r["latency_buckets"] for r in reports])
    return E2ERate(
        label=label or f"{samples} sample(s)/message, {services} service process(es), MQTT {protocol}",
        streams=streams,
        messages=total,
        samples_per_message=samples,
        services=services,
        seconds=seconds,
        msg_per_s=processed / seconds,
        samples_per_s=processed * samples / seconds,
        publish_s=last_send - first,
        broker_acked=int(sum(r["acked"] for r in pub_results)),
        processed=processed,
        lost=total - processed,
        mean_batch=sum(_mean_batch(r) * r["counters"]["processed"] for r in reports) / max(1, processed),
        service_p50_ms=quantile_bound(latency, 0.5),
        service_p99_ms=quantile_bound(latency, 0.99),
    )


def report(proc: LineProcess, timeout: float) -> dict[str, Any]:
    """The service's report; if it has not accounted for everything in time, what it has (loss)."""
    try:
        return proc.result(timeout)
    except RuntimeError:
        if proc.process.poll() is not None:
            raise
        proc.close_stdin()  # service_proc then reports the counters as they are
        return proc.result(30.0)


def _merge(histograms: list[list[list[float]]]) -> list[tuple[float, float]]:
    merged: dict[float, float] = {}
    for buckets in histograms:
        for bound, count in buckets:
            merged[bound] = merged.get(bound, 0.0) + count
    return sorted(merged.items())
