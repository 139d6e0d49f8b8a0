"""Every refusal of `edgewatch export`: one clear line, the right exit code, no output folder left."""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import pytest

from runtime.cli import main
from tests.support.export_cases import save_weights, write_models

pytestmark = pytest.mark.torch


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return write_models(tmp_path)


def export_err(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["export", *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("edgewatch export: error:")]
    assert len(lines) == (0 if rc == 0 else 1), err  # exactly one error line
    return rc, lines[0] if lines else ""


def nothing_left(out: Path) -> bool:
    """Neither --out nor a temporary sibling of it exists."""
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize(
    ("model", "target", "expected"),
    [
        ("Bidirectional", "cpu-fp32", ("bidirectional", "rnn")),
        ("Projected", "cpu-fp32", ("proj_size=4",)),
        ("Twice", "cpu-fp32", ("called 2 times",)),
        # caught by gate 2: the model's output depends on more than the past
        ("NonCausal", "cpu-int8", ("cannot be streamed", "step-by-step")),
    ],
    ids=["bidirectional", "proj-size", "rnn-called-twice", "non-causal"],
)
def test_a_module_that_cannot_stream_is_refused_with_exit_2(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, target: str, expected: tuple[str, ...]
) -> None:
    save_weights(models, model, tmp_path / "w.pt")
    out = tmp_path / "art"
    rc, line = export_err(
        capsys,
        "--model",
        f"{models}:{model}",
        "--weights",
        str(tmp_path / "w.pt"),
        "--target",
        target,
        "--out",
        str(out),
    )
    assert rc == 2
    for text in expected:
        assert text in line
    assert nothing_left(out)


def test_mismatched_weights_list_the_keys(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_weights(models, "Seq", tmp_path / "w.pt", layers=2)
    out = tmp_path / "art"
    rc, line = export_err(
        capsys,
        "--model",
        f"{models}:Seq",
        "--weights",
        str(tmp_path / "w.pt"),
        "--target",
        "cpu-fp32",
        "--out",
        str(out),
    )
    assert rc == 2
    assert "unexpected keys: rnn.bias_hh_l1, rnn.bias_ih_l1, rnn.weight_hh_l1, rnn.weight_ih_l1" in line
    assert nothing_left(out)
    save_weights(models, "Seq", tmp_path / "h.pt", hidden=4)
    rc, line = export_err(
        capsys,
        "--model",
        f"{models}:Seq",
        "--weights",
        str(tmp_path / "h.pt"),
        "--target",
        "cpu-fp32",
        "--out",
        str(out),
    )
    assert rc == 2
    assert "shape mismatch" in line
    assert "rnn.weight_ih_l0 (16, 3) vs (32, 3)" in line


class _Payload:
    """Unpickling this would create a file: the proof that no code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_payload_weights_are_refused_without_running_them(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    marker = tmp_path / "payload-ran"
    torch.save({"rnn.weight_ih_l0": _Payload(marker)}, tmp_path / "evil.pt")
    out = tmp_path / "art"
    rc, line = export_err(
        capsys,
        "--model",
        f"{models}:Seq",
        "--weights",
        str(tmp_path / "evil.pt"),
        "--target",
        "cpu-fp32",
        "--out",
        str(out),
    )
    assert rc == 2
    assert "weights file holds a pickle payload" in line
    assert "(it references getattr)" in line
    assert not marker.exists()
    assert nothing_left(out)


def test_unknown_target_and_npu_without_calibration(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_weights(models, "Seq", tmp_path / "w.pt")
    out = tmp_path / "art"
    common = ["--model", f"{models}:Seq", "--weights", str(tmp_path / "w.pt"), "--out", str(out)]
    rc, line = export_err(capsys, *common, "--target", "tpu-int4")
    assert rc == 2
    assert "unknown export target 'tpu-int4'" in line
    assert "cpu-int8" in line
    rc, line = export_err(capsys, *common, "--target", "npu-int8")
    assert rc == 2
    assert "npu-int8 needs --calibration" in line
    assert nothing_left(out)


def test_failed_gate_exits_1_and_writes_nothing(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_weights(models, "Seq", tmp_path / "w.pt")
    out = tmp_path / "art"
    rc, line = export_err(
        capsys,
        "--model",
        f"{models}:Seq",
        "--weights",
        str(tmp_path / "w.pt"),
        "--target",
        "cpu-int8",
        "--out",
        str(out),
        "--atol-quant",
        "1e-9",
    )
    assert rc == 1
    assert "parity gate quantized-vs-float failed" in line
    assert "add --calibration CSV (normal operating data)" in line  # without --calibration: the hint
    assert nothing_left(out)


def test_existing_out_needs_force_and_is_replaced_whole(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_weights(models, "Seq", tmp_path / "w.pt")
    out = tmp_path / "art"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    common = [
        "--model",
        f"{models}:Seq",
        "--weights",
        str(tmp_path / "w.pt"),
        "--target",
        "cpu-fp32",
        "--out",
        str(out),
    ]
    rc, line = export_err(capsys, *common)
    assert rc == 2
    assert "--force" in line
    assert (out / "stale.txt").exists()
    rc, _ = export_err(capsys, *common, "--force")
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".art")] == []


def test_bad_inputs_are_exit_2(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_weights(models, "Seq", tmp_path / "w.pt")
    out = tmp_path / "art"
    common = ["--weights", str(tmp_path / "w.pt"), "--target", "cpu-fp32", "--out", str(out)]
    assert export_err(capsys, "--model", f"{models}:Nope", *common)[0] == 2
    assert export_err(capsys, "--model", f"{tmp_path / 'missing.py'}:Seq", *common)[0] == 2
    rc, line = export_err(capsys, "--model", f"{models}:Seq", "--model-kwargs", "[1]", *common)
    assert rc == 2
    assert "JSON object" in line
    rc, line = export_err(
        capsys, "--model", f"{models}:Seq", "--model-kwargs", json.dumps({"hidden": 8}), "--features", "a,b", *common
    )
    assert rc == 2
    assert "[batch, time, 2]" in line
    rc, line = export_err(capsys, "--model", f"{models}:Seq", "--steps", "500", *common)
    assert rc == 2
    assert "at least 2000" in line
    (tmp_path / "norm.json").write_text(json.dumps({"features": ["a", "b", "c"], "mean": [0, 0, 0], "std": [1, 0, 1]}))
    rc, line = export_err(capsys, "--model", f"{models}:Seq", "--normalization", str(tmp_path / "norm.json"), *common)
    assert rc == 2
    assert "std must be finite and > 0" in line
    assert nothing_left(out)


def test_a_failed_gate_names_what_to_try() -> None:
    from edge_config.errors import ParityError
    from edge_config.manifest import ParityResult
    from exporter.gates import check_gates

    failed = ParityResult(gate="quantized-vs-float", metric="max abs error", value=0.112, tolerance=0.1, passed=False)
    with pytest.raises(ParityError, match="add --calibration CSV"):
        check_gates([failed], lambda line: None, hint="add --calibration CSV (normal operating data)")


STREAMING_REFUSALS = '''
import torch
from torch import nn


class SymmetricConvStem(nn.Module):
    """A Conv1d stem padded on both sides: each step's input mixes in the next sample."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, kernel_size=3, padding=1)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.rnn(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return self.head(y)


class AttentionOverTime(nn.Module):
    """Softmax attention over every step of the sequence, added to each step's output."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 8, batch_first=True)
        self.score = nn.Linear(8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y, _ = self.rnn(x)
        context = (torch.softmax(self.score(y), dim=1) * y).sum(dim=1, keepdim=True)
        return self.head(y + context)


class ReversedCellLoop(nn.Module):
    """An LSTMCell loop that runs backwards in time: it reads the future."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(3, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        state = None
        outputs = []
        for t in reversed(range(x.shape[1])):
            state = self.cell(x[:, t], state)
            outputs.insert(0, self.head(state[0]))
        return torch.stack(outputs, dim=1)


class CellTwicePerStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(3, 3)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], 3)
        outputs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], self.cell(x[:, t], h))
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class StepWithUndeclaredState(nn.Module):
    """Declares h but its step returns h and c."""

    def __init__(self):
        super().__init__()
        self.state_sizes = {"h": 4}
        self.lin = nn.Linear(7, 4)

    def step(self, x_t, state):
        h = torch.tanh(self.lin(torch.cat([x_t, state["h"]], dim=1)))
        return h[:, :3], {"h": h, "c": h}

    def forward(self, x):
        state = {"h": x.new_zeros(x.shape[0], 4)}
        outputs = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            outputs.append(y)
        return torch.stack(outputs, dim=1)


