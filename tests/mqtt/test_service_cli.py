"""`edgewatch replay` and `edgewatch alerts` against a real broker (commands run in-process)."""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from pathlib import Path

import pytest

from edge_config.errors import ConfigError
from runtime.commands import alerts as alerts_cli
from runtime.commands import replay
from runtime.tools.local_broker import Broker
from tests.support.mqtt_helpers import Collector, publish_many

SKAB_LIKE = """datetime;Accelerometer1RMS;Current;Pressure;anomaly;note
2020-03-09 10:14:33;0.0275;1.84;0.054;0.0;ok
2020-03-09 10:14:34;0.0277;1.85;0.382;0.0;ok
2020-03-09 10:14:35;0.0276;1.86;0.710;1.0;x
"""


def _args(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())  # type: ignore[attr-defined]
    return parser.parse_args(argv)


def test_read_csv_skips_text_columns_and_parses_iso_ts(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(SKAB_LIKE)
    stream = replay.read_csv(path)
    assert stream.columns == ("Accelerometer1RMS", "Current", "Pressure", "anomaly")
    assert stream.rows[1] == (0.0277, 1.85, 0.382, 0.0)
    assert stream.ts is not None
    assert stream.ts[1] - stream.ts[0] == 1.0
    assert stream.ts[0] == 1583748873.0  # naive dates are read as UTC
    chosen = replay.read_csv(path, ["Pressure", "Current"])
    assert chosen.columns == ("Pressure", "Current")
    assert chosen.rows[0] == (0.054, 1.84)


def test_read_csv_comma_separated_without_ts(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    stream = replay.read_csv(path)
    assert stream.columns == ("a", "b")
    assert stream.ts is None
    assert stream.rows == ((1.0, 2.0), (3.0, 4.0))


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("a;b\n1;x\n", ["b"], "not finite numbers"),
        ("a;b\n1;2\n", ["c"], "no column"),
        ("a;b\n1\n", None, "fields"),
        ("a;b\n", None, "at least one row"),
        ("a;b\nnan;1\n", ["a"], "not finite"),
    ],
)
def test_read_csv_errors_name_the_problem(tmp_path: Path, text: str, columns: list[str] | None, message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        replay.read_csv(path, columns)


@pytest.mark.mqtt
def test_replay_publishes_seq_ts_and_chunks(broker: Broker, tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(SKAB_LIKE)
    collector = Collector(broker, "plant/#")
    try:
        args = _args(
            replay,
            [
                "replay",
                str(path),
                "--broker",
                broker.address,
                "--topic",
                "plant/m1",
                "--rate",
                "0",
                "--columns",
                "Current,Pressure",
                "--start-seq",
                "10",
            ],
        )
        assert args.func(args) == 0
        args = _args(
            replay,
            [
                "replay",
                str(path),
                "--broker",
                broker.address,
                "--topic",
                "plant/m2",
                "--rate",
                "0",
                "--columns",
                "Current,Pressure",
                "--chunk",
                "2",
            ],
        )
        assert args.func(args) == 0
        collector.wait_for(lambda m: len(m) == 5)
        single = [json.loads(p) for p in collector.payloads("plant/m1")]
        assert [d["seq"] for d in single] == [10, 11, 12]
        assert single[2] == {"seq": 12, "ts": 1583748875.0, "values": [1.86, 0.71]}
        chunks = [json.loads(p) for p in collector.payloads("plant/m2")]
        assert chunks[0] == {"seq": 0, "ts": [1583748873.0, 1583748874.0], "values": [[1.84, 0.054], [1.85, 0.382]]}
        assert chunks[1]["seq"] == 2
        assert chunks[1]["values"] == [[1.86, 0.71]]
    finally:
        collector.close()


@pytest.mark.mqtt
def test_replay_rate_is_respected(broker: Broker, tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("a\n" + "".join(f"{i}\n" for i in range(6)))
    args = _args(replay, ["replay", str(path), "--broker", broker.address, "--topic", "r", "--rate", "20"])
    started = time.monotonic()
    assert args.func(args) == 0
    assert 0.25 <= time.monotonic() - started < 3.0  # 6 messages at 20 Hz


def _alert(stream: str, state: str, score: float) -> bytes:
    return json.dumps(
        {
            "id": "0123456789abcdef",
            "stream": stream,
            "state": state,
            "score": score,
            "threshold": 1.5,
            "started": 1763800000.0,
            "ts": 1763800001.25,
            "seq": 42,
            "model": "m",
            "model_sha256": "ab" * 32,
            "top_features": [{"feature": "Pressure", "contribution": 2.5}],
        }
    ).encode()


def test_format_alert_is_one_readable_line() -> None:
    line = alerts_cli.format_alert(alerts_cli.parse_alert(_alert("L1/press-3", "raised", 4.2)))
    assert "RAISED" in line
    assert "L1/press-3" in line
    assert "4.200" in line
    assert "Pressure 2.50" in line
    assert "2025-11-22 08:26:41.250" in line
    assert "\n" not in line


def _run_alerts(argv: list[str]) -> tuple[threading.Thread, io.StringIO, list[int]]:
    out, result = io.StringIO(), []
    args = _args(alerts_cli, ["alerts", *argv])
    thread = threading.Thread(target=lambda: result.append(alerts_cli.run(args, out)))
    thread.start()
    return thread, out, result


@pytest.mark.mqtt
def test_alerts_json_count_skips_foreign_messages(broker: Broker) -> None:
    thread, out, result = _run_alerts(
        ["--broker", broker.address, "--prefix", "gw", "--stream", "L1/+", "--json", "--count", "2", "--timeout", "20"]
    )
    time.sleep(0.5)  # subscribed
    publish_many(
        broker,
        [
            ("gw/alerts/L1/a", b"not json"),
            ("gw/alerts/L2/b", _alert("L2/b", "raised", 3.0)),  # outside --stream
            ("gw/alerts/L1/a", _alert("L1/a", "raised", 3.0)),
            ("gw/alerts/L1/a", _alert("L1/a", "cleared", 0.1)),
        ],
    )
    thread.join(20)
    assert result == [0]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["stream"], d["state"]) for d in lines] == [("L1/a", "raised"), ("L1/a", "cleared")]


@pytest.mark.mqtt
def test_alerts_timeout_without_count_reached_exits_1(broker: Broker) -> None:
    thread, out, result = _run_alerts(["--broker", broker.address, "--count", "1", "--timeout", "1"])
    thread.join(10)
    assert result == [1]
    assert out.getvalue().startswith("time (UTC)")


@pytest.mark.mqtt
def test_alerts_reads_broker_and_prefix_from_the_config(broker: Broker, tmp_path: Path) -> None:
    import yaml

    from tests.support.onnx_artifacts import write_lstm_artifact
    from tests.support.service_helpers import gateway_config

    config = gateway_config(broker, write_lstm_artifact(tmp_path / "m", threshold=1.0), topic_prefix="site7")
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    thread, out, result = _run_alerts(["--config", str(path), "--count", "1", "--timeout", "20"])
    time.sleep(0.5)
    publish_many(
        broker,
        [
            ("edgewatch/alerts/a", _alert("a", "raised", 2.0)),  # the default prefix: not ours
            ("site7/alerts/L1/b", _alert("L1/b", "raised", 2.0)),
        ],
    )
    thread.join(20)
    assert result == [0]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("time (UTC)")
    assert len(lines) == 2
    assert "L1/b" in lines[1]
