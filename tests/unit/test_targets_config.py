"""`edgewatch targets --config FILE` without --model: the node placement of every configured
model on its own target, as the README's user path promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runtime.cli import main
from tests.support.onnx_artifacts import write_lstm_artifact


def test_every_configured_model_is_placed_on_its_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_lstm_artifact(tmp_path / "pump")
    write_lstm_artifact(tmp_path / "fan", features=3, hidden=4, layers=1)
    doc = {
        "broker": {"host": "127.0.0.1", "port": 1883},
        "streams": [{"name": "s", "topics": ["plant/+/telemetry"], "model": "pump"}],
        "models": {
            "pump": {"path": "pump", "target": "cpu"},
            "fan": {"path": "fan", "target": "strict-cpu"},
            "absent": {"path": "not-here", "target": "cpu"},
        },
        "targets": {"cpu": {"type": "cpu"}, "strict-cpu": {"type": "cpu", "fallback": "strict"}},
    }
    config = tmp_path / "gw.yaml"
    config.write_text(json.dumps(doc))
    code = main(["targets", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0, out
    heading = r"^model '(\w+)' .* on target '([\w-]+)': CPUExecutionProvider, fallback (\S+)$"
    placements = re.findall(heading, out, re.MULTILINE)
    assert placements == [("pump", "cpu", "allow-cpu"), ("fan", "strict-cpu", "strict")]
    assert len(re.findall(r"^  LSTM\s+2$", out, re.MULTILINE)) == 1  # pump: 2 layers
    assert len(re.findall(r"^  LSTM\s+1$", out, re.MULTILINE)) == 1  # fan: 1 layer
    assert out.count("fallback policy") == 2
    assert re.search(r"^model 'absent': not placed, its artifact is not usable here: ", out, re.MULTILINE)