class DeclaredLSTMCell(nn.Module):
    """A plain LSTM cell (torch's gate order i, f, g, o) that declares its ONNX LSTM weights.
    head_inside: its step returns a head's output, not h. torch_order: the weights are declared
    in torch's gate order instead of ONNX's i, o, f, c."""

    def __init__(self, head_inside=False, torch_order=False):
        super().__init__()
        self.state_sizes = {"h": 4, "c": 4}
        self.lin = nn.Linear(3 + 4, 16)
        self.head = nn.Linear(4, 3)
        self.head_inside, self.torch_order = head_inside, torch_order

    def step(self, x_t, state):
        z = self.lin(torch.cat([x_t, state["h"]], dim=1))
        i, f, g, o = torch.sigmoid(z[:, :4]), torch.sigmoid(z[:, 4:8]), torch.tanh(z[:, 8:12]), torch.sigmoid(z[:, 12:])
        c = f * state["c"] + i * g
        h = o * torch.tanh(c)
        return (self.head(h) if self.head_inside else h), {"h": h, "c": c}

    def onnx_lstm_weights(self):
        w, b = self.lin.weight, self.lin.bias
        if not self.torch_order:
            w = torch.cat([w[:4], w[12:], w[4:8], w[8:12]])
            b = torch.cat([b[:4], b[12:], b[4:8], b[8:12]])
        return {"W": w[:, :3], "R": w[:, 3:], "B": torch.cat([b, torch.zeros(16)])}

    def forward(self, x):
        state = {"h": x.new_zeros(x.shape[0], 4), "c": x.new_zeros(x.shape[0], 4)}
        outputs = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            outputs.append(y if self.head_inside else self.head(y))
        return torch.stack(outputs, dim=1)


