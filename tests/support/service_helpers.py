"""Build and observe an in-process Service against the test broker."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_config.schema import (
    AlertPolicy,
    BaselineConfig,
    BrokerConfig,
    GatewayConfig,
    ModelConfig,
    RuntimeConfig,
    StreamConfig,
)
from runtime.engine.types import Outcome
from runtime.ops.counts import Counts
from runtime.service import Service
from runtime.tools.local_broker import Broker

_ids = itertools.count()
FIXED = BaselineConfig(learn_steps=0)
"""These tests pin the service's routing, acks and hysteresis against the model's one threshold:
per-stream baselines off (tests/unit/test_baselines.py and the fleet test cover them)."""


def gateway_config(
    broker: Broker,
    artifact: Path,
    *,
    topics: tuple[str, ...] = ("plant/+/telemetry",),
    alerts: AlertPolicy | None = None,
    **runtime: object,
) -> GatewayConfig:
    rt: dict[str, object] = {"metrics_address": None, "stats_interval_s": None, "max_wait_ms": 2.0}
    rt.update(runtime)
    return GatewayConfig(
        broker=BrokerConfig(
            host=broker.host, port=broker.port, client_id=f"svc-{next(_ids)}", reconnect_min_s=0.1, reconnect_max_s=1.0
        ),
        streams=[StreamConfig(name="machines", topics=list(topics), model="det")],
        models={"det": ModelConfig(path=artifact, target="cpu", alerts=alerts or AlertPolicy(), baseline=FIXED)},
        runtime=RuntimeConfig(**rt),
    )


def write_config(
    path: Path,
    broker: Broker,
    artifact: Path,
    *,
    client_id: str | None = None,
    alerts: dict[str, object] | None = None,
    topics: tuple[str, ...] = ("plant/+/telemetry",),
    broker_settings: dict[str, object] | None = None,
    **runtime: object,
) -> Path:
    """A gateway config file for `edgewatch serve` / Service(config_path=...): one model "det" on
    `artifact`, metrics off unless runtime says otherwise. JSON is valid YAML."""
    rt: dict[str, object] = {"metrics_address": None, "stats_interval_s": None, "max_wait_ms": 2.0}
    rt.update({k: str(v) if isinstance(v, Path) else v for k, v in runtime.items()})
    doc = {
        "broker": {
            "host": broker.host,
            "port": broker.port,
            "client_id": client_id or f"svc-{next(_ids)}",
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 1.0,
            **(broker_settings or {}),
        },
        "streams": [{"name": "machines", "topics": list(topics), "model": "det"}],
        "models": {
            "det": {"path": str(artifact), "target": "cpu", "alerts": alerts or {}, "baseline": {"learn_steps": 0}}
        },
        "runtime": rt,
    }
    path.write_text(json.dumps(doc, indent=1))
    return path


@dataclass
class Outcomes:
    """Collects every outcome by stream (the service's test hook)."""

    by_stream: dict[str, list[Outcome]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, _model: str, outcome: Outcome) -> None:
        with self.cond:
            self.by_stream.setdefault(outcome.message.stream, []).append(outcome)
            self.cond.notify_all()

    def outputs(self, stream: str) -> np.ndarray:
        with self.cond:
            return np.concatenate([o.outputs for o in self.by_stream[stream] if o.outputs is not None])

    def scores(self, stream: str) -> np.ndarray:
        with self.cond:
            return np.concatenate([o.scores for o in self.by_stream[stream] if o.scores is not None])


def wait_counters(service: Service, predicate: Callable[[Counts], bool], timeout: float = 30.0) -> Counts:
    deadline = time.monotonic() + timeout
    while True:
        snap = service.tally.snapshot()
        if predicate(snap):
            return snap
        if time.monotonic() >= deadline:
            raise TimeoutError(f"counters did not get there in {timeout}s: {snap}")
        time.sleep(0.02)


def started(service: Service, timeout: float = 10.0) -> Service:
    service.start()
    if not service.bus.wait_connected(timeout):
        service.stop()
        raise TimeoutError("the service did not connect")
    time.sleep(0.3)  # SUBACK: publications before it would not be routed to us
    return service
