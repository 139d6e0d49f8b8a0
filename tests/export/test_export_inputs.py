"""The exporter's torch-free parts: calibration CSV, normalization file, feature/task resolution,
the atomic artifact writer, and that `edgewatch export`'s module does not import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_config.errors import ExportError, ExportInputError, UnsupportedModelError
from edge_config.manifest import read_manifest
from exporter.artifact_writer import write_artifact
from exporter.calibration_data import ar1_stream, normalization_from, read_calibration_csv, read_normalization
from exporter.resolve import resolve_inputs, resolve_task
from tests.support.onnx_artifacts import lstm_forecaster_model, write_lstm_artifact


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_calibration_csv_semicolon_with_datetime(tmp_path: Path) -> None:
    rows = "\n".join(f"2020-02-08 13:30:{i:02d};{i};{2 * i};x{i}" for i in range(60))
    csv = write(tmp_path / "c.csv", "datetime;a;b;label\n" + rows + "\n")
    data = read_calibration_csv(csv, None)
    assert data.features == ["a", "b"]
    assert data.values.shape == (60, 2)
    assert data.values.dtype == np.float32
    picked = read_calibration_csv(csv, ["b", "a"])
    assert picked.features == ["b", "a"]
    assert picked.values[5].tolist() == [10.0, 5.0]
    with pytest.raises(ExportInputError, match=r"no column\(s\) \['c'\]"):
        read_calibration_csv(csv, ["a", "c"])


def test_calibration_csv_comma_and_bad_values(tmp_path: Path) -> None:
    good = write(tmp_path / "g.csv", "a,b\n" + "\n".join(f"{i},{i}" for i in range(50)) + "\n")
    assert read_calibration_csv(good, None).values.shape == (50, 2)
    bad = write(tmp_path / "b.csv", "a,b\n" + "\n".join(f"{i},{'nan' if i == 7 else i}" for i in range(50)))
    with pytest.raises(ExportInputError, match="row 9, column 'b'"):
        read_calibration_csv(bad, None)
    short = write(tmp_path / "s.csv", "a\n1\n2\n")
    with pytest.raises(ExportInputError, match="at least 50"):
        read_calibration_csv(short, None)


def test_normalization_file(tmp_path: Path) -> None:
    ok = write(tmp_path / "n.json", json.dumps({"features": ["a", "b"], "mean": [1, 2], "std": [0.5, 3]}))
    nf = read_normalization(ok)
    assert nf.features == ["a", "b"]
    assert nf.normalization.std == [0.5, 3.0]
    for bad in ({"mean": [1], "std": [1, 2]}, {"features": ["a"], "mean": [1], "std": [-1]}, [1, 2]):
        with pytest.raises(ExportInputError):
            read_normalization(write(tmp_path / "bad.json", json.dumps(bad)))


def test_normalization_from_data_leaves_constant_columns_unscaled() -> None:
    values = np.stack([np.arange(10.0), np.full(10, 7.0)], axis=1)
    norm = normalization_from(values)
    assert norm.mean == pytest.approx([4.5, 7.0])
    assert norm.std[0] == pytest.approx(np.std(np.arange(10.0)))
    assert norm.std[1] == 1.0


def test_resolve_inputs_priority_and_conflicts(tmp_path: Path) -> None:
    csv = write(tmp_path / "c.csv", "t;a;b;c\n" + "\n".join(f"x;{i};{i % 7};{i % 3}" for i in range(80)))
    norm = write(tmp_path / "n.json", json.dumps({"features": ["c", "a"], "mean": [0, 0], "std": [1, 1]}))
    r = resolve_inputs(features=None, normalization=norm, calibration=csv, default_width=9)
    assert r.features == ["c", "a"]
    assert r.normalization_source == "file"
    assert r.calibration is not None
    assert r.calibration.values.shape == (80, 2)
    r = resolve_inputs(features=None, normalization=None, calibration=csv, default_width=9)
    assert r.features == ["a", "b", "c"]
    assert r.normalization_source == "calibration"
    r = resolve_inputs(features=None, normalization=None, calibration=None, default_width=2)
    assert r.features == ["f0", "f1"]
    assert r.normalization is None
    with pytest.raises(ExportInputError, match="differ"):
        resolve_inputs(features=["a", "c"], normalization=norm, calibration=None, default_width=2)


def test_resolve_task() -> None:
    assert resolve_task("auto", output_size=8, features=8) == "forecast"
    assert resolve_task("auto", output_size=1, features=8) == "probability"
    assert resolve_task("probability", output_size=2, features=8) == "probability"
    with pytest.raises(ExportInputError, match="--task"):
        resolve_task("auto", output_size=1, features=1)
    with pytest.raises(UnsupportedModelError):
        resolve_task("auto", output_size=3, features=8)
    with pytest.raises(UnsupportedModelError):
        resolve_task("forecast", output_size=1, features=8)


def test_ar1_stream_is_smooth_with_unit_variance() -> None:
    x = ar1_stream(20_000, 3, seed=1)
    assert x.shape == (20_000, 3)
    assert np.allclose(x.std(axis=0), 1.0, atol=0.15)
    lag1 = np.corrcoef(x[:-1, 0], x[1:, 0])[0, 1]
    assert 0.9 < lag1 < 0.99


def test_writer_is_atomic(tmp_path: Path) -> None:
    src = write_lstm_artifact(tmp_path / "src")
    manifest = read_manifest(src)
    model = (src / "model.onnx").read_bytes()
    out = tmp_path / "nested" / "art"
    write_artifact(out, model, manifest, force=False)
    assert read_manifest(out) == manifest
    # bytes that do not match the manifest's sha256: verification fails, nothing is left behind
    other = lstm_forecaster_model(seed=1).SerializeToString()
    with pytest.raises(ExportError, match="verification"):
        write_artifact(tmp_path / "bad", other, manifest, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nested", "src"]
    with pytest.raises(ExportInputError, match="--force"):
        write_artifact(out, model, manifest, force=False)
    # a failed replacement leaves the previous artifact intact
    with pytest.raises(ExportError):
        write_artifact(out, other, manifest, force=True)
    assert (out / "model.onnx").read_bytes() == model
    assert sorted(p.name for p in out.parent.iterdir()) == ["art"]


def test_export_command_module_does_not_import_torch() -> None:
    code = (
        "import argparse, sys, exporter.cli; exporter.cli.register(argparse.ArgumentParser().add_subparsers()); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
