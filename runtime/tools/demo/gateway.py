"""The demo's gateway config: a real YAML file, written into the demo's folder and read back
through `edge_config.loading` — the same file and loader `edgewatch serve` uses, so a user
can open it, and serve it again against their own broker.

The shipped model is copied beside it (`model/`), which keeps the folder self-contained.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

from edge_config.loading import load_config
from edge_config.manifest import Calibration, Manifest
from edge_config.schema import BaselineConfig, GatewayConfig

__all__ = ["TOPIC_FILTER", "DemoGateway", "input_topic", "write_gateway"]

TOPIC_FILTER = "demo/+/telemetry"
"""The `+` level is the machine name, so it becomes the stream id (pump-1, pump-2, …)."""
CONFIG_NAME = "gateway.yaml"

_TEMPLATE = """\
# Written by `edgewatch demo`. Serve it yourself with:
#   edgewatch serve --config {config_name}
# (the demo's private broker is gone by then: set broker.host/port to yours).
broker:
  host: {host}
  port: {port}
  client_id: edgewatch-demo
streams:
  - name: pumps
    # One topic per machine; the level matched by `+` is the stream id (pump-1, pump-2, ...).
    topics: ["{topic_filter}"]
    model: {model_name}
models:
  {model_name}:
    # A copy of the int8 model shipped in the package (an LSTM forecaster trained on simulated
    # healthy pumps; the score is its normalized next-step error).
    path: model
    target: cpu
{threshold_comment}
    threshold: null
    # Per-stream baselines, at their defaults (edge_config.schema.BaselineConfig): after its warm-up
    # (below), each pump learns how large its own errors normally are, sensor by sensor, over
    # {learn_steps} steps, alerting meanwhile only above {learning_factor:g}x the threshold
    # ({learning_threshold:.1f}) and {learning_ratio:g}x its own mean score so far (a jump); from then on
    # its errors are divided by what it learned (never by less than the calibration's) and it alerts
    # above the threshold (docs/BASELINES.md).
    alerts:
      raise_k: 3        # raise when 3 of the last 5 steps are above the threshold
      raise_n: 5
      clear_m: 10       # clear after 10 steps in a row below it
      warmup_steps: 20  # a new stream's LSTM state settles for 20 steps before it may alert
      top_features: 3   # name the 3 features that contribute most to the score
targets:
  cpu:
    type: cpu
    intra_op_threads: 1
runtime:
  metrics_address: null  # no Prometheus endpoint: a fixed port could clash, and the demo is short
  stats_interval_s: 0.5  # the demo reads edgewatch/stats to know when every sample was processed
  topic_prefix: edgewatch
"""


@dataclass(frozen=True)
class DemoGateway:
    path: Path
    """The YAML file."""
    config: GatewayConfig
    """It, as `edgewatch serve` loads it."""
    model_name: str
    calibration: Calibration
    """The manifest's: its threshold is what every pump alerts against once it has learned its errors."""

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def alerting(self) -> str:
        """One line on what an alert means here, with the numbers the daemon runs on."""
        model = self.config.models[self.model_name]
        baseline, warmup = model.baseline, model.alerts.warmup_steps
        return (
            f"{self.threshold:.3f} from the manifest ({_rule(self.calibration)}); each pump learns its own "
            f"error scale per sensor over {baseline.learn_steps} s after a {warmup} s warm-up (meanwhile only "
            f"scores above {baseline.learning_factor * self.threshold:.1f} and {baseline.learning_ratio:g}x its own "
            f"mean so far alert), then alerts above "
            f"{self.threshold:.3f} on its rescaled score"
            + (
                f", or when that score stays above its own level (learned over the next {baseline.level_steps} s)"
                + (" or its errors stay biased on a sensor" if baseline.bias_h > 0 else "")
                if baseline.level_steps > 0
                else ""
            )
        )


def _rule(calibration: Calibration) -> str:
    if calibration.target_steps is None:
        return f"method {calibration.method}"
    how = "peaks over threshold" if calibration.method == "pot" else f"method {calibration.method}"
    return f"{how}: at most 1 false alert per stream per {calibration.target_steps:,} steps"


def _threshold_comment(calibration: Calibration) -> str:
    chosen = (
        f"null: the manifest's threshold, {calibration.threshold:.3f}, chosen by the exporter on "
        f"{calibration.steps} steps (1 s each) of a healthy pump it never trained on, replaying this "
        f"alert policy ({_rule(calibration)}; docs/THRESHOLDS.md)."
    )
    lines = [chosen]
    if calibration.warnings:
        lines.append(
            f"The manifest's calibration.warnings ({len(calibration.warnings)}) say where that data is "
            "short for the target and how the threshold was extrapolated."
        )
    return "\n".join(textwrap.fill(line, 100, initial_indent="    # ", subsequent_indent="    # ") for line in lines)


def input_topic(machine: str) -> str:
    """The topic one machine publishes its samples on (matches TOPIC_FILTER)."""
    return TOPIC_FILTER.replace("+", machine)


def write_gateway(out: Path, *, host: str, port: int, model_dir: Path, manifest: Manifest) -> DemoGateway:
    """Copy the model into `out/model`, write `out/gateway.yaml` and load it back (ConfigError if invalid)."""
    calibration = manifest.calibration
    if calibration is None:
        raise ValueError(f"{manifest.name}: the demo needs a calibrated model")
    out.mkdir(parents=True, exist_ok=True)
    target = out / "model"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target)
    path = out / CONFIG_NAME
    baseline = BaselineConfig()
    path.write_text(
        _TEMPLATE.format(
            config_name=path,
            host=host,
            port=port,
            topic_filter=TOPIC_FILTER,
            model_name=manifest.name,
            threshold_comment=_threshold_comment(calibration),
            learn_steps=baseline.learn_steps,
            learning_factor=baseline.learning_factor,
            learning_threshold=baseline.learning_factor * calibration.threshold,
            learning_ratio=baseline.learning_ratio,
        )
    )
    # No environment overrides: an EDGEWATCH_* variable left in the user's shell must not change
    # the demo (the daemon is started without them too).
    config = load_config(path, environ={})
    return DemoGateway(path, config, manifest.name, calibration)
