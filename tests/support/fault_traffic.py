"""Traffic for the fault-injection suite: deterministic sensor payloads, a publisher that stays
reliable across broker restarts, and an alert subscriber with a persistent session.

    python -m tests.support.fault_traffic --port P --streams 50 --seqs 400 --faulty 10 --rate 1000 --client-id pub

runs the publisher as its own process (so it does not share a GIL with an in-process daemon)
and prints one JSON line: published, republished, seconds. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

FEATURES = 3
FAULT_WINDOWS = ((100, 120), (300, 320))
"""seq ranges where a faulty stream's first value jumps by ±4 each step (raises, then clears)."""
TS0 = 1_700_000_000.0


def values(stream: int, seq: int, faulty: bool) -> list[float]:
    """A smooth signal (next-step differences ~0.05); a faulty stream oscillates in FAULT_WINDOWS."""
    v = [math.sin(0.05 * seq + stream), 0.5 * math.cos(0.03 * seq + 0.1 * stream), 0.01 * stream]
    if faulty and any(a <= seq < b for a, b in FAULT_WINDOWS):
        v[0] += 4.0 * (-1) ** seq
    return [round(x, 5) for x in v]


def payload(stream: int, seq: int, faulty: bool) -> bytes:
    return json.dumps({"seq": seq, "ts": TS0 + seq, "values": values(stream, seq, faulty)}).encode()


def topic(stream: int) -> str:
    return f"plant/m{stream:03d}/telemetry"


def stream_items(streams: int, seqs: Sequence[int], faulty: int) -> list[tuple[str, bytes]]:
    """Seq-major (every stream's seq q, then q+1): streams 0..faulty-1 carry the fault."""
    return [(topic(s), payload(s, q, s < faulty)) for q in seqs for s in range(streams)]


class ReliablePublisher:
    """QoS 1, persistent session (clean_session off), automatic reconnects; paho resends what the
    broker did not acknowledge, and `confirm_all` publishes again whatever stays unconfirmed.

    Order matters (a sample that arrives after a later one of its stream is dropped as
    out-of-order): after a reconnect paho calls on_connect *before* it resends the
    unacknowledged publications, so a publication made right then overtakes them (seen here:
    119 of 20,000 samples dropped). After a disconnect this publisher therefore sends nothing new
    until every earlier publication is confirmed."""

    _MAX = 60_000  # paho's message ids wrap at 65,535: confirmations are tracked by id

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=False
        )
        self._client.max_inflight_messages_set(100)
        self._client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self._acked: set[int] = set()
        self._lock = threading.Lock()
        self._recovering = threading.Event()
        self._client.on_publish = self._on_publish
        self._client.on_disconnect = lambda *a: self._recovering.set()
        self._client.connect(host, port)
        self._client.loop_start()
        self._sent: list[tuple[str, bytes, bool, int]] = []  # (topic, payload, retain, mid)
        self.republished = 0
        self.published = 0

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, _rc: object, _p: object) -> None:
        with self._lock:
            self._acked.add(mid)

    def _confirmed(self, mid: int) -> bool:
        # Not MQTTMessageInfo.is_published(): it raises for a message published while the broker
        # was away, which paho still holds and sends after reconnecting (the point of this test).
        with self._lock:
            return mid in self._acked

    def publish(self, topic_: str, data: bytes, retain: bool = False) -> None:
        if self.published + self.republished >= self._MAX:
            raise RuntimeError("too many publications for one publisher (message ids would wrap)")
        self._sent.append((topic_, data, retain, self._client.publish(topic_, data, qos=1, retain=retain).mid))
        self.published += 1

    def publish_paced(
        self,
        items: Sequence[tuple[str, bytes] | tuple[str, bytes, bool]],
        rate: float,
        on_progress: Callable[[int], None] | None = None,
    ) -> float:
        """Publish at `rate` messages/s (a fixed schedule, not as fast as possible); returns seconds."""
        started = time.monotonic()
        chunk = max(1, round(rate * 0.02))
        for i in range(0, len(items), chunk):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if self._recovering.is_set():
                self._wait_resent()
            for item in items[i : i + chunk]:
                self.publish(*item)
            if on_progress is not None:
                on_progress(i + chunk)
        return time.monotonic() - started

    def _wait_resent(self, timeout: float = 60.0) -> None:
        """Block until reconnected and every earlier publication is confirmed (paho resends them)."""
        deadline = time.monotonic() + timeout
        while not (self._client.is_connected() and self.unconfirmed() == 0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.unconfirmed()} publications not resent in {timeout} s")
            time.sleep(0.02)
        self._recovering.clear()

    def unconfirmed(self) -> int:
        return sum(1 for *_, mid in self._sent if not self._confirmed(mid))

    def confirm_all(self, timeout: float, resend_after: float = 5.0) -> None:
        """Wait until the broker confirmed every publication; publish again any that stays
        unconfirmed for `resend_after` s while connected. TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        last_progress, left = time.monotonic(), self.unconfirmed()
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} publications not confirmed in {timeout} s")
            time.sleep(0.1)
            now_left = self.unconfirmed()
            if now_left < left:
                last_progress = time.monotonic()
            left = now_left
            if left and time.monotonic() - last_progress > resend_after and self._client.is_connected():
                pending = [(t, p, r) for t, p, r, mid in self._sent if not self._confirmed(mid)]
                self._sent = [entry for entry in self._sent if self._confirmed(entry[3])]
                for t, p, r in pending:
                    self._sent.append((t, p, r, self._client.publish(t, p, qos=1, retain=r).mid))
                self.republished += len(pending)
                last_progress = time.monotonic()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class AlertLog:
    """Every alert message received (QoS 1, persistent session: nothing is lost while the broker
    restarts). Duplicates are kept: `received` is the raw log."""

    def __init__(self, host: str, port: int, client_id: str, topic_filter: str = "edgewatch/alerts/#") -> None:
        self.received: list[dict[str, object]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self._client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self._client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._client.connect(host, port, clean_start=False, properties=props)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("the alert log could not subscribe")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append(json.loads(msg.payload))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[dict[str, object]]], bool], timeout: float) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"alerts not complete in {timeout} s ({len(self.received)} received)")
                self._cond.wait(left)
            return list(self.received)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--seqs", type=int, default=400)
    parser.add_argument("--faulty", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--client-id", default="fault-publisher")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    publisher = ReliablePublisher("127.0.0.1", args.port, args.client_id)
    try:
        seconds = publisher.publish_paced(stream_items(args.streams, range(args.seqs), args.faulty), args.rate)
        publisher.confirm_all(args.timeout)
    finally:
        publisher.close()
    print(
        json.dumps(
            {"published": publisher.published, "republished": publisher.republished, "seconds": round(seconds, 2)}
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
