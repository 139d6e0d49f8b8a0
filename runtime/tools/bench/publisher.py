"""The load generator: a separate process that writes pre-encoded MQTT PUBLISH packets to a socket.

    python -m runtime.tools.bench.publisher PORT PACKETS [--rate R] [--times FILE] [--qos 1]

A Python paho publisher tops out at a few thousand QoS 1 messages/s here, so it would be what
an end-to-end figure measures. This one speaks just enough MQTT 3.1.1 (CONNECT, PUBLISH,
PUBACK) to be no bound: the packets are encoded once by the parent, and it counts every PUBACK
so the parent knows the broker accepted each message.

PACKETS is a file of concatenated PUBLISH packets plus PACKETS.idx (uint64 end offsets).
Protocol on stdout/stdin: it prints "ready" once connected, waits for one line on stdin, sends,
and prints one JSON line: sent, acked, first/last send times (time.monotonic, which is
system-wide on Linux, so the parent can compare it with its own clock).
--rate R paces messages at R per second (otherwise: as fast as the socket takes them);
--times FILE writes each message's send time (float64, time.time()) for latency matching.

Only the standard library: it starts fast and measures nothing but sending.
"""

from __future__ import annotations

import argparse
import array
import json
import socket
import sys
import threading
import time
from pathlib import Path

__all__ = ["encode_publish", "write_packets"]

_CONNECT_FLAGS_CLEAN = 0x02
_KEEPALIVE_S = 60
_PUBACK = 0x40


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def encode_publish(topic: bytes, payload: bytes, qos: int, mid: int) -> bytes:
    """One MQTT 3.1.1 PUBLISH packet (mid is ignored at QoS 0)."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _remaining_length(len(body)) + body


def write_packets(path: Path, packets: list[bytes]) -> Path:
    """PACKETS + PACKETS.idx for the publisher process."""
    ends = array.array("Q")
    total = 0
    with open(path, "wb") as f:
        for packet in packets:
            f.write(packet)
            total += len(packet)
            ends.append(total)
    Path(f"{path}.idx").write_bytes(ends.tobytes())
    return path


def _connect(port: int, client_id: bytes) -> socket.socket:
    variable = b"\x00\x04MQTT\x04" + bytes([_CONNECT_FLAGS_CLEAN]) + _KEEPALIVE_S.to_bytes(2, "big")
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
    connack = sock.recv(4)
    if connack[:2] != b"\x20\x02" or connack[3] != 0:
        raise SystemExit(f"publisher: CONNACK refused: {connack!r}")
    return sock


def _count_acks(sock: socket.socket, expected: int, result: dict[str, float]) -> None:
    """Count PUBACK packets (4 bytes each: the broker sends nothing else to a publisher)."""
    got, pending = 0, b""
    while got < expected:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        pending += chunk
        whole = len(pending) // 4
        got += sum(1 for i in range(whole) if pending[4 * i] == _PUBACK)
        pending = pending[4 * whole :]
    result["acked"] = got
    result["last_ack"] = time.monotonic()


def _paced(sock: socket.socket, data: bytes, ends: array.array[int], rate: float) -> array.array[float]:
    """Send packet i at start + i / rate; return each packet's send time (time.time())."""
    sent = array.array("d")
    start, begin = time.perf_counter(), 0
    for i, end in enumerate(ends):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0.0002:
            time.sleep(delay - 0.0001)  # sleep most of the way, spin the rest: sub-ms pacing
        while time.perf_counter() < due:
            pass
        sent.append(time.time())
        sock.sendall(data[begin:end])
        begin = end
    return sent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.tools.bench.publisher")
    p.add_argument("port", type=int)
    p.add_argument("packets", type=Path)
    p.add_argument("--qos", type=int, default=1, choices=(0, 1))
    p.add_argument("--rate", type=float, default=0.0, help="messages/s (0: as fast as possible)")
    p.add_argument("--times", type=Path, help="write send times (float64 time.time()) here")
    p.add_argument("--client-id", default="edgewatch-bench-pub")
    args = p.parse_args(argv)
    data = args.packets.read_bytes()
    ends = array.array("Q")
    ends.frombytes(Path(f"{args.packets}.idx").read_bytes())
    sock = _connect(args.port, args.client_id.encode())
    result: dict[str, float] = {"sent": len(ends), "acked": 0}
    acks = threading.Thread(target=_count_acks, args=(sock, len(ends), result), daemon=True)
    print("ready", flush=True)
    sys.stdin.readline()
    if args.qos:
        acks.start()
    result["first_send"] = time.monotonic()
    if args.rate > 0:
        times = _paced(sock, data, ends, args.rate)
        if args.times:
            args.times.write_bytes(times.tobytes())
    else:
        sock.sendall(data)
    result["last_send"] = time.monotonic()
    if args.qos:
        acks.join(120.0)
    else:
        result["acked"] = len(ends)
    sock.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
