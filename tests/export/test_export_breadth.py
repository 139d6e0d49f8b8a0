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
    Shape("peephole", "peephole.py", "PeepholeLSTM", {}, [("h0.cell", "cell"), ("c0.cell", "cell")]),
    Shape("coupled-gate", "coupled_gate.py", "CoupledGateLSTM", {}, [("h0.cell", "cell"), ("c0.cell", "cell")]),
    Shape("minimal-gru", "minimal_gru.py", "MinimalGRU", {}, [("h0.model", "cell")]),
]
FUSED = {"peephole": 0, "coupled-gate": 1}
"""The shapes whose cell declares onnx_lstm_weights(), with the LSTM node's input_forget."""


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


def test_a_cell_that_declares_its_onnx_lstm_weights_is_one_lstm_node(cells: tuple[Shape, Exported]) -> None:
    """Peephole (input P) and coupled-gate (input_forget) cells: one ONNX LSTM node per step,
    int8 W and R on cpu-int8; the other cells stay as traced (no LSTM node)."""
    shape, exported = cells
    for directory in (exported.fp32, exported.int8):
        graph = onnx.load(directory / "model.onnx").graph
        lstm = [n for n in graph.node if n.op_type == "LSTM"]
        if shape.id not in FUSED:
            assert lstm == []
            continue
        assert len(lstm) == 1
        attributes = {a.name: a.i for a in lstm[0].attribute}
        assert attributes == {"hidden_size": 12, "input_forget": FUSED[shape.id]}
        assert lstm[0].input[7]  # the peephole input P is fed (zeros for the coupled cell)
        if directory == exported.int8:
            rebuilt = {n.output[0] for n in graph.node if n.op_type == "Mul" and n.input[0].endswith(".float")}
            assert {lstm[0].input[1], lstm[0].input[2]} <= rebuilt  # W and R stored as int8


def test_a_cell_loop_artifact_steps_like_pytorch_on_the_whole_sequence(cells: tuple[Shape, Exported]) -> None:
    _, exported = cells
    x = np.random.default_rng(7).standard_normal((3, 40, 4)).astype(np.float32)
    reference = torch_sequence(exported.model, x)
    fp32, _ = step_artifact(exported.fp32, x)
    assert np.max(np.abs(fp32 - reference)) < 1e-4
    int8, _ = step_artifact(exported.int8, x)
    assert np.max(np.abs(int8 - reference)) < gate(load_artifact(exported.int8), "quantized-vs-float").tolerance
    assert np.max(np.abs(int8 - reference)) > 0  # the weights really are int8


STEMS = [(stem, {"stem": stem, "width": 32, "hidden": 64}) for stem in ("linear", "mlp", "conv")]


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
    frames = [(s.input, s.shape, s.kind) for s in fp32.manifest.state if s.kind == "frames"]
    assert frames == ([("frames0.stem.conv", [2, "batch", 5], "frames")] if stem == "conv" else [])


CHOMPED = """
import torch
from torch import nn


class ChompedConvStem(nn.Module):
    \"\"\"The other causal-convolution idiom: the Conv1d pads both ends by dilation*(kernel-1) and
    the module cuts the extra frames off the right end (time-major, dilation 2, a GRU after it).\"\"\"

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 6, kernel_size=3, dilation=2, padding=4)
        self.rnn = nn.GRU(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        z = self.conv(x.permute(1, 2, 0))[..., :-4]
        y, _ = self.rnn(torch.tanh(z).permute(2, 0, 1))
        return self.head(y)
"""


def test_a_causal_conv_that_cuts_its_right_end_carries_its_past_frames(tmp_path: Path) -> None:
    path = tmp_path / "chomped.py"
    path.write_text(CHOMPED)
    model = save_weights(path, "ChompedConvStem", tmp_path / "w.pt")
    args = ["--model", f"{path}:ChompedConvStem", "--weights", str(tmp_path / "w.pt"), "--target", "cpu-fp32"]
    assert main(["export", *args, "--out", str(tmp_path / "art")]) == 0
    m = load_artifact(tmp_path / "art").manifest
    assert [(s.input, s.shape) for s in m.state] == [("frames0.conv", [4, "batch", 3]), ("h0.rnn", [1, "batch", 8])]
    x = np.random.default_rng(9).standard_normal((2, 25, 3)).astype(np.float32)
    stepped, _ = step_artifact(tmp_path / "art", x)
    reference = torch_sequence(model, np.ascontiguousarray(x.transpose(1, 0, 2))).transpose(1, 0, 2)
    assert np.max(np.abs(stepped - reference)) < 1e-4


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


def test_feature_names_that_disagree_with_the_module_are_refused_naming_its_width(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A calibration CSV with 4 numeric columns for a module that takes 5: exit 2, and the line says 5."""
    (tmp_path / "normal.csv").write_text("a;b;c;d\n" + "\n".join(f"{i};{i % 3};{i % 5};{i % 7}" for i in range(60)))
    spec = f"{EXAMPLES / 'input_stems.py'}:StemForecaster"
    args = ["--model", spec, "--weights", str(EXAMPLES / "stem.pt"), "--target", "cpu-fp32"]
    assert main(["export", *args, "--calibration", str(tmp_path / "normal.csv"), "--out", str(tmp_path / "a")]) == 2
    assert "the module itself takes 5 inputs (declared by stem" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
