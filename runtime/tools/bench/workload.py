"""The synthetic plant every section measures: N sensor streams of 8 features, JSON payloads.

Each feature is an AR(1) process (phi 0.9) around a level of 50 with a standard deviation of 5,
in raw units: the reference artifact's normalization (mean 50, std 5) and calibrated
threshold come from the same process, so the engine normalizes real numbers and the alert
decision sees realistic scores (alerts are rare, as on a healthy plant).

Payloads are the documented input contract, `{"seq": n, "ts": t, "values": [...]}` (or
`"values": [[...], ...]` for several samples), formatted from a pool of pre-rendered rows so
that building them costs little next to what is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = 8
LEVEL = 50.0
SPREAD = 5.0
_PHI = 0.9
_POOL_ROWS = 4096
_T0 = 1_763_800_000.0  # a fixed epoch second: payloads are the same from run to run


def ar1(steps: int, features: int = FEATURES, seed: int = 0) -> np.ndarray:
    """float64 [steps, features] raw units: LEVEL + SPREAD * AR(1) with unit variance."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((steps, features)) * np.sqrt(1.0 - _PHI**2)
    z = np.empty((steps, features))
    z[0] = rng.standard_normal(features)
    for t in range(1, steps):
        z[t] = _PHI * z[t - 1] + noise[t]
    return LEVEL + SPREAD * z


def stream_names(count: int, prefix: str = "") -> list[str]:
    """Stream ids the way a plant names machines: line/machine (two topic levels)."""
    return [f"{prefix}l{i % 16}/m{i}" for i in range(count)]


@dataclass
class Workload:
    """Payload bytes for stream i's message number k (its seq is k * samples)."""

    samples: int = 1
    """Samples per message."""
    seed: int = 0

    def __post_init__(self) -> None:
        pool = ar1(_POOL_ROWS, seed=self.seed)
        self.rows = pool.astype(np.float32)
        self._text = ["[" + ",".join(f"{v:.3f}" for v in row) + "]" for row in pool]

    def row_index(self, stream: int, k: int) -> int:
        # A stream walks the pool in order (consecutive samples are AR(1)-correlated);
        # streams start at different places.
        return (stream * 97 + k * self.samples) % _POOL_ROWS

    def sample_text(self, stream: int, k: int) -> str:
        """The JSON array of stream i's sample in message k (1 sample per message)."""
        return self._text[self.row_index(stream, k)]

    def payload(self, stream: int, k: int) -> bytes:
        seq = k * self.samples
        first = self.row_index(stream, k)
        if self.samples == 1:
            return b'{"seq":%d,"ts":%.3f,"values":%s}' % (seq, _T0 + seq, self.sample_text(stream, k).encode())
        rows = ",".join(self._text[(first + j) % _POOL_ROWS] for j in range(self.samples))
        ts = ",".join(f"{_T0 + seq + j:.3f}" for j in range(self.samples))
        return b'{"seq":%d,"ts":[%s],"values":[%s]}' % (seq, ts.encode(), rows.encode())
