from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.tools.plots import StreamTrace, intervals, plot_stream


def test_intervals() -> None:
    flags = np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool)
    assert intervals(flags) == [(0, 2), (4, 5), (6, 7)]
    assert intervals(np.zeros(3, dtype=bool)) == []


def test_plot_stream_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(300, 3))
    scores = np.abs(rng.normal(size=300))
    scores[0] = np.nan
    scores[150:200] = 80.0  # a failure: the score axis goes logarithmic
    trace = StreamTrace(
        "line-1/pump-3",
        values,
        ["a", "b", "c"],
        scores,
        3.0,
        scores > 3.0,
        labels=(np.arange(300) >= 150).astype(int),
        ts=1.7e9 + np.arange(300.0),
        note="test",
        split_at=100,
    )
    path = plot_stream(trace, tmp_path / "deep" / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert path.stat().st_size > 10_000
