"""What `edgewatch score` prints: per stream, the alerts with their spans, the score quantiles and
how many alerts other thresholds would have given.

Pure numpy over a `runtime.engine.replay.Replay`; no ONNX Runtime, no matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from edge_config.schema import AlertPolicy
from runtime.engine.alerts import Alert
from runtime.engine.replay import Replay
from runtime.engine.thresholds import replay_raises

__all__ = ["QUANTILES", "WHAT_IF_FACTORS", "Span", "StreamSummary", "format_summary", "summarize"]

QUANTILES = (0.5, 0.9, 0.99, 0.999)
WHAT_IF_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
"""Multiples of each row's threshold the what-if replays the hysteresis at."""
_NO_SUM = ", without the shift detector"


@dataclass(frozen=True)
class Span:
    """One alert from its `raised` to its `cleared` (rows of the recording, end exclusive)."""

    raised: Alert
    start: int
    end: int
    """Row of the `cleared`, or the row count when still open at the end."""
    cleared: bool
    peak: float
    """Highest score in [start, end)."""
    updates: int


@dataclass(frozen=True)
class StreamSummary:
    stream: str
    rows: int
    warm: int
    """Rows the tracker judged (finite score, past warm-up)."""
    spans: tuple[Span, ...]
    quantiles: tuple[float, ...]
    """Of the warm rows' scores, at QUANTILES (NaN when none)."""
    peak: float
    threshold: float
    """The threshold at the last row."""
    above: int
    """Warm rows above their threshold."""
    what_if: tuple[int, ...]
    """Alerts at each of WHAT_IF_FACTORS x the row's threshold (the scores taken as they were; the
    per-step threshold's hysteresis only: the shift detector's sum is not replayed)."""


def _spans(result: Replay) -> tuple[Span, ...]:
    spans: list[Span] = []
    opened: Alert | None = None
    updates = 0
    rows = len(result.scores)
    for alert in result.alerts:
        if alert.state == "raised":
            opened, updates = alert, 0
        elif alert.state == "update":
            updates += 1
        elif opened is not None:
            spans.append(_span(result, opened, alert.seq if alert.seq is not None else rows, True, updates))
            opened = None
    if opened is not None:
        spans.append(_span(result, opened, rows, False, updates))
    return tuple(spans)


def _span(result: Replay, raised: Alert, end: int, cleared: bool, updates: int) -> Span:
    start = raised.seq or 0
    window = result.scores[start : max(end, start + 1)]
    peak = float(np.nanmax(window)) if np.isfinite(window).any() else raised.score
    return Span(raised, start, end, cleared, peak, updates)


def summarize(stream: str, result: Replay, policy: AlertPolicy) -> StreamSummary:
    scores, thresholds = result.scores, result.thresholds
    index = np.arange(len(scores))
    warm = (index >= policy.warmup_steps) & np.isfinite(scores)
    judged = scores[warm]
    quantiles = tuple(float(np.quantile(judged, q)) if judged.size else float("nan") for q in QUANTILES)
    # The hysteresis at a scaled threshold = at the fixed factor on score / threshold.
    ratio = np.where(np.isfinite(scores), scores / thresholds, np.nan)
    return StreamSummary(
        stream=stream,
        rows=len(scores),
        warm=int(warm.sum()),
        spans=_spans(result),
        quantiles=quantiles,
        peak=float(judged.max()) if judged.size else float("nan"),
        threshold=float(thresholds[-1]) if len(thresholds) else float("nan"),
        above=int(np.count_nonzero(judged > thresholds[warm])),
        what_if=tuple(replay_raises(ratio, factor, policy) for factor in WHAT_IF_FACTORS),
    )


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _span_line(n: int, span: Span) -> str:
    a = span.raised
    end = f"cleared at row {span.end}" if span.cleared else "still open at the end"
    top = "; ".join(
        f"{f.feature} {f.observed:.4g} vs {f.expected:.4g} expected ({f.direction})"
        if f.observed is not None and f.expected is not None
        else f"{f.feature} share {f.contribution:.3g}"
        for f in a.top_features
    )
    return (
        f"    #{n} rows {span.start}-{span.end} ({span.end - span.start} rows): raised at row {span.start} "
        f"({_when(a.ts)} UTC), {end}; score {a.score:.3g} at raise, peak {span.peak:.3g} against "
        f"{a.threshold:.3g}; {a.severity}; {span.updates} update(s)"
        + ("; raised by the shift detector (the score stayed above its own level)" if a.shift is not None else "")
        + (f"\n       top: {top}" if top else "")
    )


def format_summary(summaries: Sequence[StreamSummary]) -> str:
    """The text `edgewatch score` prints after its header."""
    lines: list[str] = []
    for s in summaries:
        lines.append(f"stream {s.stream}: {s.rows} rows, {s.warm} judged (after warm-up), {len(s.spans)} alert(s)")
        lines.extend(_span_line(i + 1, span) for i, span in enumerate(s.spans))
        q = "  ".join(f"p{100 * level:g} {value:.3g}" for level, value in zip(QUANTILES, s.quantiles, strict=True))
        lines.append(
            f"  score: {q}  max {s.peak:.3g}; threshold {s.threshold:.3g} at the last row; "
            f"{s.above} judged rows above their threshold"
        )
        what_if = ", ".join(f"x{f:g}: {n}" for f, n in zip(WHAT_IF_FACTORS, s.what_if, strict=True))
        lines.append(f"  alerts at other thresholds (x the one used): {what_if} (per-step threshold only{_NO_SUM})")
    if len(summaries) > 1:
        totals = [sum(s.what_if[i] for s in summaries) for i in range(len(WHAT_IF_FACTORS))]
        what_if = ", ".join(f"x{f:g}: {n}" for f, n in zip(WHAT_IF_FACTORS, totals, strict=True))
        alerted = sum(1 for s in summaries if s.spans)
        lines.append(
            f"all {len(summaries)} streams: {sum(len(s.spans) for s in summaries)} alert(s) on {alerted} stream(s); "
            f"at other thresholds: {what_if} (per-step threshold only{_NO_SUM})"
        )
    return "\n".join(lines)
