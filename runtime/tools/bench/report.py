"""The benchmark's printed table: every figure beside its limit, then the goals met / missed."""

from __future__ import annotations

import math
from typing import Any

from runtime.tools.bench.goals import judge, ratios


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _pct(part: float | None, whole: float | None) -> str:
    if not part or not whole:
        return "—"
    return f"{part / whole:.1%}"


def _machine(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    before, after = r.get("load_before", [0.0])[0], r.get("load_after", [0.0])[0]
    return [
        f"edgewatch bench{' --quick' if r['quick'] else ''} — {r['started']}, {r.get('seconds', 0):.0f} s",
        (
            f"machine: {m['cpu_model']}, {m['cores']} cores, {m['platform']}; Python {m['python']}; {versions}; "
            f"mosquitto {m['mosquitto']}"
        ),
        f"load average (1 min) before {before:.2f}, after {after:.2f} — other work on the machine makes figures noisy",
        f"model: {r['model']['source']}",
        *(f"note: {n}" for n in r["model"]["notes"]),
    ]


def _engine(r: dict[str, Any]) -> list[str]:
    rows = r.get("engine", {}).get("rows", [])
    bound = r.get("limits", {}).get("flop_bound")

    def bound_at(batch: int) -> float | None:
        if not bound:
            return None
        fitting = [x for x in bound["rates"] if x["batch"] >= batch] or bound["rates"]
        rate: float = min(fitting, key=lambda x: x["batch"])["steps_per_s"]
        return rate

    out = [
        (
            f"1. Engine, no network, one core (CPU {r.get('pinned_cpu')}, intra_op_num_threads=1): "
            "decode_samples + Engine.process per stream-step"
        ),
        (
            f"   {'model':<6}{'streams':>8}{'samples':>8}{'batch':>7}{'steps/s':>11}{'µs/step':>9}{'decode':>8}"
            f"{'engine':>8}"
            f"{'ORT alone':>10}{'alerts':>8}  of FLOP bound"
        ),
    ]
    out.extend(
        f"   {x['precision']:<6}{x['streams']:>8,}{x['samples_per_message']:>8}{x['batch']:>7,}"
        f"{_n(x['steps_per_s']):>11}"
        f"{_n(x['us_per_step'], 1):>9}{_n(x['decode_us'], 1):>8}{_n(x['engine_us'], 1):>8}"
        f"{_n(x['ort_us'], 2):>10}{x['alerts']:>8}  {_pct(x['steps_per_s'], bound_at(x['batch']))}"
        for x in rows
    )
    b = r.get("baselines", {})
    single = bound_at(1)
    out.append("   baselines, fp32, one message per call, same process and core:")
    labels = {
        "torch": "(a) PyTorch module per message",
        "ort": "(b) ORT session.run per message",
        "window50": "(c) window of 50, re-run per message",
        "window200": "(c) window of 200, re-run per message",
    }
    for key, label in labels.items():
        x = b.get(key)
        if x:
            out.append(
                f"   {label:<40}{_n(x['steps_per_s']):>9} msg/s{_n(x['us_per_step'], 1):>9} µs"
                f"   {_pct(x['steps_per_s'], single)} of the batch-1 FLOP bound"
            )
        elif key == "torch" and b.get("torch_skipped"):
            out.append(f"   {label:<40} skipped: {b['torch_skipped']}")
    out.extend(_breakdown(r))
    q = ratios(r)
    out.append(
        f"   ratios: engine@1000 (fp32) vs (a) {_n(q['engine_vs_torch'], 1)}x, vs (b) {_n(q['engine_vs_ort'], 1)}x; "
        f"stateful step (b) vs window 50 {_n(q['stateful_vs_window50'], 1)}x, vs window 200 "
        f"{_n(q['stateful_vs_window200'], 1)}x cheaper; engine vs window 50 {_n(q['engine_vs_window50'], 1)}x, "
        f"vs window 200 {_n(q['engine_vs_window200'], 1)}x"
    )
    return out


def _breakdown(r: dict[str, Any]) -> list[str]:
    split = r.get("engine", {}).get("breakdown")
    if not split:
        return []
    us = split["us"]
    parts = "  ".join(f"{name} {_n(value, 2)}" for name, value in us.items())
    total = _n(split["total_us"], 1)
    head = f"   where a step goes, fp32, {split['streams']:,} streams, µs per stream-step (total {total}):"
    return [head, f"   {parts}"]


def _e2e(r: dict[str, Any]) -> list[str]:
    e = r.get("e2e")
    if not e:
        return ["2. End to end: not measured" + (f" ({r['errors']['e2e']})" if "e2e" in r.get("errors", {}) else "")]
    lim = r.get("limits", {})
    broker = (lim.get("broker_raw") or {}).get("msg_per_s")
    paho = (lim.get("paho_ceiling") or {}).get("msg_per_s")
    engine = next(
        (
            x
            for x in r.get("engine", {}).get("rows", [])
            if x["precision"] == "fp32" and x["streams"] == 1000 and x["samples_per_message"] == 1
        ),
        None,
    )
    out = [
        "2. End to end: publisher process → mosquitto (127.0.0.1) → service process(es), QoS 1",
        (
            f"   {'run':<56}{'messages':>9}{'msg/s':>9}{'samples/s':>11}{'lost':>6}{'batch':>7}"
            f"  of broker raw  of paho ceiling"
        ),
    ]
    runs = [e.get("single"), *e.get("protocols", []), e.get("multi"), *e.get("partitioned", [])]
    out.extend(
        f"   {x['label']:<56}{x['messages']:>9,}{_n(x['msg_per_s']):>9}{_n(x['samples_per_s']):>11}"
        f"{x['lost']:>6}{_n(x['mean_batch'], 0):>7}  {_pct(x['msg_per_s'], broker):>13}  "
        f"{_pct(x['msg_per_s'], paho):>15}"
        for x in filter(None, runs)
    )
    if engine and e.get("single"):
        out.append(
            f"   1-sample end to end = {_pct(e['single']['msg_per_s'], engine['steps_per_s'])} of the engine's "
            "one-core rate at 1,000 streams (section 1)"
        )
    hop = e.get("broker_hop")
    if hop:
        out.append(
            f"   one broker hop (publisher → mosquitto → mosquitto_sub, no service) at {_n(hop['offered_per_s'])} "
            f"msg/s: p50 {_n(hop['p50_ms'], 1)} ms, p99 {_n(hop['p99_ms'], 1)} ms, max {_n(hop['max_ms'], 1)} ms "
            f"({hop['matched']:,} of {hop['messages']:,} seen); an alert takes two such hops"
        )
    for key, what in (
        ("latency", "fault bursts amid healthy traffic (alerts raised)"),
        ("alert_flood", "every message alerting"),
    ):
        lat = e.get(key)
        if not lat:
            continue
        out.append(
            f"   publish → alert at {_n(lat['offered_per_s'])} msg/s offered ({_n(lat['achieved_per_s'])} sent), "
            f"{what}: p50 {_n(lat['p50_ms'], 1)} ms, p99 {_n(lat['p99_ms'], 1)} ms, "
            f"max {_n(lat['max_ms'], 1)} ms; {lat['matched']:,} of {lat['expected']:,} alerts matched"
            f" ({lat.get('alerts_sent', 0):,} sent)"
            + (f", {lat['unexpected']:,} unexpected" if key == "latency" else "")
            + f", lost {lat['lost']}, outgoing dropped {lat['dropped_outgoing']:,}"
            + f"; mean batch {_n(lat['mean_batch'], 1)}; inside the service (arrival → alert"
            f" handed to paho, every message): p50 ≤ {_n(lat['service_p50_ms'], 1)} ms, "
            f"p99 ≤ {_n(lat['service_p99_ms'], 1)} ms"
        )
    return out


def _memory(r: dict[str, Any]) -> list[str]:
    m = r.get("memory")
    if not m:
        return ["3. Memory and start: not measured"]
    state = m.get("state_bytes_per_stream")
    out = ["3. Memory and start (fresh process)"]
    out.extend(
        f"   {s['streams']:>8,} idle streams: RSS +{s['rss_growth_bytes'] / 2**20:,.1f} MiB = "
        f"{s['bytes_per_stream']:,.0f} B/stream (the recurrent state itself: {state} B = "
        f"{_pct(state, s['bytes_per_stream'])})"
        for s in m["streams"]
    )
    c = m["cold_start"]
    out.append(
        f"   ready {c['ready_s'] * 1000:,.0f} ms = load_artifact {c['load_artifact_s'] * 1000:,.0f} + "
        f"create_session with warm-up {c['create_session_s'] * 1000:,.0f} + "
        f"Engine {c['engine_s'] * 1000:,.1f} ms "
        f"(imports before it: {c['imports_s'] * 1000:,.0f} ms)"
    )
    return out


def _limits(r: dict[str, Any]) -> list[str]:
    lim = r.get("limits")
    if not lim:
        return ["4. Limits: not measured"]
    f = lim["flop_bound"]
    rates = ", ".join(
        f"batch {x['batch']:,}: {x['gflops']:.1f} GFLOP/s → {_n(x['steps_per_s'])} steps/s" for x in f["rates"]
    )
    return [
        "4. Limits (measured in this run)",
        (
            f"   FLOP bound, one core: {f['flops_per_step']:,} FLOP per stream-step (GEMMs); numpy float32 GEMM on "
            f"the step's shapes, 1 BLAS thread: {rates}"
        ),
        (
            f"   broker raw: {_n(lim['broker_raw']['msg_per_s'])} msg/s ({lim['broker_raw']['what']}, "
            f"{lim['broker_raw']['messages']:,} messages)"
        ),
        f"   {lim['paho_ceiling']['what']}: {_n(lim['paho_ceiling']['msg_per_s'])} msg/s",
        *(
            [f"   {lim['client_ceiling']['what']}: {_n(lim['client_ceiling']['msg_per_s'])} msg/s"]
            if lim.get("client_ceiling")
            else []
        ),
    ]


def _goals(r: dict[str, Any]) -> list[str]:
    out = ["Goals (ratios from this run)"]
    for g in judge(r):
        sign = "≤" if g.at_most else "≥"
        if g.skipped:
            out.append(f"   n/a    {g.name}: not measured ({g.skipped})")
            continue
        out.append(
            f"   {'met   ' if g.met else 'MISSED'} {g.name}: {_n(g.value, 1)} {g.unit} (goal {sign} "
            f"{_n(g.target, 0 if g.target >= 10 else 1)} {g.unit})" + (f" — {g.context}" if g.context else "")
        )
    return out


def format_report(result: dict[str, Any]) -> str:
    lines = [
        *_machine(result),
        "",
        *_engine(result),
        "",
        *_e2e(result),
        "",
        *_memory(result),
        "",
        *_limits(result),
        "",
        *_goals(result),
    ]
    for name, error in result.get("errors", {}).items():
        lines.append(f"ERROR in {name}: {error}")
    return "\n".join(lines)
