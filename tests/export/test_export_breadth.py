"""Exporter breadth: input stems found without --features, cell loops and hand-written cells
(the step protocol) exported as one-step streaming graphs, each through every gate.

The models are the examples in examples/models, written as a user writes them. Every check
of the artifact steps it with plain ONNX Runtime (tests.support.export_cases.step_artifact),
independently of the exporter's own gate code, against the PyTorch module on the whole sequence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from runtime.cli import main
from runtime.model.artifact import Artifact, load_artifact
from tests.support.export_cases import import_models, save_weights, step_artifact, write_models

pytestmark = pytest.mark.torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


@dataclass(frozen=True)
class Shape:
    id: str
    file: str
    name: str
    kwargs: dict[str, Any]
    state: list[tuple[str, str]]
    """(graph input, manifest state kind) per state tensor."""


CELL_SHAPES = [
    Shape("lstm-cell-loop", "cell_loops.py", "LSTMCellLoop", {}, [("h0.cell", "lstm_h"), ("c0.cell", "lstm_c")]),
    Shape("gru-cell-loop", "cell_loops.py", "GRUCellLoop", {}, [("h0.cell", "gru_h")]),
    Shape("peephole", "peephole.py", "PeepholeLSTM", {}, [("h0.model", "cell"), ("c0.model", "cell")]),
    Shape("coupled-gate", "coupled_gate.py", "CoupledGateLSTM", {}, [("h0.model", "cell"), ("c0.model", "cell")]),
]


@dataclass(frozen=True)
class Exported:
    model: Any
    """The PyTorch module with the exported weights, in eval mode."""
    fp32: Path
    int8: Path


def export_both(tmp: Path, file: str, name: str, kwargs: dict[str, Any]) -> Exported:
    """Export one example for cpu-fp32 and cpu-int8 (no --features, no --calibration)."""
    import torch

    torch.manual_seed(0)
    model = getattr(import_models(EXAMPLES / file), name)(**kwargs).eval()
    torch.save(model.state_dict(), tmp / "w.pt")
    spec = f"{EXAMPLES / file}:{name}"
    common = ["--model", spec, "--model-kwargs", json.dumps(kwargs), "--weights", str(tmp / "w.pt")]
    for target in ("cpu-fp32", "cpu-int8"):
        assert main(["export", *common, "--target", target, "--out", str(tmp / target)]) == 0
    return Exported(model, tmp / "cpu-fp32", tmp / "cpu-int8")


def torch_sequence(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out: np.ndarray = model(torch.from_numpy(x)).numpy()
    return out


def gate(art: Artifact, name: str) -> Any:
    return next(p for p in art.manifest.parity if p.gate == name)


@pytest.fixture(scope="module", params=CELL_SHAPES, ids=[s.id for s in CELL_SHAPES])
def cells(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Shape, Exported]:
    shape: Shape = request.param
    return shape, export_both(tmp_path_factory.mktemp(shape.id), shape.file, shape.name, shape.kwargs)


def test_a_cell_loop_exports_one_step_graphs_with_its_state_as_graph_io(cells: tuple[Shape, Exported]) -> None:
    shape, exported = cells
    for directory in (exported.fp32, exported.int8):
        m = load_artifact(directory).manifest
        assert m.time_steps == 1
        assert [(s.input, s.kind) for s in m.state] == shape.state
        assert all(s.shape == [1, "batch", 12] and s.batch_axis == 1 for s in m.state)
        assert (m.features.count, m.output_kind, m.output_size, m.task) == (4, "sequence", 4, "forecast")
        assert all(p.passed and not p.skipped for p in m.parity)
        graph_inputs = [i.name for i in onnx.load(directory / "model.onnx").graph.input]
        assert graph_inputs == ["x", *(name for name, _ in shape.state)]
    int8 = load_artifact(exported.int8)
    assert [p.gate for p in int8.manifest.parity] == [
        "onnx-vs-torch",
        "stream-vs-sequence",
        "quantized-vs-float",
        "batch-isolation",
    ]
    graph = onnx.load(exported.int8 / "model.onnx").graph
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer) >= 2


def test_a_cell_loop_artifact_steps_like_pytorch_on_the_whole_sequence(cells: tuple[Shape, Exported]) -> None:
    _, exported = cells
    x = np.random.default_rng(7).standard_normal((3, 40, 4)).astype(np.float32)
    reference = torch_sequence(exported.model, x)
    fp32, _ = step_artifact(exported.fp32, x)
    assert np.max(np.abs(fp32 - reference)) < 1e-4
    int8, _ = step_artifact(exported.int8, x)
    assert np.max(np.abs(int8 - reference)) < gate(load_artifact(exported.int8), "quantized-vs-float").tolerance
    assert np.max(np.abs(int8 - reference)) > 0  # the weights really are int8


STEMS = [("linear", {"stem": "linear", "width": 32, "hidden": 64}), ("mlp", {"stem": "mlp", "width": 32, "hidden": 64})]


@pytest.mark.parametrize(("stem", "kwargs"), STEMS, ids=[s[0] for s in STEMS])
def test_a_stem_before_a_two_layer_lstm_exports_without_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stem: str, kwargs: dict[str, Any]
) -> None:
    exported = export_both(tmp_path, "input_stems.py", "StemForecaster", kwargs)
    log = capsys.readouterr().err
    assert "input width: 5 (declared by stem" in log
    fp32, int8 = load_artifact(exported.fp32), load_artifact(exported.int8)
    assert fp32.manifest.features.names == ["f0", "f1", "f2", "f3", "f4"]
    assert int8.manifest.sizes["model"] <= 0.30 * int8.manifest.sizes["fp32"]
    x = np.random.default_rng(8).standard_normal((2, 30, 5)).astype(np.float32)
    reference = torch_sequence(exported.model, x)
    stepped, _ = step_artifact(exported.fp32, x)
    assert np.max(np.abs(stepped - reference)) < 1e-4
    stepped_int8, _ = step_artifact(exported.int8, x)
    assert np.max(np.abs(stepped_int8 - reference)) < gate(int8, "quantized-vs-float").tolerance


def test_time_major_layout_is_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = write_models(tmp_path)
    save_weights(models, "Seq", tmp_path / "w.pt", batch_first=False)
    args = ["--model", f"{models}:Seq", "--model-kwargs", '{"batch_first": false}', "--weights", str(tmp_path / "w.pt")]
    assert main(["export", *args, "--target", "cpu-fp32", "--out", str(tmp_path / "art")]) == 0
    log = capsys.readouterr().err
    assert "input layout: time-major [time, batch, features] (detected by probing)" in log
    assert "input width: 3 (declared by rnn, accepted by forward())" in log


def test_input_width_search_finds_a_cell_that_concatenates_x_with_its_state() -> None:
    import torch

    from exporter.input_width import find_input_width

    torch.manual_seed(0)
    # CoupledGateLSTM's only Linear takes [x, h] (4 + 12): no layer declares the input width.
    found = find_input_width(import_models(EXAMPLES / "coupled_gate.py").CoupledGateLSTM(features=4, hidden=12))
    assert found is not None
    assert found.width == 4
    assert "smallest width" in found.how
