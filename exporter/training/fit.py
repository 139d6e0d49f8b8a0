"""Train the reference next-step forecaster (exporter.training.reference_model) on normal data.

Training sees windows cut from each sequence (truncated BPTT, never across two files),
each started from a zero state. The first `burn_in` steps of a window carry no loss: at
a gateway the state is always warm, so the model should learn to forecast from a warm
state, not to guess from nothing. `window=0` trains on whole sequences instead.

torch is imported inside the functions that need it only; the numpy parts
(normalization, windows) are used without torch too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_config.errors import ExportInputError

ProgressFn = Callable[[int, int, float], None]
"""progress(epoch_done, epochs, mean_loss)."""


class TrainingError(ExportInputError):
    """A training option or the training data cannot work (exit code 2), like --data's own errors."""


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 64
    layers: int = 2
    persistence: bool = True
    epochs: int = 30
    window: int = 64
    """Steps per training window (truncated BPTT); 0 trains on whole sequences."""
    stride: int = 0
    """Steps between window starts; 0 means window // 4."""
    burn_in: int = 8
    """Leading steps of each window whose forecasts carry no loss (the state warms up)."""
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    """The tail of each sequence held out; the weights of the epoch with the lowest
    held-out error are kept. 0 keeps the last epoch (no validation)."""
    seed: int = 0
    threads: int = 1
    """torch intra-op threads; small LSTMs gain little from more, and gateways-to-be share CPUs."""

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1 or self.epochs < 1 or self.batch_size < 1 or self.threads < 1:
            raise TrainingError("hidden, layers, epochs, batch_size and threads must be >= 1")
        if self.window < 0 or self.stride < 0 or self.burn_in < 0 or self.lr <= 0:
            raise TrainingError("window, stride and burn_in must be >= 0 and lr > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise TrainingError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.window and self.burn_in >= self.window:
            raise TrainingError(f"burn_in ({self.burn_in}) must be smaller than window ({self.window})")


@dataclass(frozen=True)
class NormalizationStats:
    """Per-feature x_norm = (x - mean) / std, in the exporter's --normalization JSON form."""

    features: list[str]
    mean: list[float]
    std: list[float]

    def apply(self, values: np.ndarray) -> np.ndarray:
        """values: [T, F] raw → float32 [T, F] normalized."""
        normalized: NDArray[np.float32] = ((values - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)
        return normalized

    def to_json(self) -> dict[str, list[Any]]:
        return asdict(self)


@dataclass
class TrainResult:
    state_dict: dict[str, Any]
    """The trained module's state_dict (torch tensors)."""
    kwargs: dict[str, int | bool]
    """ForecastLSTM constructor arguments (features, hidden, layers, persistence)."""
    normalization: NormalizationStats
    losses: list[float] = field(default_factory=list)
    """Mean training loss per epoch (MSE on normalized samples)."""
    val_losses: list[float] = field(default_factory=list)
    """Held-out MSE per epoch (empty without validation)."""
    best_epoch: int = 0
    """1-based epoch whose weights were kept."""
    seconds: float = 0.0


def fit_normalization(
    sequences: Sequence[np.ndarray], features: Sequence[str], *, rel_floor: float = 1e-3
) -> NormalizationStats:
    """Mean and std over all rows of all sequences ([T_i, F] each).

    A feature that is (nearly) constant in normal data gets its std floored at
    `rel_floor` × its magnitude (or 1e-6): dividing by ~0 would make any later
    change infinitely anomalous and the int8 model numerically useless.
    """
    rows = np.concatenate([np.asarray(s, dtype=np.float64) for s in sequences], axis=0)
    if rows.ndim != 2 or rows.shape[1] != len(features) or len(rows) < 2:
        raise TrainingError(f"need >= 2 rows of {len(features)} features, got shape {rows.shape}")
    mean = rows.mean(axis=0)
    floor = np.maximum(np.abs(mean) * rel_floor, 1e-6)
    std = np.maximum(rows.std(axis=0), floor)
    return NormalizationStats(list(features), mean.tolist(), std.tolist())


def make_windows(sequences: Sequence[np.ndarray], window: int, stride: int) -> np.ndarray:
    """Cut [T_i, F] sequences into float32 [N, window + 1, F] (inputs are [:, :-1], targets
    [:, 1:]); the last window of each sequence is aligned to its end so no tail is lost.
    Sequences shorter than window + 1 are used whole only when window == 0."""
    cuts: list[np.ndarray] = []
    for seq in sequences:
        n = len(seq)
        if n < window + 1:
            continue
        starts = list(range(0, n - window, max(stride, 1)))
        if starts[-1] != n - window - 1:
            starts.append(n - window - 1)
        cuts.extend(seq[s : s + window + 1] for s in starts)
    if not cuts:
        raise TrainingError(f"no sequence is longer than window + 1 = {window + 1} rows")
    return np.stack(cuts).astype(np.float32)


def _batches(config: TrainConfig, sequences: list[np.ndarray]) -> list[np.ndarray]:
    """The epoch's training arrays: windows, or whole sequences one per batch (lengths differ)."""
    if config.window == 0:
        return [s[None].astype(np.float32) for s in sequences if len(s) > config.burn_in + 1]
    stride = config.stride or max(config.window // 4, 1)
    return [make_windows(sequences, config.window, stride)]


def _split_tails(sequences: list[np.ndarray], fraction: float) -> tuple[list[np.ndarray], list[int]]:
    """The training heads of each sequence, and where each one's held-out tail starts."""
    if fraction == 0.0:
        return sequences, []
    cut = [round(len(s) * (1.0 - fraction)) for s in sequences]
    return [s[:c] for s, c in zip(sequences, cut, strict=False)], cut


def train_forecaster(
    sequences: Sequence[np.ndarray],
    features: Sequence[str],
    config: TrainConfig,
    *,
    normalization: NormalizationStats | None = None,
    init_state_dict: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Fit exporter.training.reference_model.ForecastLSTM to predict x[t + 1] from x[..t].

    sequences: raw [T_i, F] arrays of normal operation, F == len(features).
    normalization: fitted on `sequences` when None. init_state_dict: start from these
    weights (fine-tuning) instead of a fresh initialization.

    With `val_fraction > 0` the model trains on the head of each sequence and is judged,
    after every epoch, on the tail: the whole sequence is run with its state carried
    (as a gateway would) and the error is taken on the tail steps only. A few hundred
    rows are memorized within a few dozen epochs; the held-out error says when to stop.
    """
    import time

    import torch

    from exporter.training.reference_model import ForecastLSTM

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    norm = normalization or fit_normalization(sequences, features)
    normed = [norm.apply(np.asarray(s)) for s in sequences]
    heads, cuts = _split_tails(normed, config.val_fraction)
    data = _batches(config, heads)
    if not data:
        raise TrainingError(f"no sequence is longer than burn_in + 1 = {config.burn_in + 1} rows")
    val = [(torch.from_numpy(s[None]), c) for s, c in zip(normed, cuts, strict=False) if len(s) - c >= 2]

    model = ForecastLSTM(len(features), hidden=config.hidden, layers=config.layers, persistence=config.persistence)
    if init_state_dict is not None:
        model.load_state_dict(init_state_dict)
    elif config.persistence:
        with torch.no_grad():
            model.gate_logit.copy_(torch.from_numpy(_persistence_logits(heads)))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Cosine decay: a high rate finds the shape fast, a low one settles the last epochs.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr * 0.05)
    result = TrainResult({}, model.kwargs(), norm)
    best = float("inf")
    started = time.monotonic()
    for epoch in range(config.epochs):
        model.train()
        total, count = 0.0, 0
        for array in data:
            order = rng.permutation(len(array))
            for i in range(0, len(order), config.batch_size):
                batch = torch.from_numpy(array[order[i : i + config.batch_size]])
                pred = model(batch[:, :-1])
                loss = torch.mean((pred[:, config.burn_in :] - batch[:, 1 + config.burn_in :]) ** 2)
                optimizer.zero_grad()
                torch.autograd.backward(loss)  # = loss.backward(), which torch leaves unannotated
                # LSTMs on raw sensor data see the odd spike; clipping keeps one from wrecking the run.
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                total += loss.item() * len(batch)
                count += len(batch)
        schedule.step()
        result.losses.append(total / max(count, 1))
        score = result.losses[-1]
        if val:
            score = _held_out_error(model, val)
            result.val_losses.append(score)
        if score < best or not val:
            best = score
            result.best_epoch = epoch + 1
            result.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if progress is not None:
            progress(epoch + 1, config.epochs, score)
    model.eval()
    result.seconds = time.monotonic() - started
    return result


def _persistence_logits(sequences: list[np.ndarray]) -> np.ndarray:
    """Start each feature's persistence gate at its lag-1 autocorrelation (the AR(1)
    coefficient, clipped to [0.02, 0.98]): smooth, slowly drifting channels start out
    followed, noisy ones start out forecast from the state alone. Learning the gate from
    scratch is far slower than the LSTM overfits a few hundred rows.

    Each sequence is centred on its own mean first: files recorded at different operating
    points (a flow of 32 in one, 125 in another) would otherwise make a noisy channel look
    perfectly persistent, and a model that follows the flow misses a closing valve."""
    centred = [s - s.mean(axis=0) for s in sequences]
    num = sum((c[1:] * c[:-1]).sum(axis=0) for c in centred)
    den = sum((c**2).sum(axis=0) for c in centred)
    rho = np.clip(num / np.maximum(den, 1e-12), 0.02, 0.98)
    logit: NDArray[np.float32] = np.log(rho / (1.0 - rho)).astype(np.float32)
    return logit


def _held_out_error(model: Any, val: list[tuple[Any, int]]) -> float:
    """MSE of the next-step forecasts inside each sequence's tail, state carried from its start."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for seq, cut in val:
            pred = model(seq[:, :-1])
            err = (pred[:, cut - 1 :] - seq[:, cut:]) ** 2
            total += float(err.sum())
            count += err.numel()
    return total / max(count, 1)


def write_training_output(
    result: TrainResult, out_dir: Path, *, config: TrainConfig, sources: Sequence[str]
) -> dict[str, Path]:
    """DIR/weights.pt (state_dict), DIR/normalization.json, DIR/model.json; returns the paths."""
    import torch

    from exporter.training.reference_model import SPEC

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "weights": out_dir / "weights.pt",
        "normalization": out_dir / "normalization.json",
        "model": out_dir / "model.json",
    }
    torch.save(result.state_dict, paths["weights"])
    paths["normalization"].write_text(json.dumps(result.normalization.to_json(), indent=2) + "\n")
    info = {
        "model": SPEC,
        "kwargs": result.kwargs,
        "weights": paths["weights"].name,
        "normalization": paths["normalization"].name,
        "features": result.normalization.features,
        "train": asdict(config),
        "sources": list(sources),
        "final_loss": result.losses[-1] if result.losses else None,
        "seconds": round(result.seconds, 2),
    }
    paths["model"].write_text(json.dumps(info, indent=2) + "\n")
    return paths
