"""Shared fixtures, the markers applied by folder, and the skips that say what is missing.

Markers (declared in pyproject.toml):
    mqtt      needs the mosquitto binary       tests/mqtt/**, tests/faults/**, any test using `broker`
    torch     needs torch (the export extra)   tests/export/** that build torch models; others mark it
    openvino  needs onnxruntime-openvino       runs in .venv-openvino (EDGEWATCH_EXPECT_PROVIDER fails it there)
    slow      longer fault/evaluation tests    tests/faults/**; run with --slow, EDGEWATCH_SLOW=1 or -m slow
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.tools.local_broker import Broker, start_broker

SKAB_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "skab"

_TESTS = Path(__file__).resolve().parent
_OPENVINO = "OpenVINOExecutionProvider"
_SLOW_REASON = "slow: run with --slow or EDGEWATCH_SLOW=1"
# Test modules under tests/export that build torch models through this helper need torch throughout.
_TORCH_HELPER = "tests.support.export_cases"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False, help="also run the tests marked slow")


def _folder_markers(path: Path) -> tuple[str, ...]:
    """The markers every test under `path`'s folder gets: the folder says what a test needs."""
    try:
        folder = path.resolve().relative_to(_TESTS).parts[0]
    except (ValueError, IndexError):
        return ()
    return {"mqtt": ("mqtt",), "faults": ("mqtt", "slow")}.get(folder, ())


def _builds_torch_models(item: pytest.Item) -> bool:
    """A tests/export test whose module uses the torch model helper (which imports torch when run)."""
    module = getattr(item, "module", None)
    if module is None or item.path.resolve().parent != _TESTS / "export":
        return False
    return any(getattr(value, "__module__", None) == _TORCH_HELPER for value in vars(module).values())


def _have_mosquitto() -> bool:
    # Debian installs it in /usr/sbin, outside a user's PATH (runtime.tools.local_broker looks there too).
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


def _have_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def _have_openvino() -> bool:
    import onnxruntime as ort

    return _OPENVINO in ort.get_available_providers()


def _run_slow(config: pytest.Config) -> bool:
    # `-m slow` (docs/RELIABILITY.md runs the fault suite so) asks for them too; `-m "not slow"` does not.
    asked = re.search(r"(?<!not )\bslow\b", config.getoption("markexpr") or "") is not None
    return asked or bool(config.getoption("--slow")) or os.environ.get("EDGEWATCH_SLOW") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in _folder_markers(item.path):
            item.add_marker(name)
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker("mqtt")
        if _builds_torch_models(item):
            item.add_marker("torch")

    def marked(name: str) -> list[pytest.Item]:
        return [item for item in items if item.get_closest_marker(name) is not None]

    skips: list[tuple[list[pytest.Item], str]] = []
    if not _run_slow(config):
        skips.append((marked("slow"), _SLOW_REASON))
    if (mqtt := marked("mqtt")) and not _have_mosquitto():
        skips.append((mqtt, "mqtt: mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)"))
    if (needs_torch := marked("torch")) and not _have_torch():
        skips.append((needs_torch, "torch: not installed (pip install torch==2.13.0 'edgewatch[export]')"))
    # In the OpenVINO environment (.ci/test sets EDGEWATCH_EXPECT_PROVIDER) a missing provider is a broken
    # install: the tests run and fail rather than skip.
    expect_openvino = os.environ.get("EDGEWATCH_EXPECT_PROVIDER") == _OPENVINO
    if (openvino := marked("openvino")) and not expect_openvino and not _have_openvino():
        skips.append((openvino, "openvino: needs onnxruntime-openvino (.venv-openvino)"))
    for skipped, reason in skips:
        for item in skipped:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free 127.0.0.1 port, stopped after the test."""
    b = start_broker(tmp_path / "broker")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def skab_dir() -> Path:
    path = Path(os.environ.get("EDGEWATCH_SKAB_DIR", SKAB_DIR))
    if not (path / "anomaly-free" / "anomaly-free.csv").exists():
        pytest.skip(f"SKAB data not found at {path} (set EDGEWATCH_SKAB_DIR)")
    return path
