"""The demo's gateway config: a real YAML file, written into the demo's folder and read back
through `edge_config.loading` — the same file and loader `edgewatch serve` uses, so a user
can open it, and serve it again against their own broker.

The shipped model is copied beside it (`model/`), which keeps the folder self-contained.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edge_config.loading import load_config
from edge_config.manifest import Manifest
from edge_config.schema import GatewayConfig

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
    # Overrides the manifest's threshold ({manifest_threshold:.3f}), the 99.5% quantile of healthy
    # calibration scores: a healthy pump is above it 0.5% of the time, and even through the
    # hysteresis below, 7 of the 19 healthy demo pumps raise a short false alert within 10
    # minutes at it. mean + {z:g} std of the same scores ({threshold:.3f}) keeps them quiet and still
    # catches the failing pump about half a minute after its valve starts closing.
    threshold: {threshold!r}
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
    threshold: float
    manifest_threshold: float


def input_topic(machine: str) -> str:
    """The topic one machine publishes its samples on (matches TOPIC_FILTER)."""
    return TOPIC_FILTER.replace("+", machine)


def write_gateway(
    out: Path, *, host: str, port: int, model_dir: Path, manifest: Manifest, threshold: float, z: float
) -> DemoGateway:
    """Copy the model into `out/model`, write `out/gateway.yaml` and load it back (ConfigError if invalid)."""
    if manifest.calibration is None:
        raise ValueError(f"{manifest.name}: the demo needs a calibrated model")
    out.mkdir(parents=True, exist_ok=True)
    target = out / "model"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target)
    path = out / CONFIG_NAME
    path.write_text(
        _TEMPLATE.format(
            config_name=path,
            host=host,
            port=port,
            topic_filter=TOPIC_FILTER,
            model_name=manifest.name,
            manifest_threshold=manifest.calibration.threshold,
            threshold=threshold,
            z=z,
        )
    )
    # No environment overrides: an EDGEWATCH_* variable left in the user's shell must not change
    # the demo (the daemon is started without them too).
    config = load_config(path, environ={})
    return DemoGateway(path, config, manifest.name, threshold, manifest.calibration.threshold)
