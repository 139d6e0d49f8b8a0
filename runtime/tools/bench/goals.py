"""The issue's goals, judged on figures from one benchmark run (the JSON result of runtime.tools.bench.runner).

Each goal carries the measured value, its target and, where the run measured it, the figure
that explains it (the limit it hits, or where the time goes), so a missed goal says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    name: str
    value: float
    target: float
    unit: str
    at_most: bool
    """True: met when value <= target; False: met when value >= target."""
    context: str
    skipped: str = ""
    """Why the run could not measure it (e.g. torch is not installed); such a goal is not met."""

    @property
    def met(self) -> bool:
        if self.skipped or not math.isfinite(self.value):
            return False
        return self.value <= self.target if self.at_most else self.value >= self.target


def _engine_row(result: dict[str, Any], precision: str, streams: int) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = result.get("engine", {}).get("rows", [])
    for row in rows:
        if row["precision"] == precision and row["streams"] == streams and row["samples_per_message"] == 1:
            return row
    return None


def _engine_row_1(result: dict[str, Any], key: str) -> float | None:
    row = _engine_row(result, "fp32", 1)
    return None if row is None else row[key]


def _baseline(result: dict[str, Any], key: str) -> dict[str, Any] | None:
    baseline: dict[str, Any] | None = result.get("baselines", {}).get(key)
    return baseline


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """The ratios the issue asks for (NaN where a figure is missing), from the same run."""
    nan = float("nan")
    engine = _engine_row(result, "fp32", 1000)
    torch, ort = _baseline(result, "torch"), _baseline(result, "ort")
    w50, w200 = _baseline(result, "window50"), _baseline(result, "window200")

    def per_step(row: dict[str, Any] | None) -> float:
        return row["us_per_step"] if row else nan

    e = per_step(engine)
    return {
        "engine_vs_torch": per_step(torch) / e,
        "engine_vs_ort": per_step(ort) / e,
        "stateful_vs_window50": per_step(w50) / per_step(ort),
        "stateful_vs_window200": per_step(w200) / per_step(ort),
        "engine_vs_window50": per_step(w50) / e,
        "engine_vs_window200": per_step(w200) / e,
    }


def _get(result: dict[str, Any], *path: str) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _fmt(template: str, *values: Any) -> str:
    return template.format(*values) if all(v is not None for v in values) else ""


def judge(result: dict[str, Any]) -> list[Goal]:
    r = ratios(result)
    engine = _engine_row(result, "fp32", 1000) or {}
    flood = _get(result, "e2e", "single") or {}
    latency = _get(result, "e2e", "latency") or {}
    alert_flood = _get(result, "e2e", "alert_flood") or {}
    hop = _get(result, "e2e", "broker_hop") or {}
    memory = _get(result, "memory") or {}
    per_10k = next((s for s in memory.get("streams", []) if s["streams"] == 10_000), None)
    largest = max(memory.get("streams", []), key=lambda s: s["streams"], default=None)
    paho = _get(result, "limits", "paho_ceiling", "msg_per_s")
    ours = _get(result, "limits", "client_ceiling", "msg_per_s")
    broker = _get(result, "limits", "broker_raw", "msg_per_s")
    where = _fmt(
        "per step {:.1f} µs = decode {:.1f} + engine {:.1f} (ORT alone {:.1f})",
        engine.get("us_per_step"),
        engine.get("decode_us"),
        engine.get("engine_us"),
        engine.get("ort_us"),
    )
    lost = flood.get("lost")
    nan = float("nan")

    def value(v: Any) -> float:
        return nan if v is None else float(v)

    return [
        Goal(
            "engine vs PyTorch per message, 1,000 streams",
            r["engine_vs_torch"],
            50,
            "x",
            False,
            _fmt("torch {:.0f} µs/message; ", _get(result, "baselines", "torch", "us_per_step")) + where,
            skipped=_get(result, "baselines", "torch_skipped") or "",
        ),
        Goal(
            "engine vs ORT per message, 1,000 streams",
            r["engine_vs_ort"],
            12,
            "x",
            False,
            _fmt("ORT per message {:.1f} µs; ", _get(result, "baselines", "ort", "us_per_step")) + where,
        ),
        Goal(
            "stateful step vs 50-sample window, one ORT call per message each",
            r["stateful_vs_window50"],
            10,
            "x",
            False,
            _fmt(
                "ORT per message {:.1f} µs vs window {:.1f} µs; ORT's own cost per call at batch 1: {:.1f} µs",
                _get(result, "baselines", "ort", "us_per_step"),
                _get(result, "baselines", "window50", "us_per_step"),
                _engine_row_1(result, "ort_us"),
            ),
        ),
        Goal(
            "stateful step as the engine runs it (1,000 streams) vs 50-sample window",
            r["engine_vs_window50"],
            10,
            "x",
            False,
            where,
        ),
        Goal(
            "end to end, QoS 1, 1,000 streams, zero loss",
            value(flood.get("msg_per_s")) if lost == 0 else nan,
            20_000,
            "msg/s",
            False,
            _fmt("lost {}; paho ack-only ceiling {:,.0f} msg/s; broker raw {:,.0f} msg/s", lost, paho, broker)
            + _fmt("; the service's own client, ack only: {:,.0f} msg/s", ours),
        ),
        Goal(
            "p99 publish → alert at 2,000 msg/s (fault bursts amid healthy traffic)",
            value(latency.get("p99_ms")) if latency.get("lost") == 0 else nan,
            10,
            "ms",
            True,
            _fmt(
                "p50 {:.1f} ms, max {:.1f} ms, {:,} of {:,} faults raised, {:,} false alerts",
                latency.get("p50_ms"),
                latency.get("max_ms"),
                latency.get("matched"),
                latency.get("expected"),
                latency.get("unexpected"),
            )
            + _fmt(
                "; the path's floor, two broker hops without the service: 2 x p50 {:.1f} / p99 {:.1f} ms",
                hop.get("p50_ms"),
                hop.get("p99_ms"),
            )
            + _fmt(
                "; the service's own time, arrival → alert handed to paho: p50 ≤ {:.0f} ms, p99 ≤ {:.0f} ms",
                latency.get("service_p50_ms"),
                latency.get("service_p99_ms"),
            )
            + _fmt(
                "; every message alerting instead (alert flood): p99 {:,.1f} ms, {:,} of {:,} matched",
                alert_flood.get("p99_ms"),
                alert_flood.get("matched"),
                alert_flood.get("expected"),
            )
            + _fmt(
                "; an alert per message costs the service {:,.0f} µs (decode, step, alert built and handed to"
                " the bus): at most {:,.0f} msg/s on its core",
                _get(result, "e2e", "alert_cost", "us_per_message"),
                _get(result, "e2e", "alert_cost", "max_msg_per_s"),
            ),
        ),
        Goal(
            "RSS per idle stream (growth over 10,000 streams)",
            value(per_10k and per_10k["bytes_per_stream"]),
            2048,
            "B",
            True,
            _fmt(
                "{:,} streams: {:,.0f} B/stream",
                largest and largest["streams"],
                largest and largest["bytes_per_stream"],
            ),
        ),
        Goal(
            "ready: load_artifact + create_session + warm-up",
            value(_get(memory, "cold_start", "ready_s")) * 1000,
            1000,
            "ms",
            True,
            _fmt("the interpreter's imports before it: {:.0f} ms", _ms(_get(memory, "cold_start", "imports_s"))),
        ),
    ]
