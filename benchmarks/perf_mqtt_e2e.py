"""End-to-end throughput through mosquitto: a publisher process → broker → Service → acks.

    .venv/bin/python benchmarks/perf_mqtt_e2e.py --streams 1000 --messages 20000 [--samples 1] [--qos 1] [--rate 0]

Starts a private mosquitto, an in-process Service (random 2x64 LSTM, 8 features), and a
separate publisher process (so the two Python GILs do not share a core more than the machine
forces). Prints messages/s and stream-steps/s from the first publication to the last message
processed, and the latency histogram's mean / p50 / p99 estimate (arrival → alerts handed to paho).
`--rate 0` offers everything at once (throughput; latency then includes queueing of the burst);
`--rate N` offers N messages/s in 10 ms slices (latency at that load).
Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from runtime.service import Service
from runtime.tools.local_broker import start_broker
from tests.support.onnx_artifacts import write_lstm_artifact
from tests.support.service_helpers import gateway_config, started, wait_counters

# The publisher writes pre-encoded MQTT 3.1.1 PUBLISH packets from a file and counts PUBACKs:
# a Python paho publisher tops out near 4k QoS 1 messages/s here and would be what we measure.
PUBLISHER = textwrap.dedent("""
    import socket, sys, threading
    import time
    port, path, n, qos, rate = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    data = open(path, "rb").read()
    offsets = [int(x) for x in open(path + ".offsets").read().split()]
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(bytes([0x10, 20]) + b"\\x00\\x04MQTT\\x04\\x02\\x00\\x3c\\x00\\x08perf-pub")
    assert s.recv(4)[:2] == b"\\x20\\x02"
    print("ready", flush=True)
    sys.stdin.readline()
    def acks():
        got, buf = 0, b""
        while got < n:
            buf += s.recv(65536)
            got += len(buf) // 4
            buf = buf[len(buf) - len(buf) % 4:]
    t = threading.Thread(target=acks)
    if qos:
        t.start()
    if rate <= 0:
        s.sendall(data)
    else:  # 10 ms slices at the requested rate
        per, start = max(1, int(rate / 100)), time.monotonic()
        for k in range(0, n, per):
            s.sendall(data[offsets[k]:offsets[min(k + per, n)]])
            delay = start + (k + per) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    if qos:
        t.join(120)
    s.close()
""")


def _packet(topic: bytes, payload: bytes, qos: int, mid: int) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + payload
    n, length = len(body), b""
    while True:
        digit, n = n % 128, n // 128
        length += bytes([digit | 0x80 if n else digit])
        if not n:
            return bytes([0x30 | (qos << 1)]) + length + body


def _publications(streams: int, messages: int, samples: int, qos: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(messages):
        s, t = i % streams, i // streams
        v = rng.normal(size=(samples, 8)).round(4).tolist()
        body = {"seq": t * samples, "values": v[0] if samples == 1 else v}
        out.append(_packet(f"plant/s{s}/telemetry".encode(), json.dumps(body).encode(), qos, i % 65535 + 1))
    return out


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=1, help="samples per message")
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s offered; 0 = one burst (throughput)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgewatch-perf-"))
    broker = start_broker(work / "broker")
    artifact = write_lstm_artifact(work / "lstm", features=8, hidden=64, layers=2, threshold=1e6)
    config = gateway_config(broker, artifact, max_wait_ms=args.max_wait_ms)
    config.broker.input_qos = args.qos
    service = started(Service(config))
    packets = work / "publications.bin"
    publications = _publications(args.streams, args.messages, args.samples, args.qos)
    packets.write_bytes(b"".join(publications))
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in publications])])
    Path(f"{packets}.offsets").write_text(" ".join(str(int(o)) for o in offsets))
    pub = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PUBLISHER,
            str(broker.port),
            str(packets),
            str(args.messages),
            str(args.qos),
            str(args.rate),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert pub.stdout is not None
        assert pub.stdin is not None
        assert pub.stdout.readline().strip() == "ready"
        start = time.monotonic()
        pub.stdin.write("go\n")
        pub.stdin.flush()
        snap = wait_counters(service, lambda c: c.processed + sum(c.skipped.values()) >= args.messages, timeout=300)
        took = time.monotonic() - start
        pub.wait(60)
    finally:
        service.stop()
        broker.stop()
    samples = service.metrics.registry.get_sample_value
    count = samples("edgewatch_step_latency_seconds_count") or 1.0
    mean = (samples("edgewatch_step_latency_seconds_sum") or 0.0) / count
    buckets = [
        (float(b), samples("edgewatch_step_latency_seconds_bucket", {"le": str(b)}) or 0.0)
        for b in (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    ]
    batches = snap.batches or 1
    print(
        f"{args.messages} messages x {args.samples} samples over {args.streams} streams, QoS {args.qos}: "
        f"{took:.2f}s → {args.messages / took:,.0f} msg/s, {snap.steps / took:,.0f} stream-steps/s; "
        f"{snap.processed / batches:.1f} messages per batch; latency mean {mean * 1000:.1f} ms, "
        f"p50 ≤ {_quantile(buckets, 0.5) * 1000:g} ms, p99 ≤ {_quantile(buckets, 0.99) * 1000:g} ms; "
        f"skipped {snap.skipped}, rejected {snap.rejected}"
    )


if __name__ == "__main__":
    main()
