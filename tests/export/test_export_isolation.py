"""Gate 4, batch isolation: every target's export proves that a stream's outputs do not depend
on the streams that share its batch, records it in the manifest, and refuses an artifact that
mixes streams (cpu-int8 as ORT's quantize_dynamic made it: one activation range per call)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_config.presets import EXPORT_TARGETS
from runtime.cli import main
from runtime.model.artifact import load_artifact
from tests.support.export_cases import save_weights, write_models

pytestmark = pytest.mark.torch


@pytest.fixture
def case(tmp_path: Path) -> list[str]:
    """Export arguments (without --target/--out) for the GRU + LSTM model, with a calibration CSV."""
    models = write_models(tmp_path)
    save_weights(models, "Mixed", tmp_path / "w.pt")
    rng = np.random.default_rng(6)
    raw = np.cumsum(rng.standard_normal((400, 4)) * 0.1, axis=0) * [1, 10, 100, 0.5] + [0, 50, 1000, 3]
    lines = ["a;b;c;d"] + [";".join(f"{v:.5f}" for v in row) for row in raw]
    (tmp_path / "normal.csv").write_text("\n".join(lines) + "\n")
    return [
        "--model",
        f"{models}:Mixed",
        "--weights",
        str(tmp_path / "w.pt"),
        "--calibration",
        str(tmp_path / "normal.csv"),
    ]


@pytest.mark.parametrize("target", sorted(EXPORT_TARGETS))
def test_every_target_proves_batch_isolation(
    case: list[str], tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / target
    assert main(["export", *case, "--target", target, "--out", str(out)]) == 0
    assert "parity gate 4: batch isolation" in capsys.readouterr().err
    gate = next(p for p in load_artifact(out).manifest.parity if p.gate == "batch-isolation")
    assert gate.passed
    assert not gate.skipped
    assert gate.value == 0.0
    assert gate.tolerance == 0.0
    assert "among 40 neighbours" in gate.detail


def test_an_artifact_that_mixes_streams_is_refused(
    case: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from exporter import quantize

    def per_call_ranges(float_model: bytes) -> quantize.QuantizationResult:
        out = tmp_path / "dynamic.onnx"
        quantize_dynamic(onnx.load_model_from_string(float_model), out, weight_type=QuantType.QInt8)
        return quantize.QuantizationResult(out.read_bytes())

    monkeypatch.setattr(quantize, "_int8_weights", per_call_ranges)
    out = tmp_path / "mixed"
    assert main(["export", *case, "--target", "cpu-int8", "--out", str(out)]) == 1
    assert "parity gate batch-isolation failed" in capsys.readouterr().err
    assert not out.exists()
