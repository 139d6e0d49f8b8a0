"""The demo's live output: one aligned line per event, from whichever thread saw it.

Three threads print (the main thread, the publisher's pacing loop, paho's callback for
alerts), so every line goes out whole under one lock.

    wall clock   elapsed  machine  event     sim t   detail
    09:27:07.1      9.5s  pump-3   RAISED    t=265s  score 4.35 > 2.85, latency 35 ms; top: ...
"""

from __future__ import annotations

import math
import sys
import threading
import time

import numpy as np

from runtime.tools.demo.watch import SeenAlert


def _clock() -> str:
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 10) % 10}"


class Console:
    def __init__(self, started: float) -> None:
        self.started = started
        """time.monotonic() when the demo started."""
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, text: str = "") -> None:
        with self._lock:
            print(text, flush=True)

    def error(self, text: str) -> None:
        with self._lock:
            print(text, file=sys.stderr, flush=True)

    def header(self) -> None:
        self.line(f"{'wall clock':<10} {'elapsed':>8}  {'machine':<8} {'event':<9} {'sim t':<7} detail")

    def event(self, machine: str, what: str, sim_s: int | None, detail: str) -> None:
        sim = "" if sim_s is None else f"t={sim_s}s"
        self.line(f"{_clock():<10} {self.elapsed():7.1f}s  {machine:<8} {what:<9} {sim:<7} {detail}")

    def alert(self, alert: SeenAlert, sent_at: np.ndarray) -> None:
        """One alert; `sent_at[seq]` (time.monotonic(), NaN if unknown) gives its latency: from
        publishing the sample that decided it to receiving the alert."""
        sent = float(sent_at[alert.seq]) if alert.seq is not None and 0 <= alert.seq < len(sent_at) else math.nan
        latency = f", latency {(alert.received - sent) * 1000:.0f} ms" if math.isfinite(sent) else ""
        sign = ">" if alert.score > alert.threshold else "<="
        top = ", ".join(f"{name} {share:.2f}" for name, share in alert.top)
        self.event(
            alert.stream,
            alert.state.upper(),
            alert.seq,
            f"score {alert.score:.2f} {sign} threshold {alert.threshold:.2f}{latency}"
            + (f"; top: {top}" if top else ""),
        )
