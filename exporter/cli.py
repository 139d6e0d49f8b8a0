"""`edgewatch export`: a trained PyTorch LSTM/GRU module → DIR/model.onnx + DIR/manifest.json.

Progress goes to stderr step by step; the summary (sizes, parity table, where the files
are) to stdout. Exit codes: 0 artifact written, 1 a parity gate failed, 2 refused model or
bad input. torch is imported inside `run` only, so `edgewatch --help` and the gateway's
commands never load it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_config.presets import EXPORT_TARGETS
from runtime.engine.thresholds import DEFAULT_TARGET_STEPS

__all__ = ["format_summary", "register", "run"]

_EPILOG = (
    "targets:\n"
    + "\n".join(
        f"  {t.name:<14} {t.description}\n  {'':<14} providers: {', '.join(t.provider_types)}"
        for t in EXPORT_TARGETS.values()
    )
    + "\n\nexit codes: 0 artifact written, 1 a parity gate failed, 2 model refused or bad input"
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a PyTorch LSTM/GRU model to a streaming, quantized ONNX artifact (with parity gates)",
        description="Export a trained PyTorch LSTM/GRU module to DIR/model.onnx + DIR/manifest.json.\n"
        "nn.LSTM/nn.GRU, nn.LSTMCell/nn.GRUCell loops, step modules and causal Conv1d stems (docs/EXPORT.md).\n"
        "The recurrent state becomes explicit graph inputs/outputs; the parity gates prove the result.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, metavar="SPEC", help="path/to/file.py:Name or package.module:Name (class or factory)"
    )
    p.add_argument("--weights", required=True, type=Path, metavar="FILE", help="state_dict saved with torch.save")
    p.add_argument("--target", required=True, metavar="NAME", help=f"export preset: {', '.join(EXPORT_TARGETS)}")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="artifact folder to create")
    p.add_argument("--model-kwargs", metavar="JSON", help="keyword arguments for SPEC, a JSON object")
    p.add_argument(
        "--features",
        metavar="A,B,C",
        help="feature names in model input order (default: the input width is found from the module; "
        "these name or override it)",
    )
    p.add_argument(
        "--normalization", type=Path, metavar="FILE.json", help='{"features": [...], "mean": [...], "std": [...]}'
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="CSV",
        help="normal operating data, raw units (; or , separated, header row)",
    )
    p.add_argument(
        "--task",
        default="auto",
        choices=["auto", "forecast", "probability"],
        help="what the output means (default: auto)",
    )
    p.add_argument(
        "--name",
        help="artifact name in the manifest (default: the --weights file's stem; SPEC's Name if that stem is generic)",
    )
    s = p.add_argument_group("score and threshold (docs/THRESHOLDS.md)")
    s.add_argument(
        "--false-alert-steps",
        type=int,
        default=DEFAULT_TARGET_STEPS,
        metavar="N",
        help=f"threshold: at most 1 false alert per stream per N steps of normal data (default {DEFAULT_TARGET_STEPS})",
    )
    s.add_argument(
        "--score-reduce",
        choices=["mean", "max", "top-k"],
        default="mean",
        help="per-feature errors → one score: their mean, max, or mean of the --top-k largest (default mean)",
    )
    s.add_argument(
        "--top-k", type=int, default=2, metavar="K", help="features --score-reduce top-k averages (default 2)"
    )
    s.add_argument(
        "--feature-cap",
        type=float,
        metavar="X",
        help="cap on each feature's squared normalized error before smoothing, e.g. 25 (default: none)",
    )
    g = p.add_argument_group("parity gates")
    g.add_argument(
        "--atol-onnx", type=float, default=1e-4, metavar="X", help="gate 1: float ONNX vs PyTorch (default 1e-4)"
    )
    g.add_argument(
        "--atol-stream",
        type=float,
        default=1e-4,
        metavar="X",
        help="gate 2: one step at a time vs sequence (default 1e-4)",
    )
    g.add_argument(
        "--atol-quant", type=float, metavar="X", help="gate 3: quantized vs float (default 0.1 int8, 0.01 fp16)"
    )
    g.add_argument(
        "--min-decision-agreement",
        type=float,
        default=0.99,
        metavar="P",
        help="gate 3: share of agreeing alert decisions (default 0.99)",
    )
    g.add_argument(
        "--steps", type=int, default=2000, metavar="N", help="gate 3 stream length, at least 2000 (default 2000)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument(
        "--sign",
        type=Path,
        metavar="KEY",
        help="sign model.onnx + manifest.json with this Ed25519 private key (PEM; `edgewatch keys generate`): "
        "writes signature.json, which gateways with trust.public_keys check",
    )
    p.set_defaults(func=run)


def format_summary(manifest: Any, directory: Path) -> str:
    """Sizes, the parity table and the files, for the end of a successful export."""
    sizes = manifest.sizes
    lines = [f"exported {manifest.name} for {manifest.target} ({manifest.precision}, {manifest.quantization})"]
    fp32, model = sizes.get("fp32", 0), sizes.get("model", 0)
    if model != fp32 and fp32:
        lines.append(
            f"  size: fp32 {fp32 / 1024:.1f} KiB → {manifest.precision} {model / 1024:.1f} KiB ({model / fp32:.0%})"
        )
    else:
        lines.append(f"  size: {model / 1024:.1f} KiB")
    lines.append("  parity:")
    lines.append(f"    {'gate':<21} {'metric':<19} {'value':>10} {'limit':>10}  result")
    for r in manifest.parity:
        verdict = "skipped" if r.skipped else ("passed" if r.passed else "FAILED")
        lines.append(f"    {r.gate:<21} {r.metric:<19} {r.value:>10.3g} {r.tolerance:>10.3g}  {verdict}")
        if r.detail:
            lines.append(f"      {r.detail}")
    cal = manifest.calibration
    if cal is not None:
        target = f", at most 1 false alert per {cal.target_steps} steps" if cal.target_steps else ""
        lines.append(f"  threshold: {cal.threshold:.4g} ({cal.method}{target})")
        lines.extend(f"  warning: {w}" for w in cal.warnings)
    lines.extend(f"  note: {note}" for note in manifest.notes)
    lines.append(f"  files: {directory / 'model.onnx'}  {directory / 'manifest.json'}")
    if (directory / "signature.json").exists():
        lines[-1] += f"  {directory / 'signature.json'}"
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from exporter.loading import parse_model_kwargs
    from exporter.parity import Tolerances
    from exporter.pipeline import ExportRequest, run_export
    from exporter.score_calibration import ScoreOptions

    features = [f.strip() for f in args.features.split(",")] if args.features else None
    request = ExportRequest(
        model=args.model,
        weights=args.weights,
        target=args.target,
        out=args.out,
        model_kwargs=parse_model_kwargs(args.model_kwargs),
        features=features,
        normalization=args.normalization,
        calibration=args.calibration,
        task=args.task,
        tolerances=Tolerances(
            onnx=args.atol_onnx, stream=args.atol_stream, quant=args.atol_quant, decisions=args.min_decision_agreement
        ),
        steps=args.steps,
        score=ScoreOptions(
            false_alert_steps=args.false_alert_steps,
            reduce=args.score_reduce,
            top_k=args.top_k,
            feature_cap=args.feature_cap,
        ),
        force=args.force,
        name=args.name,
        sign=args.sign,
    )
    if args.sign is not None:  # a bad key must fail before minutes of work, not after
        from edge_config.signing import public_key_of

        public_key_of(args.sign)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run_export(request, log)
    print(format_summary(result.manifest, result.directory))
    return 0
