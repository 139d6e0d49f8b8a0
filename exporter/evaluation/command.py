"""`edgewatch eval skab`: the Skoltech Anomaly Benchmark through export + the runtime Engine.

    edgewatch eval skab --data DIR --setting published --target cpu-int8 \\
        --predictions-out preds/ --json skab.json [--plots plots/] [--files N]

Prints our figures beside the published leaderboard (stdout), progress on stderr. The
float model (cpu-fp32) is evaluated beside the target unless --no-fp32. torch is imported
inside `run` only (training and export need it; the Engine does not).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_config.errors import ExportInputError
from edge_config.schema import BaselineConfig

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="evaluate detection quality on a benchmark (skab)")
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    s = sub.add_parser(
        "skab",
        help="Skoltech Anomaly Benchmark: train, export, stream every file through the Engine, score",
        description="Evaluate the reference detector on SKAB through the gateway's code path "
        "(exported ONNX artifact, runtime Engine: the manifest's calibrated threshold, the default "
        "hysteresis and per-stream baselines; nothing set by the evaluation). Development split: "
        "valve1/ (16 files), where methods and defaults are chosen; held out: valve2/ and other/ "
        "(18 files), only reported.",
    )
    s.add_argument("--data", type=Path, metavar="DIR", help="SKAB data folder (default: $EDGEWATCH_SKAB_DIR)")
    s.add_argument("--setting", choices=["published", "streaming"], default="published")
    s.add_argument("--target", default="cpu-int8", help="export target whose predictions are scored (default cpu-int8)")
    s.add_argument("--no-fp32", dest="fp32", action="store_false", help="skip the cpu-fp32 reference run")
    s.add_argument(
        "--predictions-out",
        type=Path,
        metavar="DIR",
        help="write <subfolder>/<name>.csv (datetime,prediction) per test file",
    )
    s.add_argument("--json", type=Path, metavar="FILE", help="write the metrics and settings as JSON")
    s.add_argument("--plots", type=Path, metavar="DIR", help="write one PNG per file (target precision)")
    s.add_argument("--files", type=int, metavar="N", help="a reduced run on N files spread over the subfolders")
    s.add_argument(
        "--work",
        type=Path,
        metavar="DIR",
        help="keep the trained models and artifacts here (default: a temporary folder)",
    )
    s.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    s.add_argument(
        "--train-on-heads",
        action="store_true",
        help="streaming: also train on every labelled file's first 400 rows (default: anomaly-free.csv only)",
    )
    s.add_argument(
        "--split",
        choices=["all", "dev", "held-out"],
        default="all",
        help="files to run: dev = valve1/ (where methods and defaults are chosen), held-out = valve2/ and "
        "other/ (never used to choose anything), all = both, reported together and apart (default all)",
    )
    s.add_argument(
        "--baseline-steps",
        type=int,
        metavar="N",
        help="the gateway's per-stream baseline learning period (ModelConfig.baseline.learn_steps; "
        "default: the gateway's, 300; 0 = the model's threshold only)",
    )
    s.add_argument(
        "--level-steps",
        type=int,
        metavar="N",
        help="the gateway's shift detector: steps over which a stream learns its own level after its scales "
        "(ModelConfig.baseline.level_steps; default: the gateway's, 200; 0 = no shift detector)",
    )
    s.add_argument("--cusum-k", type=float, metavar="K", help="the shift detector's slack (default: the gateway's, 2)")
    s.add_argument(
        "--cusum-h", type=float, metavar="H", help="the shift detector's decision interval (default: the gateway's, 60)"
    )
    s.add_argument(
        "--bias-h",
        type=float,
        metavar="H",
        help="the step-change detector's limit on the signed errors' bias (ModelConfig.baseline.bias_h; default: "
        "the gateway's, 12; 0 = off)",
    )
    s.add_argument(
        "--false-alert-steps",
        type=int,
        metavar="N",
        help="the export's threshold target: at most one false alert per stream per N steps (default: published "
        "1000, chosen on the dev split; streaming the export's 100000)",
    )
    s.add_argument(
        "--score-reduce", choices=["mean", "max", "top-k"], help="the export's score reduce (default: the export's)"
    )
    s.add_argument("--top-k", type=int, metavar="K", help="the export's --top-k (default: the export's)")
    s.add_argument("--feature-cap", type=float, metavar="C", help="the export's --feature-cap (default: none)")
    s.set_defaults(func=run)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from exporter.evaluation.report import (
        format_splits,
        format_table,
        metrics,
        plot_results,
        split_metrics,
        write_json,
        write_predictions,
    )
    from exporter.evaluation.skab import load_anomaly_free, load_labelled, resolve_skab_dir
    from exporter.evaluation.skab_eval import PUBLISHED, STREAMING, run_published, run_streaming

    if args.files is not None and args.files < 1:
        raise ExportInputError(f"--files must be >= 1, got {args.files}")
    config = PUBLISHED if args.setting == "published" else STREAMING
    config = replace(config, train=replace(config.train, seed=args.seed))
    if args.baseline_steps is not None:
        if args.baseline_steps < 0:
            raise ExportInputError(f"--baseline-steps must be >= 0, got {args.baseline_steps}")
        config = replace(config, baseline=config.baseline.model_copy(update={"learn_steps": args.baseline_steps}))
    shift = {"level_steps": args.level_steps, "cusum_k": args.cusum_k, "cusum_h": args.cusum_h, "bias_h": args.bias_h}
    if any(v is not None for v in shift.values()):
        update = {k: v for k, v in shift.items() if v is not None}
        try:
            baseline = BaselineConfig.model_validate({**config.baseline.model_dump(), **update})
        except ValidationError as exc:
            raise ExportInputError(f"--level-steps/--cusum-k/--cusum-h/--bias-h: {exc.errors()[0]['msg']}") from None
        config = replace(config, baseline=baseline)
    score = {
        "false_alert_steps": args.false_alert_steps,
        "reduce": args.score_reduce,
        "top_k": args.top_k,
        "feature_cap": args.feature_cap,
    }
    config = replace(config, score=replace(config.score, **{k: v for k, v in score.items() if v is not None}))
    targets = [args.target] + (["cpu-fp32"] if args.fp32 and args.target != "cpu-fp32" else [])
    root = resolve_skab_dir(args.data)  # after the options: a bad one is named before any data is read
    files = load_labelled(root, args.files, args.split)

    started = time.monotonic()
    _log(f"SKAB {args.setting}: {len(files)} files, targets {', '.join(targets)}")
    if args.setting == "published":
        result = run_published(files, config, targets, work=args.work, log=_log)
    else:
        result = run_streaming(
            files, load_anomaly_free(root), config, targets, heads=args.train_on_heads, work=args.work, log=_log
        )
    ours = {target: metrics(files, result.precisions[target]) for target in targets}
    elapsed = time.monotonic() - started

    print(format_table(args.setting, ours))
    splits = {target: split_metrics(files, result.precisions[target]) for target in targets}
    if args.split == "all":
        print(format_splits(splits))
    if args.files is not None:
        rows = sum(m["rows"] for m in ours.values()) // len(ours)
        print(f"reduced run: {len(files)} of the 34 files ({rows} test rows)")
    if len(targets) > 1:
        print(f"{args.target} vs cpu-fp32: F1 {ours[args.target]['f1'] - ours['cpu-fp32']['f1']:+.4f}")
    print(f"trained on: {result.trained_on}")
    print(f"time: {elapsed:.0f}s (" + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()) + ")")
    if args.predictions_out is not None:
        written = write_predictions(args.predictions_out, files, result.precisions[args.target])
        print(f"predictions: {len(written)} files under {args.predictions_out}")
    if args.json is not None:
        extra = {
            "target": args.target,
            "files": [f.name for f in files],
            "data": str(root),
            "split": args.split,
            "splits": splits,
            "total_seconds": round(elapsed, 1),
        }
        print(f"json: {write_json(args.json, result, config, ours, extra=extra)}")
    if args.plots is not None:
        plots = plot_results(args.plots, files, result.precisions[args.target], label=f"{args.setting}, {args.target}")
        print(f"plots: {len(plots)} PNGs under {args.plots}")
    return 0
