"""examples/integrations: every metric the Grafana dashboard and the Prometheus rules use is in the
gateway's /metrics output (with the labels they select on); the Node-RED flow and the Telegraf
config subscribe to topics of the topic table and read fields the schemas define. promtool runs
when it is installed (it is not on the CI image: then that part is skipped, and says so)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from runtime.mqtt.protocol import BusCounts
from runtime.mqtt.topics import OutputTopics, topic_matches
from runtime.ops.counts import Tally
from runtime.ops.metrics import HealthServer, Metrics
from runtime.service.scores import ScorePoint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "integrations"
SCHEMAS = ROOT / "docs" / "schemas"
RULES = EXAMPLES / "prometheus" / "edgewatch-rules.yml"
DASHBOARD = EXAMPLES / "grafana" / "edgewatch-dashboard.json"
FLOW = EXAMPLES / "node-red" / "edgewatch-alerts-flow.json"
TELEGRAF = EXAMPLES / "telegraf" / "edgewatch-scores.conf"
ADDED_BY_PROMETHEUS = {"instance", "job", "le"}
"""Labels the examples may select on that Prometheus adds (or the histogram has) itself."""
_SELECTOR = re.compile(r"\b(edgewatch_[a-z_]+)(\{[^}]*\})?")


def _exposition() -> dict[str, set[str]]:
    """Sample name → its label names, from a gateway's /metrics over HTTP (labelled counters
    get one value each so that their samples exist, as on a gateway that has seen traffic)."""
    tally = Tally()
    for family, reason in [("alerts", "raised"), ("rejected", "not-json"), ("dropped", "drop-oldest")]:
        tally.add_reason(family, reason)
    metrics = Metrics()
    metrics.watch(tally.snapshot, lambda: BusCounts(), lambda: (0, 0))
    metrics.latency.observe(0.003)
    server = HealthServer("127.0.0.1:0", metrics, lambda: (True, "ready"))
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.stop()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def _queries() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_every_metric_the_dashboard_and_rules_use_is_exported() -> None:
    exported = _exposition()
    used = 0
    for expr in _queries():
        for name, selector in _SELECTOR.findall(expr):
            used += 1
            assert name in exported, f"{name} (in {expr!r}) is not in the gateway's /metrics"
            labels = set(re.findall(r"(\w+)\s*=~?", selector))
            assert labels <= exported[name] | ADDED_BY_PROMETHEUS, f"{expr!r}: {name} has no label {labels}"
    assert used >= 20


def test_rules_are_well_formed_and_promtool_accepts_them(tmp_path: Path) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for rule in (r for group in rules["groups"] for r in group["rules"]):
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["alert"].startswith("Edgewatch")
        assert rule["expr"].count("(") == rule["expr"].count(")")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here: the rules' PromQL was not checked by Prometheus")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_importable_json_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def _alert_fields() -> set[str]:
    return set(json.loads((SCHEMAS / "alert.schema.json").read_text())["properties"])


def test_node_red_flow_subscribes_to_the_documented_topics_and_reads_alert_fields() -> None:
    flow = json.loads(FLOW.read_text())
    ids = {node["id"] for node in flow}
    topics = OutputTopics("edgewatch")
    subscriptions = {node["topic"] for node in flow if node["type"] == "mqtt in"}
    assert subscriptions == {topics.alert("#"), topics.status("#")}
    for node in flow:
        for outputs in node.get("wires", []):
            assert set(outputs) <= ids, f"{node['id']} is wired to a node the flow lacks"
        if node["type"] == "mqtt in":
            assert node["broker"] in ids
    by_filter = {node["topic"]: node for node in flow if node["type"] == "mqtt in"}
    alert_in = by_filter[topics.alert("#")]
    assert alert_in["datatype"] == "json"
    assert alert_in["qos"] == "1"  # alerts are published at QoS 1
    for stream in ("pump-3", "L1/press-3"):
        assert topic_matches(alert_in["topic"].split("/"), topics.alert(stream).split("/"))
        assert not topic_matches(alert_in["topic"].split("/"), topics.status(stream).split("/"))
    code = next(node["func"] for node in flow if node["id"] == alert_in["wires"][0][0])
    read = set(re.findall(r"\ba\.(\w+)", code))
    assert read <= _alert_fields(), read - _alert_fields()
    assert {"message", "severity", "state", "id"} <= read


def test_telegraf_reads_the_score_stream_into_the_documented_line() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    conf = tomllib.loads(TELEGRAF.read_text())
    consumer = conf["inputs"]["mqtt_consumer"][0]
    assert consumer["topics"] == [OutputTopics("edgewatch").score("#")]
    parser = consumer["json_v2"][0]
    schema = json.loads((SCHEMAS / "score.schema.json").read_text())
    point = json.loads(ScorePoint("pump-3", 40.43, 2.252, 1700000559.0, 559, "pumps").to_json())
    assert set(point) == set(schema["required"])
    tags = {t["path"]: str(point[t["path"]]) for t in parser["tag"]}
    fields = {f["path"]: point[f["path"]] for f in parser["field"]}
    assert set(tags) | set(fields) | {parser["timestamp_path"]} <= set(schema["properties"])
    # Influx line protocol: measurement,tags (sorted) fields timestamp in ns
    line = (
        f"{parser['measurement_name']},"
        + ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
        + " "
        + ",".join(f"{k}={v:.4g}" for k, v in sorted(fields.items()))
        + f" {int(point[parser['timestamp_path']] * 1e9)}"
    )
    documented = next(
        lne.strip("# ").strip() for lne in TELEGRAF.read_text().splitlines() if lne.startswith("#   edgewatch_score")
    )
    assert line == documented
