"""`edgewatch score RECORDING.csv --model DIR [--config gw.yaml]`: run an exported model over a
recording exactly as a gateway would, and say what it would have alerted.

The engine is the daemon's (`runtime.model.loading.load_model`: the same artifact checks, ONNX
Runtime session, score, per-stream baselines and hysteresis), fed through the one replay path
(`runtime.engine.replay`) one row per message, on the recording's clock: the alerts are those
the daemon publishes when the recording is sent to it one row per message (tests/mqtt/test_score.py
checks this through mosquitto). A file is one stream, or one stream per value of `--id-column`.

Columns: the model's feature names when the file has them all, else (with exactly as many numeric
columns as features) the numeric columns in file order. The time column (datetime/timestamp/time/ts
or `--ts-column`) gives `ts`; without one, row i is at i seconds.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_config.errors import ConfigError
from edge_config.schema import GatewayConfig, ModelConfig, StreamConfig, TargetConfig
from runtime.commands.replay import read_csv
from runtime.engine.replay import Recording, Replay

if TYPE_CHECKING:
    from runtime.engine.engine import Engine

__all__ = ["ScoreInput", "Scored", "read_recordings", "register", "run", "score_file", "scoring_config"]


@dataclass(frozen=True)
class ScoreInput:
    """A recording split into streams, in the model's feature order."""

    recordings: dict[str, Recording]
    labels: dict[str, np.ndarray]
    """0/1 per row, per stream, when --label-column was given."""
    columns: tuple[str, ...]
    """The file's columns fed as the model's features, in its order."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "score",
        help="run a model over a CSV recording as a gateway would: scores, alerts, what other thresholds give",
        description="Replays RECORDING through the gateway's own engine (model, score, baselines, hysteresis), "
        "one row per message, and prints each stream's alerts, score quantiles and the alerts other thresholds "
        "would have given.",
    )
    p.add_argument("recording", type=Path, metavar="RECORDING.csv")
    p.add_argument("--model", required=True, help="artifact folder (or, with --config, a model name in it)")
    p.add_argument("--config", type=Path, help="gateway config: its settings for this model (threshold, alerts, ...)")
    p.add_argument("--id-column", help="column naming the stream of each row (default: the file is one stream)")
    p.add_argument("--ts-column", help="column holding the timestamp (default: datetime/timestamp/time/ts)")
    p.add_argument("--label-column", help="0/1 column of known anomalies, drawn in the plot (e.g. SKAB's anomaly)")
    p.add_argument("--threshold", type=float, help="replay with this threshold instead of the configured one")
    p.add_argument(
        "--plot", type=Path, help="PNG of sensors, score, threshold and alerts (one per stream: NAME-ID.png)"
    )
    p.add_argument("--csv", type=Path, help="per row: stream, row, ts, score, threshold, alert open (0/1)")
    p.set_defaults(func=run)


def scoring_config(model: str, config_path: Path | None, threshold: float | None) -> tuple[GatewayConfig, str]:
    """The gateway config to score with and the model's name in it. Without a config: the
    defaults a `config init` gateway has, for the artifact folder `model`."""
    if config_path is not None:
        from edge_config.loading import load_config

        config = load_config(config_path)
        name = _model_name(config, model)
    else:
        folder = Path(model)
        if not (folder / "manifest.json").is_file():
            raise ConfigError(f"--model {model}: no manifest.json there (an `edgewatch export` folder)")
        name = "model"
        config = GatewayConfig(
            streams=[StreamConfig(name="recording", topics=["recording"], model=name)],
            models={name: ModelConfig(path=folder, target="cpu")},
            targets={"cpu": TargetConfig(type="cpu")},
        )
    if threshold is not None:
        models = dict(config.models)
        models[name] = models[name].model_copy(update={"threshold": threshold})
        config = config.model_copy(update={"models": models})
    return config, name


def _model_name(config: GatewayConfig, model: str) -> str:
    if model in config.models:
        return model
    wanted = Path(model).resolve()
    for name, entry in config.models.items():
        if Path(entry.path).resolve() == wanted:
            return name
    raise ConfigError(f"--model {model}: neither a model name of the config ({', '.join(config.models)}) nor its path")


def read_recordings(
    path: Path,
    features: list[str],
    *,
    id_column: str | None = None,
    ts_column: str | None = None,
    label_column: str | None = None,
) -> ScoreInput:
    """The file's rows as recordings keyed by stream id (file order kept within a stream)."""
    header = _header(path)
    named = all(f in header for f in features)
    columns = features if named else None
    skip = {c for c in (id_column, label_column) if c}
    if not named:
        numeric = [c for c in read_csv(path, None, ts_column).columns if c not in skip]
        if len(numeric) != len(features):
            raise ConfigError(
                f"{path}: the model's features ({', '.join(features)}) are not all columns of the file, and it has "
                f"{len(numeric)} other numeric columns for {len(features)} features"
            )
        columns = numeric
    table = read_csv(path, columns, ts_column)
    values = np.asarray(table.rows, dtype=np.float32).reshape(len(table.rows), len(table.columns))
    ts = np.asarray(table.ts, dtype=np.float64) if table.ts is not None else np.arange(len(values), dtype=np.float64)
    ids = _column(path, id_column) if id_column else [path.stem] * len(values)
    labels = np.asarray([float(v) for v in _column(path, label_column)]) if label_column else None
    out: dict[str, Recording] = {}
    out_labels: dict[str, np.ndarray] = {}
    for stream in dict.fromkeys(ids):
        rows = np.flatnonzero(np.asarray(ids) == stream)
        out[stream] = Recording(values[rows], ts[rows])
        if labels is not None:
            out_labels[stream] = labels[rows] > 0
    return ScoreInput(out, out_labels, table.columns)


