"""`edgewatch bench --quick`: runs end to end and reports every section with sane numbers.

Correctness only: no figure is compared with a goal (the machine and its load decide those).
Zero loss and every alert matched are correctness, not speed: the service must not lose a
message at any rate.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.tools.bench.breakdown import PARTS
from runtime.tools.bench.e2e import quantile_bound
from runtime.tools.bench.publisher import encode_publish

REPO = Path(__file__).resolve().parents[2]


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_publish_packet_matches_the_mqtt_encoding() -> None:
    packet = encode_publish(b"a/b", b"xyz", 1, 7)
    # fixed header 0x32 (PUBLISH, QoS 1), remaining length 10, topic length 3, topic, mid 7, payload
    assert packet == b"\x32\x0a\x00\x03a/b\x00\x07xyz"
    big = encode_publish(b"t", b"p" * 200, 0, 0)
    assert big[:3] == b"\x30\xcb\x01"  # 2 + 1 + 200 = 203 in MQTT's variable-length encoding
    assert len(big) == 3 + 203


def test_quantile_bound_reads_the_smallest_bucket_holding_the_share() -> None:
    buckets = [(0.001, 10.0), (0.005, 90.0), (0.02, 99.0), (float("inf"), 100.0)]
    assert quantile_bound(buckets, 0.5) == 5.0
    assert quantile_bound(buckets, 0.99) == 20.0
    assert math.isnan(quantile_bound([], 0.5))


@pytest.mark.mqtt
def test_quick_bench_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "bench", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Goals" in run.stdout
    r = json.loads(out.read_text())
    assert r["quick"] is True
    assert "errors" not in r
    assert r["machine"]["cores"] >= 1
    assert r["machine"]["versions"]["numpy"] != "missing"

    rows = r["engine"]["rows"]
    assert {(x["precision"], x["streams"]) for x in rows if x["samples_per_message"] == 1} >= {
        ("fp32", 1),
        ("fp32", 100),
        ("fp32", 1000),
        ("fp32", 10_000),
    }
    for x in rows:
        assert all(_positive(x[k]) for k in ("steps_per_s", "us_per_step", "decode_us", "engine_us", "ort_us")), x
        assert x["messages"] >= x["streams"]

    b = r["baselines"]
    for key in ("ort", "window50", "window200"):
        assert _positive(b[key]["steps_per_s"]), key
    torch_installed = r["machine"]["versions"]["torch"] != "missing"
    assert (b["torch"] is not None) == torch_installed
    assert all(_positive(v) for k, v in r["ratios"].items() if torch_installed or k != "engine_vs_torch")

    e = r["e2e"]
    for run_ in (e["single"], e["multi"]):
        assert run_["lost"] == 0
        assert run_["processed"] == run_["messages"] == run_["broker_acked"]
        assert _positive(run_["msg_per_s"])
        assert run_["samples_per_s"] == pytest.approx(run_["msg_per_s"] * run_["samples_per_message"])
    lat = e["latency"]  # fault bursts: every stream's burst raised its alert, and nothing else did
    assert lat["run"] == "faults"
    assert lat["lost"] == 0
    assert lat["matched"] == lat["expected"] == r["plan"]["latency_streams"]
    assert lat["unexpected"] == 0
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    hop = e["broker_hop"]
    assert hop["matched"] == hop["messages"] > 0
    assert 0 < hop["p50_ms"] <= hop["p99_ms"] <= hop["max_ms"]
    flood = e["alert_flood"]
    assert flood["run"] == "flood"
    assert flood["lost"] == 0
    assert flood["expected"] > 0
    # Every alert the service sent arrived; the steps without one (outbox refusals, a stream's
    # second message in one engine call) are the service's, by design, not the path's losses.
    assert 0 < flood["matched"] == flood["alerts_sent"] <= flood["expected"]
    assert 0 < flood["p50_ms"] <= flood["p99_ms"] <= flood["max_ms"]
    cost = e["alert_cost"]
    assert cost["alerts"] == cost["messages"] > 0  # every message alerts, as in the latency run
    assert _positive(cost["us_per_message"])

    split = r["engine"]["breakdown"]
    assert list(split["us"]) == list(PARTS)
    assert all(v >= 0 for k, v in split["us"].items() if k != "glue")
    assert sum(split["us"].values()) == pytest.approx(split["total_us"])

    m = r["memory"]
    assert m["streams"][0]["streams"] == 10_000
    assert _positive(m["streams"][0]["bytes_per_stream"])
    assert _positive(m["cold_start"]["ready_s"])

    lim = r["limits"]
    hidden, features, layers = 64, 8, 2  # the reference model
    gemm = 2 * 4 * hidden * (features + hidden) + (layers - 1) * 2 * 4 * hidden * (2 * hidden) + 2 * hidden * features
    assert lim["flop_bound"]["flops_per_step"] == gemm
    assert all(_positive(x["steps_per_s"]) for x in lim["flop_bound"]["rates"])
    assert _positive(lim["broker_raw"]["msg_per_s"])
    assert _positive(lim["paho_ceiling"]["msg_per_s"])

    assert len(r["goals"]) == 8
    assert all(isinstance(g["met"], bool) for g in r["goals"])
