"""One PNG per stream: sensor traces, the score against its threshold, our alert
intervals and, when known, the true anomaly labels.

matplotlib is imported inside `plot_stream` (with the Agg backend, no display needed),
so importing this module costs nothing on a gateway that never plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_ALERT = "#e8590c"
_LABEL = "#c92a2a"


@dataclass(frozen=True)
class StreamTrace:
    """Everything one stream's plot shows. Arrays share the time axis [T]."""

    name: str
    values: np.ndarray
    """float [T, F] raw sensor values."""
    features: Sequence[str]
    scores: np.ndarray
    """float [T] the runtime's per-step score (NaN where none, e.g. the first step)."""
    threshold: float | np.ndarray
    """The alert threshold: one value, or float [T] when it changes over time."""
    alerts: np.ndarray
    """bool [T]: True while an alert is raised."""
    labels: np.ndarray | None = None
    """0/1 [T] true anomaly labels, when known."""
    ts: np.ndarray | None = None
    """float64 [T] seconds since the epoch; None plots against the step index."""
    note: str = ""
    """A line under the title (model, metrics)."""
    split_at: int | None = None
    """Row where evaluation starts (rows before it trained the model): a dashed line."""


def intervals(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the runs of True in a bool [T] array."""
    f = np.asarray(flags, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], f, [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=False))


def _shade(ax: Axes, x: np.ndarray, flags: np.ndarray, color: str, alpha: float) -> None:
    for start, end in intervals(flags):
        ax.axvspan(x[start], x[min(end, len(x) - 1)], color=color, alpha=alpha, lw=0)


def plot_stream(trace: StreamTrace, path: Path | str, *, dpi: int = 90) -> Path:
    """Write trace as a PNG at `path` (parent folders created); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(trace.values, dtype=np.float64)
    n_feat = values.shape[1]
    if trace.ts is not None:
        x = (np.asarray(trace.ts, dtype=np.float64) - float(trace.ts[0])) / 60.0
        xlabel = "minutes since the first sample"
    else:
        x = np.arange(len(values), dtype=np.float64)
        xlabel = "step"
    heights = [1.0] * n_feat + [2.2, 0.6]
    fig, axes = plt.subplots(
        n_feat + 2, 1, figsize=(13, 1.05 * n_feat + 4.2), sharex=True, gridspec_kw={"height_ratios": heights}
    )
    labels = None if trace.labels is None else np.asarray(trace.labels).astype(bool)
    alerts = np.asarray(trace.alerts, dtype=bool)
    for ax in axes[: n_feat + 1]:
        if trace.split_at is not None and 0 < trace.split_at < len(x):
            ax.axvline(x[trace.split_at], color="grey", ls="--", lw=0.8)
    if trace.split_at is not None and 0 < trace.split_at < len(x):
        axes[0].annotate(
            "training | test",
            (x[trace.split_at], 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize=7,
            color="grey",
        )
    for i in range(n_feat):
        ax = axes[i]
        if labels is not None:
            _shade(ax, x, labels, _LABEL, 0.10)
        _shade(ax, x, alerts, _ALERT, 0.12)
        ax.plot(x, values[:, i], lw=0.7, color="#1c7ed6")
        ax.set_ylabel(trace.features[i], rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.margins(x=0)

    ax = axes[n_feat]
    scores = np.asarray(trace.scores, dtype=np.float64)
    threshold = np.broadcast_to(np.asarray(trace.threshold, dtype=np.float64), scores.shape)
    _shade(ax, x, alerts, _ALERT, 0.15)
    ax.plot(x, scores, lw=0.8, color="black", label="score")
    ax.plot(x, threshold, lw=1.0, color=_ALERT, ls="--", label="threshold")
    finite = scores[np.isfinite(scores) & (scores > 0)]
    # Scores span decades (a failure is 100x normal): a log axis keeps both readable.
    if finite.size and finite.max() / max(np.median(finite), 1e-12) > 50:
        ax.set_yscale("log")
    ax.set_ylabel("score", rotation=0, ha="right", va="center", fontsize=8)
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    ax.tick_params(labelsize=7)

    ax = axes[n_feat + 1]
    rows = [("alert", alerts, _ALERT)] + ([("label", labels, _LABEL)] if labels is not None else [])
    for j, (_, flags, color) in enumerate(rows):
        for start, end in intervals(flags):
            ax.axvspan(
                x[start], x[min(end, len(x) - 1)], ymin=j / len(rows) + 0.1, ymax=(j + 1) / len(rows) - 0.1, color=color
            )
    ax.set_yticks([(j + 0.5) / len(rows) for j in range(len(rows))], [r[0] for r in rows], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)

    title = trace.name + (f"\n{trace.note}" if trace.note else "")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(h_pad=0.2)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
