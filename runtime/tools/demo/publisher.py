"""The machines' side: every simulated pump publishes its samples on its own topic, in
accelerated simulated time (1 sample = 1 simulated second, `speed` of them per wall second).

Each message is one sample, named the way a sensor gateway would send it:

    demo/pump-3/telemetry   {"seq": 263, "ts": 1763800263.0, "values": {"Pressure": 0.43, ...}}

`seq` lets the daemon drop a repeated sample, so a message may be sent twice safely (the
handshake relies on that); `ts` is simulated time, so the alerts carry the machine's clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import paho.mqtt.client as mqtt

from edge_config.errors import BusError
from edge_config.schema import BrokerConfig
from runtime.tools.demo.simulator import SENSORS, Recording

_CONFIRM_TIMEOUT_S = 30.0


def sample_payload(recording: Recording, step: int) -> bytes:
    """The JSON message of one machine's sample `step`."""
    # str(float32) is the shortest text that reads back as the same float32: the daemon sees
    # exactly the simulated value, in a short payload.
    values = {name: float(str(v)) for name, v in zip(SENSORS, recording.values[step], strict=False)}
    return json.dumps({"seq": step, "ts": float(recording.ts[step]), "values": values}, separators=(",", ":")).encode()


class FleetPublisher:
    """One MQTT connection publishing for every machine (QoS 1)."""

    def __init__(self, broker: BrokerConfig, recordings: Mapping[str, Recording], topics: Mapping[str, str]) -> None:
        from runtime.mqtt.client import make_client

        self.recordings = dict(recordings)
        self.topics = dict(topics)
        self.steps = min(len(r.values) for r in recordings.values())
        self.sent = dict.fromkeys(self.recordings, 0)
        """Distinct samples published per machine (a resent one counts once)."""
        self.sent_at = np.full(self.steps, np.nan)
        """time.monotonic() at which step i was published (the first time), for latencies."""
        self._pending: list[mqtt.MQTTMessageInfo] = []
        self._broker = broker
        self._client = make_client(
            broker.model_copy(update={"session_expiry_s": 0}),
            "edgewatch-demo-fleet",
            manual_ack=False,
            max_inflight=100,
        )

    def connect(self) -> None:
        try:
            self._client.connect(self._broker.host, self._broker.port)
        except OSError as exc:
            where = f"{self._broker.host}:{self._broker.port}"
            raise BusError(f"cannot connect to the demo broker {where}: {exc}") from None
        self._client.loop_start()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish_step(self, step: int, machines: Iterable[str] | None = None) -> None:
        """Publish sample `step` of each machine (all of them by default)."""
        if np.isnan(self.sent_at[step]):
            self.sent_at[step] = time.monotonic()
        for name in self.recordings if machines is None else machines:
            info = self._client.publish(self.topics[name], sample_payload(self.recordings[name], step), qos=1)
            self._pending.append(info)
            self.sent[name] = max(self.sent[name], step + 1)

    def stream(self, first: int, speed: float, before_step: Callable[[int], None] = lambda _: None) -> None:
        """Publish steps [first, steps) at `speed` steps per wall second; before_step(i) runs first."""
        started = time.monotonic()
        for step in range(first, self.steps):
            due = started + (step - first) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            before_step(step)
            self.publish_step(step)
            self._forget_confirmed()

    def confirm(self, timeout: float = _CONFIRM_TIMEOUT_S) -> None:
        """Wait until the broker acknowledged every publication (BusError if not in time)."""
        deadline = time.monotonic() + timeout
        for info in self._pending:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            if not info.is_published():
                raise BusError(f"the demo broker did not confirm the fleet's publications within {timeout:.0f}s")
        self._pending.clear()

    def _forget_confirmed(self) -> None:
        # Keep the list short on long runs: drop the confirmed head.
        done = 0
        while done < len(self._pending) and self._pending[done].is_published():
            done += 1
        del self._pending[:done]
