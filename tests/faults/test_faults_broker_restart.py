"""Fault (a): mosquitto (persistence on) is stopped with SIGTERM and started again 5 times during
a 20,000-message QoS 1 stream over 50 streams.

The publisher (its own process) publishes at a fixed rate and stays reliable across the
restarts (persistent session, paho's resend, republish until acked); the daemon runs in this
process with an outcome hook; a persistent-session subscriber logs every alert. Expected:
every message processed at least once (exactly once after the engine's seq dedup), per-stream
outputs and scores equal to a fault-free run of the same samples, every alert of that run
received, and no alert id reused after dedup.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_config.schema import AlertPolicy
from runtime.engine.types import Outcome
from runtime.service import Service
from runtime.tools.local_broker import start_broker
from tests.support.fault_helpers import REPO, dedup, reference_run, report
from tests.support.fault_traffic import AlertLog
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import gateway_config, started

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

STREAMS, SEQS, FAULTY = 50, 400, 10  # 20,000 messages
RATE = 1000.0  # messages/s: ~20 s of traffic
RESTARTS = 5
POLICY = AlertPolicy(raise_k=2, raise_n=3, clear_m=3, warmup_steps=3, update_interval_s=None)  # raised/cleared only


def _ranges(missing: list[tuple[int, int]]) -> dict[str, str]:
    """{seq range: how many streams miss it}, for the report of a failure."""
    by_seq: dict[int, int] = {}
    for _, q in missing:
        by_seq[q] = by_seq.get(q, 0) + 1
    out: dict[str, str] = {}
    for q in sorted(by_seq):
        out[str(q)] = str(by_seq[q])
    return out


class Seen:
    """The daemon's outcomes by (stream, seq) — processed and skipped — from the worker's hook."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processed: dict[str, list[Outcome]] = {}
        self.count: dict[str, int] = {}

    def __call__(self, _model: str, outcome: Outcome) -> None:
        with self.lock:
            self.count[outcome.status] = self.count.get(outcome.status, 0) + 1
            if outcome.status == "processed":
                self.processed.setdefault(outcome.message.stream, []).append(outcome)

    def processed_total(self) -> int:
        with self.lock:
            return self.count.get("processed", 0)


def test_five_broker_restarts_lose_nothing_and_change_nothing(tmp_path: Path) -> None:
    started_at = time.monotonic()
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    broker = start_broker(tmp_path / "broker", persistence=True)
    seen = Seen()
    service = None
    alerts = publisher = None
    try:
        alerts = AlertLog(broker.host, broker.port, "fault-a-alerts")
        service = started(Service(gateway_config(broker, art, alerts=POLICY), outcome_hook=seen))
        publisher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.fault_traffic",
                "--port",
                str(broker.port),
                "--streams",
                str(STREAMS),
                "--seqs",
                str(SEQS),
                "--faulty",
                str(FAULTY),
                "--rate",
                str(RATE),
                "--client-id",
                "fault-a-pub",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        total = STREAMS * SEQS
        restarts, down_s = 0, 0.0
        for k in range(RESTARTS):  # spread over the traffic: 15%, 30%, ... 75% of the messages
            target = total * 0.15 * (k + 1)
            deadline = time.monotonic() + 60
            while seen.processed_total() < target and time.monotonic() < deadline:
                time.sleep(0.05)
            t0 = time.monotonic()
            broker.stop()  # SIGTERM: mosquitto saves its persistence file
            time.sleep(0.3)
            broker.start()
            down_s += time.monotonic() - t0
            restarts += 1
        out, err = publisher.communicate(timeout=120)
        assert publisher.returncode == 0, err
        pub = json.loads(out.strip().splitlines()[-1])
        deadline = time.monotonic() + 60
        while seen.processed_total() < total and time.monotonic() < deadline:
            time.sleep(0.1)
        reference = reference_run(art, POLICY, STREAMS, range(SEQS), FAULTY)
        received = alerts.wait_for(
            lambda got: {(str(d["id"]), str(d["state"])) for d in got} >= reference.alerts, timeout=30
        )
        time.sleep(1.0)  # late duplicates, if any, are counted too
        received = list(alerts.received)
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        if service is not None:
            service.stop()
        if alerts is not None:
            alerts.close()
        broker.stop()

    missing = [
        (s, q)
        for s in range(STREAMS)
        for q in range(SEQS)
        if q not in {o.message.seq for o in seen.processed.get(f"m{s:03d}", [])}
    ]
    processed_twice = sum(len(v) for v in seen.processed.values()) - sum(
        len({o.message.seq for o in v}) for v in seen.processed.values()
    )
    deduped = dedup(received)
    lost_alerts = reference.alerts - set(deduped.unique)
    extra_alerts = set(deduped.unique) - reference.alerts
    counters = service.tally.snapshot() if service is not None else None
    bus = service.bus.snapshot() if service is not None else None
    report(
        tmp_path,
        "a_broker_restarts",
        messages=total,
        streams=STREAMS,
        broker_restarts=restarts,
        broker_down_s=round(down_s, 2),
        published=pub["published"],
        republished_by_publisher=pub["republished"],
        processed=seen.count.get("processed", 0),
        duplicate_deliveries_skipped=seen.count.get("duplicate", 0),
        out_of_order=seen.count.get("out-of-order", 0),
        lost_messages=len(missing),
        missing_seq_ranges=_ranges(missing),
        received_by_daemon=counters.received if counters else None,
        processed_twice=processed_twice,
        alerts_expected=len(reference.alerts),
        alert_messages_received=len(received),
        alert_duplicates=deduped.duplicates,
        lost_alerts=len(lost_alerts),
        extra_alerts=len(extra_alerts),
        id_conflicts=len(deduped.conflicts),
        daemon_reconnects=bus.connects - 1 if bus else None,
        stale_acks=bus.stale_acks if bus else None,
        outgoing_dropped=bus.dropped_outgoing if bus else None,
        seconds=round(time.monotonic() - started_at, 1),
    )
    for s in range(STREAMS):
        outcomes = sorted(seen.processed[f"m{s:03d}"], key=lambda o: o.message.seq or 0)
        got_out = np.concatenate([o.outputs for o in outcomes if o.outputs is not None])
        got_scores = np.concatenate([o.scores for o in outcomes if o.scores is not None])
        np.testing.assert_array_equal(got_out, reference.outputs[f"m{s:03d}"])
        np.testing.assert_array_equal(got_scores, reference.scores[f"m{s:03d}"])
    assert restarts == RESTARTS
    assert missing == []
    assert processed_twice == 0
    assert seen.count.get("out-of-order", 0) == 0
    assert lost_alerts == set()
    assert extra_alerts == set()
    assert deduped.conflicts == []
    assert len(reference.alerts) == FAULTY * len(("raised", "cleared")) * 2  # two fault windows per stream
    assert counters is not None
    assert counters.alerts_not_sent == 0
    assert bus is not None
    assert bus.connects >= 1 + RESTARTS
