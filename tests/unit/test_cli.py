"""The dispatcher: every command registers, and a missing optional dependency is one line."""

from __future__ import annotations

import builtins
import subprocess
import sys

import pytest

from runtime import cli


def test_every_command_registers() -> None:
    parser = cli.build_parser()
    names = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {"export", "train", "eval", "config", "targets", "serve", "alerts", "replay", "demo", "bench"} <= names


def test_missing_torch_is_one_line_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def no_torch(name: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_torch)
    rc = cli.main(
        ["export", "--model", "m.py:M", "--weights", "w.pt", "--target", "cpu-int8", "--out", "/nonexistent/x"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1] == (
        "edgewatch export: error: torch is not installed here; "
        "install the export extra: pip install torch==2.13.0 'edgewatch[export]'"
    )


def test_help_runs_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "serve" in out.stdout
