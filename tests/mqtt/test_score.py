"""`edgewatch score`: its alerts are the daemon's, byte for byte, for the same recording sent through
mosquitto one row per message; the printed summary, the per-row CSV and the plot; a SKAB file."""

from __future__ import annotations

import argparse
import csv
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from edge_config.loading import load_config
from runtime.commands import score
from runtime.service import Service
from runtime.tools.demo.fleet import MODEL_DIR, fleet
from runtime.tools.demo.simulator import SENSORS, simulate
from runtime.tools.local_broker import Broker
from tests.support.mqtt_helpers import Collector, publish_many
from tests.support.service_helpers import started, wait_counters

STEPS = 620  # pump-3's valve starts closing at 480 s: one alert, still open at the end


def _recording(path: Path) -> dict[str, list[tuple[float, list[float]]]]:
    """pump-1 (healthy) and pump-3 (failing) interleaved in one CSV with a `machine` column."""
    rows: dict[str, list[tuple[float, list[float]]]] = {}
    for machine in fleet(3)[::2]:
        rec = simulate(machine, STEPS)
        rows[machine.name] = [(float(t), [float(v) for v in row]) for t, row in zip(rec.ts, rec.values, strict=True)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["machine", "ts", *SENSORS])
        for i in range(STEPS):
            for name, samples in rows.items():
                ts, values = samples[i]
                writer.writerow([name, repr(ts), *map(repr, values)])
    return rows


def _config(path: Path, broker: Broker) -> Path:
    """The demo model with the gateway's defaults, but no time-based updates (the daemon's would
    follow the test machine's clock, the replay's the recording's)."""
    doc = {
        "broker": {"host": broker.host, "port": broker.port, "client_id": "score-test"},
        "streams": [{"name": "pumps", "topics": ["plant/+/telemetry"], "model": "det"}],
        "models": {"det": {"path": str(MODEL_DIR), "target": "cpu", "alerts": {"update_interval_s": None}}},
        "runtime": {"metrics_address": None, "stats_interval_s": None, "max_wait_ms": 2.0},
    }
    path.write_text(json.dumps(doc))
    return path


def test_score_alerts_equal_what_the_daemon_publishes(broker: Broker, tmp_path: Path) -> None:
    rows = _recording(tmp_path / "pumps.csv")
    config = _config(tmp_path / "gw.yaml", broker)
    scored = score.score_file(tmp_path / "pumps.csv", "det", config=config, id_column="machine")
    replayed = {name: [a.to_json() for a in r.alerts] for name, r in scored.results.items()}
    assert set(replayed) == {"pump-1", "pump-3"}
    assert replayed["pump-1"] == []
    assert [json.loads(a)["state"] for a in replayed["pump-3"]] == ["raised"]

    service = started(Service(load_config(config)))
    alerts = Collector(broker, "edgewatch/alerts/#")
    try:
        items = [
            (f"plant/{name}/telemetry", json.dumps({"seq": i, "ts": ts, "values": values}).encode())
            for i in range(STEPS)
            for name, samples in rows.items()
            for ts, values in [samples[i]]
        ]
        publish_many(broker, items)
        wait_counters(service, lambda c: c.processed == len(items))
        alerts.wait_for(lambda m: len(m) >= 1)
    finally:
        service.stop()
        alerts.close()
    published = {name: alerts.payloads(f"edgewatch/alerts/{name}") for name in rows}
    assert published == replayed  # the same JSON: ids, seq, ts, scores, top features, severity, message


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    score.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_score_prints_the_summary_and_writes_the_csv_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    _recording(tmp_path / "pumps.csv")
    out = io.StringIO()
    argv = ["score", str(tmp_path / "pumps.csv"), "--model", str(MODEL_DIR), "--id-column", "machine"]
    argv += ["--csv", str(tmp_path / "rows.csv"), "--plot", str(tmp_path / "p.png")]
    with redirect_stdout(out):
        assert score.run(_args(argv)) == 0
    text = out.getvalue()
    assert "model pump-rig-demo (sha256 " in text
    assert "stream pump-3: 620 rows, 600 judged (after warm-up), 1 alert(s)" in text
    assert "still open at the end" in text
    assert "stream pump-1: 620 rows, 600 judged (after warm-up), 0 alert(s)" in text
    assert "alerts at other thresholds (x the one used): x0.5: " in text
    with (tmp_path / "rows.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 2 * STEPS
    flagged = [int(r["row"]) for r in table if r["stream"] == "pump-3" and r["alert"] == "1"]
    assert flagged == list(range(flagged[0], STEPS))
    assert 480 < flagged[0] < 560
    for name in ("p-pump-1.png", "p-pump-3.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_what_if_at_the_used_threshold_counts_the_alerts_raised(tmp_path: Path) -> None:
    """The what-if replays the hysteresis on score / threshold: at x1 it must find the alerts the engine raised."""
    from edge_config.schema import AlertPolicy
    from runtime.tools.score_summary import WHAT_IF_FACTORS, summarize

    _recording(tmp_path / "pumps.csv")
    scored = score.score_file(tmp_path / "pumps.csv", str(MODEL_DIR), id_column="machine")
    for name, result in scored.results.items():
        summary = summarize(name, result, AlertPolicy())
        raised = sum(a.state == "raised" for a in result.alerts)
        assert summary.what_if[WHAT_IF_FACTORS.index(1.0)] == raised
    assert np.isfinite(scored.results["pump-3"].thresholds).all()


def test_score_a_skab_file(skab_dir: Path, tmp_path: Path) -> None:
    """SKAB's columns are the demo model's features (the simulator mimics SKAB's rig): a real
    recording, its datetime as ts, its anomaly column as labels in the plot."""
    out = io.StringIO()
    argv = ["score", str(skab_dir / "valve1" / "1.csv"), "--model", str(MODEL_DIR), "--label-column", "anomaly"]
    argv += ["--csv", str(tmp_path / "rows.csv")]
    with redirect_stdout(out):
        assert score.run(_args(argv)) == 0
    assert "stream 1: 1145 rows" in out.getvalue()
    with (tmp_path / "rows.csv").open() as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == 1145
