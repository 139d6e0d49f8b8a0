"""What the demo hears from the daemon: one MQTT subscriber on everything under the prefix.

    <prefix>/available   online / stopped (retained): the daemon is up / stopped cleanly
    <prefix>/alerts/+    alert JSON: printed live through `on_alert`, kept for the summary and plots
    <prefix>/status/+    ok / warming-up / alert (retained): the daemon has seen a machine
    <prefix>/stats       counters: how many messages the daemon has processed so far

The demo only ever learns from these topics what the daemon did, like any other consumer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from edge_config.errors import BusError
from edge_config.schema import BrokerConfig
from runtime.commands.alerts import parse_alert


@dataclass(frozen=True)
class SeenAlert:
    """One alert message as received."""

    stream: str
    state: str
    seq: int | None
    score: float
    threshold: float
    top: tuple[tuple[str, float], ...]
    received: float
    """time.monotonic() when it arrived here."""


@dataclass
class _Heard:
    available: list[str] = field(default_factory=list)
    alerts: list[SeenAlert] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    stats: dict[str, object] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)


class Watcher:
    """Subscribes before the daemon starts (so `online` and every alert are seen); thread-safe reads."""

    def __init__(self, broker: BrokerConfig, prefix: str, on_alert: Callable[[SeenAlert], None]) -> None:
        from runtime.mqtt.client import make_client

        self.prefix = prefix
        self._on_alert = on_alert
        self._heard = _Heard()
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        # A throw-away session: nothing should be queued for this viewer once it is gone.
        self._client = make_client(
            broker.model_copy(update={"session_expiry_s": 0}), "edgewatch-demo-watch", manual_ack=False
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._broker = broker

    def start(self, timeout: float = 10.0) -> None:
        try:
            self._client.connect(self._broker.host, self._broker.port)
        except OSError as exc:
            where = f"{self._broker.host}:{self._broker.port}"
            raise BusError(f"cannot connect to the demo broker {where}: {exc}") from None
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise BusError(f"no subscription to {self.prefix}/# within {timeout:.0f}s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(f"{self.prefix}/#", qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        kind, _, rest = topic[len(self.prefix) + 1 :].partition("/")
        alert = None
        with self._cond:
            if kind == "available":
                self._heard.available.append(payload.decode(errors="replace"))
            elif kind == "status" and payload:
                self._heard.status[rest] = payload.decode(errors="replace")
            elif kind == "stats":
                try:
                    self._heard.stats = json.loads(payload)
                except ValueError as exc:
                    self._heard.bad.append(f"{topic}: {exc}")
            elif kind == "alerts":
                try:
                    line = parse_alert(payload)
                    seq = json.loads(line.raw).get("seq")
                    alert = SeenAlert(
                        line.stream, line.state, seq, line.score, line.threshold, line.top, time.monotonic()
                    )
                    self._heard.alerts.append(alert)
                except (ValueError, KeyError, TypeError) as exc:
                    self._heard.bad.append(f"{topic}: {exc}")
            self._cond.notify_all()
        if alert is not None:
            self._on_alert(alert)  # outside the lock: printing must not hold up the readers

    def wait(
        self, predicate: Callable[[], bool], timeout: float, still_worth_it: Callable[[], bool] = lambda: True
    ) -> bool:
        """Wait until predicate() (called under the lock) holds; False after `timeout` or as soon
        as still_worth_it() is False (e.g. the daemon exited)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or not still_worth_it():
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    # Readers (copies, so callers never see a list change under them).

    def available(self) -> list[str]:
        with self._cond:
            return list(self._heard.available)

    def alerts(self) -> list[SeenAlert]:
        with self._cond:
            return list(self._heard.alerts)

    def status(self) -> dict[str, str]:
        with self._cond:
            return dict(self._heard.status)

    def processed(self) -> int:
        """Messages the daemon has stepped through its model, as of its last stats message."""
        with self._cond:
            value = self._heard.stats.get("processed", 0)
            return value if isinstance(value, int) else 0

    def not_understood(self) -> list[str]:
        """Alert or stats messages that did not parse (a bug if any)."""
        with self._cond:
            return list(self._heard.bad)
