"""The demo's pictures: per plotted machine, its sensors, the score against the threshold, the
alert intervals the daemon published and the true failure interval (runtime.tools.plots).

The daemon publishes alerts, not a score per sample, so the score curve is recomputed here:
the same artifact and model config, through the same Engine, one sample per message. The
alert band is not recomputed: it is what came over MQTT.

matplotlib is optional on a gateway (`edgewatch[plots]`): without it the demo skips the
pictures with one line and still runs and checks everything else.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge_config.schema import GatewayConfig
from runtime.tools.demo.simulator import SENSORS, Machine, Recording
from runtime.tools.demo.watch import SeenAlert

PLOTS_MISSING = "plots skipped: matplotlib is not installed (pip install 'edgewatch[plots]')"


def plots_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def alert_flags(alerts: Sequence[SeenAlert], steps: int) -> np.ndarray:
    """bool [steps]: True from a `raised` alert's seq up to the seq of the `cleared` closing it."""
    flags = np.zeros(steps, dtype=bool)
    opened: int | None = None
    for alert in alerts:
        if alert.seq is None:
            continue
        if alert.state == "raised":
            opened = alert.seq
        elif alert.state == "cleared" and opened is not None:
            flags[opened : alert.seq] = True
            opened = None
    if opened is not None:
        flags[opened:] = True
    return flags


def replay_scores(config: GatewayConfig, model_name: str, recordings: Mapping[str, Recording]) -> dict[str, np.ndarray]:
    """float64 [T] score per sample of each recording, from a fresh Engine built as the daemon
    builds its own, through the one replay path (runtime.engine.replay; NaN where the scorer has
    no prediction yet: the first sample)."""
    from runtime.engine.replay import RecordedClock, replay
    from runtime.engine.replay import Recording as Samples
    from runtime.model.loading import load_model

    clock = RecordedClock()
    engine = load_model(model_name, config, clock=clock).engine
    steps = min(len(r.values) for r in recordings.values())
    chosen = {name: Samples(rec.values, rec.ts) for name, rec in recordings.items()}
    out = replay(engine, chosen, stop=steps, clock=clock)
    return {name: r.scores.astype(np.float64) for name, r in out.items()}


def _title(machine: Machine, flags: np.ndarray) -> str:
    f = machine.failure
    raised = np.flatnonzero(flags)
    first = f"first alert at t={raised[0]}s" if raised.size else "no alert"
    if f is None:
        return f"{machine.name}: healthy — {first}"
    delay = f", {raised[0] - f.start_s} s after the onset" if raised.size else ""
    return f"{machine.name}: {f.kind.replace('-', ' ')} from t={f.start_s}s (label) — {first}{delay} (alert)"


def write_plots(
    out: Path,
    config: GatewayConfig,
    model_name: str,
    machines: Sequence[Machine],
    recordings: Mapping[str, Recording],
    alerts: Sequence[SeenAlert],
    threshold: float,
) -> list[Path]:
    """One PNG per machine in `machines` (out/<name>.png); returns their paths."""
    from runtime.tools.plots import StreamTrace, plot_stream

    chosen = {m.name: recordings[m.name] for m in machines}
    scores = replay_scores(config, model_name, chosen)
    paths = []
    for machine in machines:
        rec = recordings[machine.name]
        flags = alert_flags([a for a in alerts if a.stream == machine.name], len(rec.values))
        note = (
            f"{model_name} (int8), threshold {threshold:.2f} on the score rescaled by the pump's learned errors\n"
            "orange: alerts the daemon published on MQTT; score recomputed by the same engine"
        )
        trace = StreamTrace(
            _title(machine, flags),
            rec.values,
            SENSORS,
            scores[machine.name],
            threshold,
            flags,
            labels=rec.labels,
            ts=rec.ts,
            note=note,
        )
        paths.append(plot_stream(trace, out / f"{machine.name}.png"))
    return paths
