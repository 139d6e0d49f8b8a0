"""The schema of one gateway config file (YAML), pydantic v2, unknown keys refused.

    broker:   where and how to connect (MQTT 5 by default)
    streams:  which topics carry which machine's samples, and which model serves them
    models:   name → artifact folder + target, scoring/threshold overrides, hysteresis
    targets:  name → execution provider, options, precisions, fallback policy
    runtime:  batching, queues, TTLs, checkpoints, metrics, topic prefix

Loading (YAML positions, environment overrides, secrets) is in `edge_config.loading`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "AlertPolicy",
    "BrokerConfig",
    "GatewayConfig",
    "ModelConfig",
    "RuntimeConfig",
    "StreamConfig",
    "TargetConfig",
    "TLSConfig",
    "validate_topic_filter",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def validate_topic_filter(value: str) -> str:
    """MQTT 5 §4.7: '#' only as the last whole level, '+' only as a whole level, no NUL."""
    if not value or len(value.encode()) > 65535 or "\0" in value:
        raise ValueError("a topic filter must be 1..65535 bytes with no NUL")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be the whole last level in {value!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level in {value!r}")
    return value


class TLSConfig(_Strict):
    ca_file: Path | None = None
    """CA bundle to verify the broker; None uses the system's default CAs."""
    cert_file: Path | None = None
    key_file: Path | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    insecure_skip_verify: bool = False
    """Disables certificate and hostname checks. Logged loudly at every start."""

    @model_validator(mode="after")
    def _pair(self) -> "TLSConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")
        return self


class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = "edgewatch"
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5, le=65535)
    session_expiry_s: int = Field(3600, ge=0)
    """MQTT 5 session expiry; 0 = clean session. The broker keeps QoS 1 input while we are away."""
    input_qos: Literal[0, 1] = 1
    alert_qos: Literal[0, 1] = 1
    tls: TLSConfig | None = None
    username: str | None = None
    password: SecretStr | None = None
    """Never required in the file: EDGEWATCH_BROKER__PASSWORD, or the file named by
    password_file / a `edgewatch-mqtt-password` file in $CREDENTIALS_DIRECTORY or /run/secrets."""
    password_file: Path | None = None
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)


class StreamConfig(_Strict):
    name: str
    topics: list[str] = Field(min_length=1)
    """MQTT topic filters, e.g. plant/+/+/telemetry."""
    stream_id: str | None = None
    """Template naming topic levels, e.g. plant/{line}/{machine}/telemetry → "{line}/{machine}".
    Default: the levels matched by the filter's wildcards, joined with '/'."""
    payload: Literal["json"] = "json"
    features: dict[str, str] | None = None
    """Map from payload key to the model's feature name, when they differ."""
    model: str

    _topics_ok = field_validator("topics")(lambda v: [validate_topic_filter(t) for t in v])


class AlertPolicy(_Strict):
    """Hysteresis: raise after k of the last n steps above threshold, clear after m below."""

    raise_k: int = Field(3, ge=1)
    raise_n: int = Field(5, ge=1)
    clear_m: int = Field(10, ge=1)
    warmup_steps: int = Field(20, ge=0)
    update_interval_s: float | None = Field(None, gt=0)
    """Publish `update` messages while raised at most this often; None = never."""
    top_features: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _k_le_n(self) -> "AlertPolicy":
        if self.raise_k > self.raise_n:
            raise ValueError(f"raise_k ({self.raise_k}) must be <= raise_n ({self.raise_n})")
        return self


class ModelConfig(_Strict):
    path: Path
    """Artifact folder holding model.onnx + manifest.json."""
    target: str
    threshold: float | None = None
    """Overrides the manifest's calibrated threshold."""
    ewma_alpha: float | None = Field(None, gt=0, le=1)
    alerts: AlertPolicy = AlertPolicy()
    on_gap: Literal["ignore", "reset"] = "ignore"
    """What a gap in seq (or ts beyond max_gap_s) does to the stream's state."""
    max_gap_s: float | None = Field(None, gt=0)


class TargetConfig(_Strict):
    type: Literal["cpu", "openvino", "cuda", "tensorrt", "qnn", "coreml", "dml"]
    options: dict[str, str | int | float | bool] = {}
    """Provider options passed to ONNX Runtime as-is (device_type, cache dirs, …)."""
    intra_op_threads: int = Field(1, ge=0)
    precisions: list[Literal["fp32", "fp16", "int8"]] = ["fp32", "fp16", "int8"]
    fallback: Literal["strict", "allow-cpu"] = "allow-cpu"
    """strict: refuse to start if any node would leave this provider; allow-cpu: report and count them."""


class RuntimeConfig(_Strict):
    max_batch: int = Field(1024, ge=1)
    max_wait_ms: float = Field(2.0, ge=0)
    queue_max: int = Field(100_000, ge=1)
    drop_policy: Literal["drop-oldest", "drop-newest", "block"] = "block"
    max_payload_bytes: int = Field(65536, ge=64)
    max_samples_per_message: int = Field(256, ge=1)
    max_streams: int = Field(100_000, ge=1)
    idle_ttl_s: float = Field(3600.0, gt=0)
    checkpoint_path: Path | None = None
    checkpoint_interval_s: float = Field(300.0, gt=0)
    metrics_address: str | None = "127.0.0.1:9108"
    """host:port of the Prometheus endpoint (and /healthz); None disables it."""
    topic_prefix: str = "edgewatch"
    stats_interval_s: float | None = Field(60.0, gt=0)
    outgoing_max: int = Field(10_000, ge=1)
    outgoing_max_bytes: int = Field(16 * 1024 * 1024, ge=1024)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or v.startswith("$") or re.search(r"[+#\x00]", v) or v.startswith("/") or v.endswith("/"):
            raise ValueError("topic_prefix must be non-empty, without + # NUL, a leading $ or edge slashes")
        return v


class GatewayConfig(_Strict):
    broker: BrokerConfig = BrokerConfig()
    streams: list[StreamConfig] = Field(min_length=1)
    models: dict[str, ModelConfig] = Field(min_length=1)
    targets: dict[str, TargetConfig] = {"cpu": TargetConfig(type="cpu")}
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _references(self) -> "GatewayConfig":
        for i, stream in enumerate(self.streams):
            if stream.model not in self.models:
                raise ValueError(f"streams[{i}].model: {stream.model!r} is not defined under models")
        for name, model in self.models.items():
            if model.target not in self.targets:
                raise ValueError(f"models.{name}.target: {model.target!r} is not defined under targets")
        return self
