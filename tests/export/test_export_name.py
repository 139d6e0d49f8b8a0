"""The artifact's name: --name, else the weights file's stem, else SPEC's Name; never the --out folder."""

from __future__ import annotations

from pathlib import Path

from exporter.pipeline import ExportRequest, artifact_name


def _request(weights: str, *, name: str | None = None, model: str = "models/pump.py:PumpLSTM") -> ExportRequest:
    return ExportRequest(model=model, weights=Path(weights), target="cpu", out=Path("out/artifact"), name=name)


def test_name_comes_from_the_flag_then_the_weights_then_the_module() -> None:
    assert artifact_name(_request("w/pump_lstm.pt", name="line-3")) == "line-3"
    assert artifact_name(_request("w/pump_lstm.pt")) == "pump_lstm"
    assert artifact_name(_request("w/model.pt")) == "PumpLSTM"  # a generic stem says nothing
    assert artifact_name(_request("w/weights.pth", model="exporter.training.reference_model:make")) == "make"
    assert artifact_name(_request("w/best.pt")) != "artifact"
