from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.tools.local_broker import Broker, start_broker

SKAB_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "skab"


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
