"""Fault (b): `edgewatch serve` is killed with SIGKILL at 5 random (seeded) moments of a QoS 1
stream and started again each time.

The broker keeps the daemon's persistent session, so what was not acked is redelivered; the
daemon acks only after processing, checkpoints every second and restores at start. The daemon
logs one line per delivery (the `edgewatch.outcomes` logger) before acking it, so the test
knows what every incarnation processed. Expected: every message processed at least once; each
start restores exactly the streams of the newest intact checkpoint on disk; the streams whose
next seq shows a gap (samples acked after that checkpoint) or that were not in it are counted
as re-warming, exactly; alert ids after dedup never name two different alerts; a final SIGTERM
drains, checkpoints every stream's last seq and exits 0.
"""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import pytest

from runtime.model.artifact import load_artifact
from runtime.state.checkpoint import StateLayout, load_checkpoint, model_checkpoint_path
from runtime.tools.local_broker import Broker, free_port
from tests.support.fault_helpers import Daemon, dedup, metric, report, wait_healthy
from tests.support.fault_traffic import AlertLog, ReliablePublisher, stream_items
from tests.support.mqtt_helpers import retained
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

STREAMS, SEQS, FAULTY = 50, 200, 10  # 10,000 messages
RATE = 400.0  # messages/s: 25 s of traffic
KILLS, SEED = 5, 20251123
POLICY = {"raise_k": 2, "raise_n": 3, "clear_m": 3, "warmup_steps": 3}


def _expected_rewarming(first_seq: dict[str, int], checkpoint: dict[str, int]) -> int:
    """Streams of one incarnation that warm up from zero: a restored one whose first seq jumps
    past the checkpoint's, or one not in the checkpoint whose first seq is not 0."""
    return sum(1 for s, q in first_seq.items() if (q > checkpoint[s] + 1 if s in checkpoint else q > 0))


def _wait_all_streams_seen(daemon: Daemon, offset: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"outcome model=\S+ stream=(\S+) ")
    while len({m[1] for m in pattern.finditer(daemon.text(), offset)}) < STREAMS:
        assert time.monotonic() < deadline, "not every stream reached this incarnation"
        time.sleep(0.05)


