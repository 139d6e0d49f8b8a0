"""Section 1 baselines: what users write instead, run in the same process on the same payloads.

Each baseline is the body of a paho `on_message` callback for one message, from payload bytes
to an alert decision, the way it is usually written:

  (a) torch    json.loads → tensor → normalize → the PyTorch module's LSTM with this stream's
               (h, c) carried in a dict → head → forecast-error score → threshold.
               torch.set_num_threads(1), torch.inference_mode().
  (b) ort      the same with one onnxruntime session.run per message (batch 1, own state).
  (c) window   keep the last W samples per stream and re-run the whole window from a zero state
               every message (W = 50, 200): the stateless habit the streaming design replaces.

They decode with plain json.loads (no validation), which is cheaper than the engine's
decode_payload: that choice can only make the engine's lead look smaller.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.tools.bench.engines import BenchEngine
from runtime.tools.bench.workload import Workload

_STREAMS = 100  # streams the baselines rotate over (their state lives in a dict either way)
_CHUNK = 200  # payloads built per timed chunk


@dataclass(frozen=True)
class BaselineRate:
    name: str
    messages: int
    steps_per_s: float
    """Messages per second (one sample each, so one stream-step each)."""
    us_per_step: float


class _Score:
    """The engine's forecast-error score in plain numpy, per stream: EWMA of squared errors."""

    def __init__(self, bench: BenchEngine) -> None:
        manifest = bench.artifact.manifest
        settings = manifest.score
        std = settings.residual_std or [1.0] * manifest.features.count
        self.inv_std = 1.0 / np.asarray(std, dtype=np.float64)
        self.alpha = settings.ewma_alpha
        self.threshold = bench.engine.threshold
        norm = manifest.normalization
        self.mean = np.zeros(manifest.features.count, np.float32) if norm is None else np.asarray(norm.mean, np.float32)
        self.std = np.ones(manifest.features.count, np.float32) if norm is None else np.asarray(norm.std, np.float32)

    def update(self, memory: dict[str, Any], x: np.ndarray, y: np.ndarray) -> bool:
        """x: this normalized sample [F]; y: the forecast of the next one [F]. True: alert."""
        prev = memory.get("prev")
        above = False
        if prev is not None:
            sq = ((prev - x) * self.inv_std) ** 2
            ewma = memory.get("ewma")
            ewma = sq if ewma is None else self.alpha * sq + (1 - self.alpha) * ewma
            memory["ewma"] = ewma
            above = float(ewma.mean()) > self.threshold
        memory["prev"] = y
        return above


def _drive(handle: Callable[[int, bytes], object], min_seconds: float, warmup: int) -> tuple[int, float]:
    """Call handle(stream, payload) round-robin over _STREAMS streams; (timed messages, seconds)."""
    workload = Workload()
    sent = 0

    def chunk() -> list[tuple[int, bytes]]:
        nonlocal sent
        numbers = range(sent, sent + _CHUNK)
        out = [(n % _STREAMS, workload.payload(n % _STREAMS, n // _STREAMS)) for n in numbers]
        sent += _CHUNK
        return out

    while sent < warmup:
        for stream, payload in chunk():
            handle(stream, payload)
    messages, seconds = 0, 0.0
    while seconds < min_seconds:
        items = chunk()
        start = time.perf_counter()
        for stream, payload in items:
            handle(stream, payload)
        seconds += time.perf_counter() - start
        messages += len(items)
    return messages, seconds


def _rate(name: str, messages: int, seconds: float) -> BaselineRate:
    return BaselineRate(name, messages, messages / seconds, seconds / messages * 1e6)


def torch_per_message(bench: BenchEngine, module: Any, *, min_seconds: float) -> BaselineRate:
    """(a): `module` is exporter.training.reference_model.ForecastLSTM (lstm, head, optional persistence gate)."""
    import torch

    torch.set_num_threads(1)
    score = _Score(bench)
    mean, std = torch.from_numpy(score.mean), torch.from_numpy(score.std)
    gate = torch.sigmoid(module.gate_logit).detach() if getattr(module, "persistence", False) else None
    memory: dict[int, dict[str, Any]] = {}

    def handle(stream: int, payload: bytes) -> bool:
        doc = json.loads(payload)
        x = ((torch.tensor(doc["values"], dtype=torch.float32) - mean) / std).view(1, 1, -1)
        m = memory.setdefault(stream, {})
        out, m["hc"] = module.lstm(x, m.get("hc"))
        y = module.head(out)
        if gate is not None:
            y = y + gate * x
        return score.update(m, x.view(-1).numpy(), y.view(-1).numpy())

    with torch.inference_mode():
        return _rate("torch per message", *_drive(handle, min_seconds, warmup=_STREAMS * 2))


def ort_per_message(bench: BenchEngine, *, min_seconds: float) -> BaselineRate:
    """(b): one session.run per message (batch 1), the stream's own h/c fed back."""
    manifest = bench.artifact.manifest
    session, score = bench.session, _Score(bench)
    outputs = list(manifest.outputs)
    zeros = {s.input: np.zeros((s.layers, 1, s.hidden), np.float32) for s in manifest.state}
    state_out = [(i, s.input) for s in manifest.state for i, name in enumerate(outputs) if name == s.output]
    memory: dict[int, dict[str, Any]] = {}

    def handle(stream: int, payload: bytes) -> bool:
        doc = json.loads(payload)
        x = (np.asarray(doc["values"], dtype=np.float32) - score.mean) / score.std
        m = memory.setdefault(stream, {"state": dict(zeros)})
        feeds = {manifest.input: x.reshape(1, 1, -1), **m["state"]}
        result = session.run(outputs, feeds)
        m["state"] = {name: result[i] for i, name in state_out}
        return score.update(m, x, result[0].reshape(-1))

    return _rate("ORT per message", *_drive(handle, min_seconds, warmup=_STREAMS * 2))


def window_per_message(bench: BenchEngine, window: int, *, min_seconds: float) -> BaselineRate:
    """(c): re-run the last `window` samples from a zero state on every message."""
    manifest = bench.artifact.manifest
    session, score = bench.session, _Score(bench)
    zeros = {s.input: np.zeros((s.layers, 1, s.hidden), np.float32) for s in manifest.state}
    output = manifest.outputs[0]
    memory: dict[int, dict[str, Any]] = {}

    def handle(stream: int, payload: bytes) -> bool:
        doc = json.loads(payload)
        x = (np.asarray(doc["values"], dtype=np.float32) - score.mean) / score.std
        m = memory.get(stream)
        if m is None:
            # a full window from the first message (the plant's level), so every timed run is
            # a whole W-step sequence without W warm-up messages per stream
            m = memory[stream] = {"window": deque([np.zeros_like(x)] * window, maxlen=window)}
        m["window"].append(x)
        xs = np.stack(m["window"])[None]  # [1, W, F]
        y = session.run([output], {manifest.input: xs, **zeros})[0]
        return score.update(m, x, y[0, -1])

    messages, seconds = _drive(handle, min_seconds, warmup=_STREAMS * 2)
    return _rate(f"window of {window}, re-run per message", messages, seconds)