def head_inside_fused_cell():
    return DeclaredLSTMCell(head_inside=True)


def wrong_gate_order():
    return DeclaredLSTMCell(torch_order=True)
'''


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("SymmetricConvStem", ("cannot be streamed", "step-by-step")),
        ("AttentionOverTime", ("cannot be streamed", "step-by-step")),
        ("ReversedCellLoop", ("cannot be streamed", "step-by-step")),
        ("CellTwicePerStep", ("cell is called 22 times for 11 time steps", "once per time step")),
        ("StepWithUndeclaredState", ("step() returned state ['c', 'h']", "declares ['h']")),
        ("head_inside_fused_cell", ("declares onnx_lstm_weights()", "must return the new h")),
    ],
    ids=[
        "non-causal-conv1d-stem",
        "attention-over-time",
        "cell-loop-reading-the-future",
        "cell-twice",
        "undeclared",
        "fused-cell-head-inside",
    ],
)
def test_a_stem_or_cell_that_cannot_stream_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, expected: tuple[str, ...]
) -> None:
    path = tmp_path / "streaming_refusals.py"
    path.write_text(STREAMING_REFUSALS)
    save_weights(path, model, tmp_path / "w.pt")
    out = tmp_path / "art"
    args = ["--model", f"{path}:{model}", "--weights", str(tmp_path / "w.pt"), "--target", "cpu-fp32"]
    rc, line = export_err(capsys, *args, "--out", str(out))
    assert rc == 2
    for text in expected:
        assert text in line
    assert nothing_left(out)


def test_onnx_lstm_weights_that_do_not_compute_the_cell_fail_gate_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A declared ONNX LSTM whose gate order is torch's, not ONNX's: the graph is not the cell, and
    gate 1 (the fused node vs the user's own step) says so; nothing is written."""
    path = tmp_path / "streaming_refusals.py"
    path.write_text(STREAMING_REFUSALS)
    save_weights(path, "wrong_gate_order", tmp_path / "w.pt")
    out = tmp_path / "art"
    args = ["--model", f"{path}:wrong_gate_order", "--weights", str(tmp_path / "w.pt"), "--target", "cpu-fp32"]
    rc, line = export_err(capsys, *args, "--out", str(out))
    assert rc == 1
    assert "parity gate onnx-vs-torch failed" in line
    assert nothing_left(out)