def _header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig") as handle:
            first = handle.readline()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    delimiter = ";" if first.count(";") > first.count(",") else ","
    return [h.strip() for h in next(csv.reader([first], delimiter=delimiter), [])]


def _column(path: Path, name: str) -> list[str]:
    header = _header(path)
    if name not in header:
        raise ConfigError(f"{path}: no column {name!r} (columns: {', '.join(header)})")
    text = path.read_text(encoding="utf-8-sig").splitlines()
    delimiter = ";" if text[0].count(";") > text[0].count(",") else ","
    at = header.index(name)
    return [row[at].strip() for row in csv.reader(text[1:], delimiter=delimiter) if row]


@dataclass(frozen=True)
class Scored:
    """A recording replayed through a model as the gateway runs it."""

    config: GatewayConfig
    model: str
    """The model's name in `config`."""
    engine: Engine
    data: ScoreInput
    results: dict[str, Replay]


def score_file(
    recording: Path,
    model: str,
    *,
    config: Path | None = None,
    threshold: float | None = None,
    id_column: str | None = None,
    ts_column: str | None = None,
    label_column: str | None = None,
) -> Scored:
    """Replay `recording` through `model` (a folder, or a model name of `config`), one row per message."""
    from runtime.engine.replay import RecordedClock, replay
    from runtime.model.loading import load_model

    gateway, name = scoring_config(model, config, threshold)
    clock = RecordedClock()
    engine = load_model(name, gateway, clock=clock).engine
    features = list(engine.artifact.manifest.features.names)
    data = read_recordings(recording, features, id_column=id_column, ts_column=ts_column, label_column=label_column)
    return Scored(gateway, name, engine, data, replay(engine, data.recordings, clock=clock))


def run(args: argparse.Namespace) -> int:
    from runtime.tools.score_summary import format_summary, summarize

    scored = score_file(
        args.recording,
        args.model,
        config=args.config,
        threshold=args.threshold,
        id_column=args.id_column,
        ts_column=args.ts_column,
        label_column=args.label_column,
    )
    config, name, engine, data, results = scored.config, scored.model, scored.engine, scored.data, scored.results
    manifest = engine.artifact.manifest
    policy = config.models[name].alerts
    summaries = [summarize(stream, result, policy) for stream, result in results.items()]
    rows = sum(len(r.values) for r in data.recordings.values())
    print(
        f"edgewatch score: {args.recording} ({rows} rows, {len(results)} stream(s), columns "
        f"{', '.join(data.columns)})\nmodel {manifest.name} (sha256 {engine.artifact.sha256[:12]}), "
        f"threshold {engine.threshold:.4g} ({'--threshold' if args.threshold is not None else _source(config, name)}), "
        f"alerts raise_k {policy.raise_k}/{policy.raise_n}, clear_m {policy.clear_m}, warm-up {policy.warmup_steps}, "
        f"baselines learn {config.models[name].baseline.learn_steps} steps"
    )
    print(format_summary(summaries))
    if args.csv is not None:
        _write_csv(args.csv, results)
        print(f"per-row scores: {args.csv}")
    if args.plot is not None:
        for path in _plots(args.plot, data, results, manifest.name):
            print(f"plot: {path}")
    return 0


def _source(config: GatewayConfig, name: str) -> str:
    return "the config's" if config.models[name].threshold is not None else "the manifest's"


def _write_csv(path: Path, results: dict[str, Replay]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["stream", "row", "score", "threshold", "alert"])
        for stream, result in results.items():
            for row, (score, limit, flag) in enumerate(
                zip(result.scores, result.thresholds, result.raised, strict=True)
            ):
                writer.writerow(
                    [stream, row, "" if np.isnan(score) else repr(float(score)), repr(float(limit)), int(flag)]
                )


def _plots(target: Path, data: ScoreInput, results: dict[str, Replay], model: str) -> list[Path]:
    from runtime.tools.plots import StreamTrace, plot_stream

    paths = []
    for stream, result in results.items():
        rec = data.recordings[stream]
        raised = sum(a.state == "raised" for a in result.alerts)
        note = (
            f"edgewatch score: model {model}, {raised} alert(s); threshold per row (dashed) as the gateway "
            "applies it\norange: alerts the gateway's hysteresis raises"
            + ("; red: the file's labels" if stream in data.labels else "")
        )
        trace = StreamTrace(
            stream,
            rec.values,
            data.columns,
            result.scores,
            result.thresholds,
            result.raised,
            labels=data.labels.get(stream),
            ts=rec.ts,
            note=note,
        )
        out = target if len(results) == 1 else target.with_name(f"{target.stem}-{_safe(stream)}{target.suffix}")
        paths.append(plot_stream(trace, out))
    return paths


def _safe(stream: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stream)
