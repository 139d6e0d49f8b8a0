"""The reference forecaster and `edgewatch train`: a tiny real training run, then the printed
export command run as printed."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_config.errors import ExportInputError
from exporter.training.fit import TrainConfig, TrainingError, fit_normalization, make_windows
from runtime.cli import main


def _signal(rows: int, seed: int = 0) -> np.ndarray:
    """Two channels: a slow sine (smooth) and white noise around a level (noisy)."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    smooth = 50 + 3 * np.sin(t / 25) + rng.normal(0, 0.05, rows)
    noisy = 10 + rng.normal(0, 1, rows)
    return np.stack([smooth, noisy], axis=1).astype(np.float32)


def test_normalization_floors_a_constant_feature() -> None:
    data = np.stack([np.arange(100.0), np.full(100, 230.0)], axis=1)
    norm = fit_normalization([data], ["a", "b"])
    assert norm.std[1] == pytest.approx(0.23)  # 1e-3 of the magnitude, not 0
    assert norm.apply(data)[:, 0].mean() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(TrainingError):
        fit_normalization([data], ["a"])


def test_windows_cover_the_tail_and_never_cross_files() -> None:
    a = np.arange(30, dtype=np.float32)[:, None]
    b = 1000 + np.arange(12, dtype=np.float32)[:, None]
    w = make_windows([a, b], window=8, stride=5)
    assert w.shape[1:] == (9, 1)
    assert w[:, -1, 0].max() == 1011
    assert 29 in w[:, -1, 0]
    assert not ((w < 1000).any(axis=1) & (w >= 1000).any(axis=1)).any()


def test_config_is_validated() -> None:
    with pytest.raises(TrainingError):
        TrainConfig(window=8, burn_in=8)
    with pytest.raises(TrainingError):
        TrainConfig(val_fraction=1.0)


@pytest.mark.torch
def test_tiny_training_run_learns_and_starts_gates_at_autocorrelation() -> None:
    import torch

    from exporter.training.fit import train_forecaster
    from exporter.training.reference_model import ForecastLSTM

    data = _signal(600)
    config = TrainConfig(hidden=8, layers=1, epochs=8, window=32, lr=1e-2, val_fraction=0.2)
    result = train_forecaster([data], ["smooth", "noisy"], config)
    assert len(result.losses) == 8
    assert len(result.val_losses) == 8
    assert result.val_losses[result.best_epoch - 1] == min(result.val_losses)
    # The model beats predicting the mean (MSE 1 in normalized units) on held-out rows.
    assert min(result.val_losses) < 0.8
    kwargs: dict[str, Any] = dict(result.kwargs)  # ForecastLSTM's mixed int/bool parameters
    model = ForecastLSTM(**kwargs)
    model.load_state_dict(result.state_dict)
    gate = torch.sigmoid(model.gate_logit).detach().numpy()
    assert gate[0] > 0.8
    assert gate[1] < 0.3
    x = torch.from_numpy(result.normalization.apply(data))[None]
    with torch.no_grad():
        whole = model(x)
        first = model(x[:, :100])
    assert torch.allclose(whole[:, :100], first, atol=1e-5)  # causal: the future changes nothing


@pytest.mark.torch
def test_train_cli_writes_files_and_a_working_export_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "normal.csv"
    data = _signal(400)
    lines = ["time;smooth;noisy"] + [
        f"2024-01-01 00:{i // 60:02d}:{i % 60:02d};{a};{b}" for i, (a, b) in enumerate(data)
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    assert (
        main(["train", "--data", str(csv_path), "--out", str(out), "--hidden", "8", "--layers", "1", "--epochs", "3"])
        == 0
    )
    printed = capsys.readouterr().out
    info = json.loads((out / "model.json").read_text())
    assert info["model"] == "exporter.training.reference_model:ForecastLSTM"
    assert info["features"] == ["smooth", "noisy"]  # the datetime column is not a feature
    assert json.loads((out / "normalization.json").read_text())["features"] == ["smooth", "noisy"]
    command = printed.strip().splitlines()[-1].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["edgewatch", "export"]
    # The last 20% of the file (80 rows) were kept out of training and are what the export calibrates on.
    calibration = out / "calibration.csv"
    assert argv[argv.index("--calibration") + 1] == str(calibration)
    rows = calibration.read_text().splitlines()
    assert rows[0] == "smooth;noisy"
    assert len(rows) - 1 == 80
    np.testing.assert_allclose([float(v) for v in rows[1].split(";")], data[320], rtol=1e-6)
    assert main(argv[1:]) == 0
    manifest = json.loads((out / "artifact" / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    assert manifest["features"]["names"] == ["smooth", "noisy"]
    assert manifest["calibration"]["threshold"] > 0


def test_calibration_split_keeps_the_tail_of_each_file_out() -> None:
    from exporter.training.command import split_calibration

    a, b = _signal(100), _signal(50, seed=1)
    heads, tails = split_calibration([a, b], 0.2)
    assert [len(h) for h in heads] == [80, 40]
    assert [len(t) for t in tails] == [20, 10]
    np.testing.assert_array_equal(np.concatenate([heads[0], tails[0]]), a)
    assert split_calibration([a], 0.0)[1] == []
    with pytest.raises(ExportInputError):
        split_calibration([a], 1.0)


def _csv(path: Path, data: np.ndarray) -> Path:
    path.write_text("a;b\n" + "".join(f"{x};{y}\n" for x, y in data))
    return path


def test_export_inputs_warn_without_normalization_and_on_shifted_calibration(tmp_path: Path) -> None:
    from exporter.resolve import SHIFT_LIMIT, resolve_inputs

    bare = resolve_inputs(features=None, normalization=None, calibration=None, default_width=2)
    assert bare.normalization is None
    assert len(bare.warnings) == 1
    assert "no normalization" in bare.warnings[0]

    norm = tmp_path / "norm.json"
    norm.write_text(json.dumps({"features": ["a", "b"], "mean": [0.0, 10.0], "std": [1.0, 2.0]}))
    swing = np.tile([-1.0, 1.0], 100)  # mean 0, std 1
    same = _csv(tmp_path / "same.csv", np.c_[swing, 10 + 2 * swing])
    assert resolve_inputs(features=None, normalization=norm, calibration=same, default_width=2).warnings == ()
    # Feature b's calibration mean sits 5 training stds away (rule: more than SHIFT_LIMIT = 3).
    assert SHIFT_LIMIT == 3.0
    moved = _csv(tmp_path / "moved.csv", np.c_[swing, 20 + 2 * swing])
    (warning,) = resolve_inputs(features=None, normalization=norm, calibration=moved, default_width=2).warnings
    assert "1 feature(s) (b 5.0 std)" in warning
