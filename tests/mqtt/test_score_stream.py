"""The optional score stream and `edgewatch alerts --open`, end to end through mosquitto."""

from __future__ import annotations

import argparse
import io
import itertools
import json
from pathlib import Path

import pytest

from edge_config.schema import AlertPolicy, ScoreStreamConfig
from runtime.commands import alerts as alerts_cli
from runtime.service import Service
from runtime.tools.local_broker import Broker
from tests.support.mqtt_helpers import Collector, publish_many
from tests.support.onnx_artifacts import write_persistence_artifact
from tests.support.service_helpers import gateway_config, started, wait_counters

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
POLICY = AlertPolicy(raise_k=2, raise_n=3, clear_m=3, warmup_steps=3, update_interval_s=None)


def _sample(t: int, values: list[float]) -> bytes:
    return json.dumps({"seq": t, "ts": 1763800000.0 + t, "values": values}).encode()


def _traffic(steps: int, *, fault_until: int) -> list[tuple[str, bytes]]:
    """'calm' stays flat; 'bad' jumps back and forth from step 5 to `fault_until` (never clears if
    that is the end), so the persistence forecast is badly wrong there."""
    items = []
    for t in range(steps):
        items.append(("plant/calm/telemetry", _sample(t, [1.0, 2.0, 3.0])))
        bad = [5.0 * (-1) ** t, 0.0, 0.0] if 5 <= t < fault_until else [0.0, 0.0, 0.0]
        items.append(("plant/bad/telemetry", _sample(t, bad)))
    return items


def test_score_stream_publishes_on_change_and_is_off_by_default(broker: Broker, tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMAS / "score.schema.json").read_text())
    artifact = write_persistence_artifact(tmp_path / "p", features=3, threshold=1.0, ewma_alpha=0.5)
    scores = Collector(broker, "edgewatch/scores/#")
    try:
        off = started(Service(gateway_config(broker, artifact, alerts=POLICY)))
        try:
            items = _traffic(20, fault_until=20)
            publish_many(broker, items)
            wait_counters(off, lambda c: c.processed == len(items))
        finally:
            off.stop()
        assert scores.messages == []  # off by default

        # an hour between points unless score / threshold moves by 0.5: calm publishes once, bad on each jump
        stream = ScoreStreamConfig(interval_s=3600.0, min_change=0.5)
        on = started(Service(gateway_config(broker, artifact, alerts=POLICY, score_stream=stream)))
        try:
            items = [(t.replace("plant/", "plant/x"), p) for t, p in _traffic(20, fault_until=20)]
            publish_many(broker, items)
            wait_counters(on, lambda c: c.processed == len(items))
            got = scores.wait_for(lambda m: any(r.topic == "edgewatch/scores/xbad" for r in m))
        finally:
            on.stop()
    finally:
        scores.close()
    docs = [json.loads(m.payload) for m in got]
    for doc in docs:
        jsonschema.validate(doc, schema)
    calm = [d for d in docs if d["stream"] == "xcalm"]
    bad = [d for d in docs if d["stream"] == "xbad"]
    assert len(calm) == 1  # its first scored step; flat after that, and the interval is an hour
    assert calm[0]["score"] == 0.0
    assert calm[0]["threshold"] == 1.0
    assert len(bad) >= 3  # the jumps moved its ratio by more than 0.5 several times
    assert all(abs(b["ratio"] - a["ratio"]) >= 0.5 for a, b in itertools.pairwise(bad))
    assert all(not m.retain for m in got)
    assert [d["seq"] for d in bad] == sorted(d["seq"] for d in bad)
    assert [d["ts"] - 1763800000.0 for d in bad] == [d["seq"] for d in bad], [(d["seq"], d["ts"]) for d in docs]


def _open(broker: Broker, *extra: str) -> str:
    parser = argparse.ArgumentParser()
    alerts_cli.register(parser.add_subparsers())
    args = parser.parse_args(["alerts", "--broker", broker.address, "--open", "--quiet", "1.5", *extra])
    out = io.StringIO()
    assert alerts_cli.run(args, out) == 0
    return out.getvalue()


def test_alerts_open_lists_the_streams_with_an_open_alert(broker: Broker, tmp_path: Path) -> None:
    artifact = write_persistence_artifact(tmp_path / "p", features=3, threshold=1.0, ewma_alpha=0.5)
    service = started(Service(gateway_config(broker, artifact, alerts=POLICY)))
    try:
        items = _traffic(20, fault_until=20)  # 'bad' raised, still open at the end
        items += [(t.replace("bad", "fixed"), p) for t, p in _traffic(20, fault_until=10) if "bad" in t]
        publish_many(broker, items)  # 'fixed' raised, then cleared after 3 calm steps
        wait_counters(service, lambda c: c.processed == len(items) and c.alerts.get("cleared", 0) >= 1)
        assert _open(broker).splitlines() == ["bad", "1 open alert(s); streams: 1 alert, 2 ok"]
        assert _open(broker, "--json") == '{"stream": "bad", "status": "alert"}\n'
        assert _open(broker, "--stream", "calm").splitlines() == ["0 open alert(s); streams: 1 ok"]
    finally:
        service.stop()
