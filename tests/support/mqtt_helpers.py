"""Small MQTT helpers for tests: a collecting subscriber and a raw-socket publisher.

Everything talks to 127.0.0.1 only and every wait is bounded.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from runtime.tools.local_broker import Broker


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Collector:
    """Subscribes to `topic_filter` and keeps everything it receives, in order."""

    def __init__(self, broker: Broker, topic_filter: str, *, qos: int = 1, client_id: str = "") -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=qos)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(5):
            raise TimeoutError(f"could not subscribe to {topic_filter}")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met in {timeout}s; got {self.messages[-5:]}")
                self._cond.wait(left)
            return list(self.messages)

    def payloads(self, topic: str) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def retained(broker: Broker, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained payload of `topic` (None if there is none), read by a fresh subscriber."""
    collector = Collector(broker, topic)
    try:
        return collector.wait_for(lambda m: bool(m), timeout=timeout)[0].payload
    except TimeoutError:
        return None
    finally:
        collector.close()


def wait_retained(broker: Broker, topic: str, expected: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = retained(broker, topic, timeout=1.0)
        if last == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{topic}: retained {last!r}, expected {expected!r}")


def _packet(kind: int, body: bytes) -> bytes:
    n, length = len(body), b""
    while True:
        digit, n = n % 128, n // 128
        length += bytes([digit | 0x80 if n else digit])
        if not n:
            return bytes([kind]) + length + body


def raw_publish(broker: Broker, topic: bytes, payload: bytes) -> bytes:
    """Publish QoS 0 with arbitrary topic bytes (paho refuses invalid UTF-8). Returns what the broker sent back."""
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        cid = b"raw-publisher"
        sock.sendall(_packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid))
        sock.recv(4)  # CONNACK
        sock.sendall(_packet(0x30, struct.pack(">H", len(topic)) + topic + payload))
        sock.settimeout(1.0)
        try:
            return sock.recv(16)  # b"" when the broker closed the connection
        except TimeoutError:
            return b"(open)"


def publish_many(broker: Broker, items: list[tuple[str, bytes]], *, qos: int = 1, timeout: float = 30.0) -> None:
    """Publish every (topic, payload) and wait until the broker confirmed them all."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=qos) for t, p in items]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError("publications not confirmed in time")
    finally:
        client.disconnect()
        client.loop_stop()