def test_five_sigkills_lose_no_message_and_restore_or_count_every_stream(broker: Broker, tmp_path: Path) -> None:
    started_at = time.monotonic()
    art = write_persistence_artifact(tmp_path / "model", features=3, threshold=1.0, ewma_alpha=0.5)
    port = free_port()
    ckpt = tmp_path / "state" / "state.ckpt"
    ckpt.parent.mkdir()
    config = write_config(
        tmp_path / "gw.yaml",
        broker,
        art,
        client_id="fault-b-daemon",
        alerts=POLICY,
        checkpoint_path=ckpt,
        checkpoint_interval_s=1.0,
        metrics_address=f"127.0.0.1:{port}",
    )
    layout = StateLayout.from_manifest(load_artifact(art).manifest)
    path = model_checkpoint_path(ckpt, "det")
    daemon = Daemon(config, tmp_path / "serve.log", trace_outcomes=True)
    alerts = AlertLog(broker.host, broker.port, "fault-b-alerts")
    publisher = ReliablePublisher(broker.host, broker.port, "fault-b-pub")
    rng = random.Random(SEED)
    duration = STREAMS * SEQS / RATE
    kill_at = [duration * (k + rng.uniform(0.2, 0.8)) / KILLS for k in range(KILLS)]
    runs: list[dict[str, object]] = []
    try:
        daemon.start()
        wait_healthy(daemon, port)
        offsets = [0]
        sender = threading.Thread(
            target=publisher.publish_paced, args=(stream_items(STREAMS, range(SEQS), FAULTY), RATE), daemon=True
        )
        t0 = time.monotonic()
        sender.start()
        scraped = []
        for at in kill_at:
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            _wait_all_streams_seen(daemon, offsets[-1])  # so this incarnation's re-warming count is final
            scraped.append(metric(port, "edgewatch_streams_rewarming_total"))
            daemon.kill()  # SIGKILL
            on_disk = load_checkpoint(path, layout)  # what the next start must find
            checkpoint = (
                {}
                if on_disk.snapshot is None
                else dict(zip(on_disk.snapshot.streams, on_disk.snapshot.last_seq.tolist(), strict=False))
            )
            offsets.append(len(daemon.text()))
            daemon.start()
            wait_healthy(daemon, port)
            line = daemon.wait_line(
                r"(restored (\d+) streams from \S+|streams start fresh: [^\n]*)", 10, after=offsets[-1]
            )
            restored = int(line.group(2)) if line.group(2) else 0
            runs.append(
                {
                    "at_s": round(at, 2),
                    "checkpoint_streams": len(checkpoint),
                    "restored": restored,
                    "checkpoint": checkpoint,
                    "offset": offsets[-1],
                }
            )
            assert restored == len(checkpoint), line.group(0)
            assert metric(port, "edgewatch_streams_restored_total") == restored
        sender.join(duration + 60)
        publisher.confirm_all(60)
        # every stream has spoken to the last incarnation: its re-warming count is final
        deadline = time.monotonic() + 60
        while {(s, q) for s, q, _ in daemon.outcomes()} < {(f"m{s:03d}", SEQS - 1) for s in range(STREAMS)}:
            assert time.monotonic() < deadline, "the last messages were not processed in time"
            time.sleep(0.2)
        scraped.append(metric(port, "edgewatch_streams_rewarming_total"))
        alerts.wait_for(lambda got: len(got) >= 2 * FAULTY, timeout=20)
        time.sleep(1.0)
        assert daemon.stop() == 0  # SIGTERM: drain, last checkpoint
        final = load_checkpoint(path, layout)
        statuses = {retained(broker, f"edgewatch/status/m{s:03d}", timeout=2) for s in (0, FAULTY - 1, FAULTY)}
    finally:
        daemon.kill()
        publisher.close()
        alerts.close()

    text = daemon.text()
    bounds = [*offsets, len(text)]
    outcome = re.compile(r"outcome model=\S+ stream=(\S+) seq=(\d+) status=(\S+)")
    processed: set[tuple[str, int]] = set()
    counts: dict[str, int] = {}
    rewarming_expected = []
    for k in range(len(bounds) - 1):
        first: dict[str, int] = {}
        for m in outcome.finditer(text, bounds[k], bounds[k + 1]):
            first.setdefault(m[1], int(m[2]))
            counts[m[3]] = counts.get(m[3], 0) + 1
            if m[3] == "processed":
                processed.add((m[1], int(m[2])))
        checkpoint = runs[k - 1]["checkpoint"] if k > 0 else {}
        rewarming_expected.append(_expected_rewarming(first, checkpoint))  # type: ignore[arg-type]
    missing = [(f"m{s:03d}", q) for s in range(STREAMS) for q in range(SEQS) if (f"m{s:03d}", q) not in processed]
    deduped = dedup(alerts.received)
    raised = {i for i, state in deduped.unique if state == "raised"}
    cleared = {i for i, state in deduped.unique if state == "cleared"}
    report(
        tmp_path,
        "b_daemon_sigkill",
        messages=STREAMS * SEQS,
        streams=STREAMS,
        kills=len(runs),
        kill_at_s=[r["at_s"] for r in runs],
        restored_per_start=[r["restored"] for r in runs],
        rewarming_per_start=rewarming_expected[1:],
        rewarming_metric_per_run=scraped,
        deliveries_logged=sum(counts.values()),
        processed=counts.get("processed", 0),
        duplicates_skipped=counts.get("duplicate", 0),
        out_of_order=counts.get("out-of-order", 0),
        lost_messages=len(missing),
        alert_messages=len(alerts.received),
        alert_duplicates=deduped.duplicates,
        alert_ids=len(raised),
        raised_ids_never_cleared=len(raised - cleared),
        id_conflicts=len(deduped.conflicts),
        seconds=round(time.monotonic() - started_at, 1),
    )
    assert len(runs) == KILLS
    assert missing == []
    assert counts.get("out-of-order", 0) == 0
    assert scraped == rewarming_expected
    assert rewarming_expected[0] == 0
    assert deduped.conflicts == []
    assert len(raised) >= FAULTY
    assert cleared <= raised
    assert final.snapshot is not None
    assert len(final.snapshot.streams) == STREAMS
    assert set(final.snapshot.last_seq.tolist()) == {SEQS - 1}
    assert statuses == {b"ok"}  # after the faults cleared, including across restarts
    assert "Traceback" not in text
