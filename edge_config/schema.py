"""The schema of one gateway config file (YAML), pydantic v2, unknown keys refused.

    broker:   where and how to connect (MQTT 5 by default)
    streams:  which topics carry which machine's samples, and which model serves them
    models:   name → artifact folder + target, scoring/threshold overrides, hysteresis
    targets:  name → execution provider, options, precisions, fallback policy
    runtime:  batching, queues, TTLs, checkpoints, metrics, topic prefix

Every field's docstring is its documentation: `edgewatch config init` writes it as the
comment above the key. Loading (YAML positions, environment overrides, secrets, relative
paths, checks that read files) is in `edge_config.loading`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_config.presets import PROVIDER_BY_TYPE, ProviderType
from edge_config.problems import Problem, dotted
from edge_config.templates import check_template

__all__ = [
    "DEFER_CONSISTENCY_CHECKS",
    "AlertPolicy",
    "BaselineConfig",
    "BrokerConfig",
    "GatewayConfig",
    "ModelConfig",
    "RuntimeConfig",
    "ScoreStreamConfig",
    "StreamConfig",
    "TLSConfig",
    "TargetConfig",
    "TrustConfig",
    "consistency_problems",
    "filters_overlap",
    "validate_topic_filter",
]

DEFER_CONSISTENCY_CHECKS = "defer_consistency_checks"
"""Validation context key: the loader runs `consistency_problems` itself, so that each
problem is reported at its own line instead of once at the document root."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


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


def _input_filter(value: str) -> str:
    validate_topic_filter(value)
    # A shared subscription hands one machine's messages to several gateways in turn on most
    # brokers (mosquitto, HiveMQ round-robin), which would split its recurrent state.
    if value.startswith("$share/"):
        raise ValueError(
            f"{value!r}: shared subscriptions split a stream's messages across gateways; "
            "partition topics across gateways instead"
        )
    return value


TopicFilter = Annotated[str, AfterValidator(_input_filter)]
"""An input topic filter; validated one by one so that an error names its list index."""


class TLSConfig(_Strict):
    ca_file: Path | None = None
    """CA bundle to verify the broker; null uses the system's default CAs."""
    cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS; goes with key_file."""
    key_file: Path | None = None
    """Private key (PEM) of cert_file."""
    min_version: Literal["1.2", "1.3"] = "1.2"
    """Oldest TLS version accepted."""
    insecure_skip_verify: bool = False
    """Disables certificate and hostname checks. Logged loudly at every start."""

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")
        return self


class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    """MQTT broker host name or address."""
    port: int = Field(1883, ge=1, le=65535)
    """Broker port (1883 plain, 8883 usually TLS)."""
    client_id: str = "edgewatch"
    """MQTT client id; unique per gateway, the broker keeps our session under it."""
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT protocol version."""
    keepalive_s: int = Field(30, ge=5, le=65535)
    """Seconds between keep-alive pings."""
    ack_timeout_s: float = Field(10.0, ge=0.5, le=3600)
    """A QoS 1 publication unacknowledged this long while connected means the connection is
    broken: reconnect (counted, logged, /healthz not ready until the broker accepts us again).
    When nothing was published for half of it, an empty QoS 1 probe to <prefix>/probe checks
    the broker still answers: a frozen broker is noticed within 1.5x this + 0.5 s (docs/RELIABILITY.md)."""
    session_expiry_s: int = Field(3600, ge=0)
    """MQTT 5 session expiry; 0 = clean session. The broker keeps QoS 1 input while we are away."""
    input_qos: Literal[0, 1] = 1
    """QoS of the input subscriptions (1: at least once, acked after processing)."""
    alert_qos: Literal[0, 1] = 1
    """QoS of published alerts and status."""
    tls: TLSConfig | None = None
    """TLS settings; null = plain TCP."""
    username: str | None = None
    """MQTT user name; null = anonymous."""
    password: SecretStr | None = None
    """Never required in the file: EDGEWATCH_BROKER__PASSWORD, or the file named by
    password_file / a `edgewatch-mqtt-password` file in $CREDENTIALS_DIRECTORY or /run/secrets."""
    password_file: Path | None = None
    """File holding the MQTT password (one trailing newline is ignored)."""
    reconnect_min_s: float = Field(0.5, gt=0)
    """First reconnect delay; doubles up to reconnect_max_s."""
    reconnect_max_s: float = Field(30.0, gt=0)
    """Longest reconnect delay."""

    @model_validator(mode="after")
    def _backoff(self) -> BrokerConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must be <= reconnect_max_s ({self.reconnect_max_s})"
            )
        return self


class StreamConfig(_Strict):
    name: str
    """Name of this input (logs, metrics; the stream id when the filter has no wildcard)."""
    topics: list[TopicFilter] = Field(min_length=1)
    """MQTT topic filters, e.g. plant/+/+/telemetry."""
    stream_id: str | None = None
    """Template naming topic levels, e.g. plant/{line}/{machine}/telemetry → "{line}/{machine}".
    Default: the levels matched by the filter's wildcards, joined with '/'."""
    payload: Literal["json"] = "json"
    """Payload format (JSON now; Sparkplug B later)."""
    features: dict[str, str] | None = None
    """Map from payload key to the model's feature name, when they differ."""
    model: str
    """Name of the model (under models:) that serves these streams."""
    shadow: bool = False
    """A shadow entry (A/B, or trying a new model): its model also gets every message a primary
    entry with overlapping topics accepts, and publishes its alerts on
    <prefix>/shadow/<model>/alerts/<stream> only (no retained status); the primary's processing
    decides the acknowledgement. Its topics must overlap a primary entry's."""


class AlertPolicy(_Strict):
    """Hysteresis: raise after k of the last n steps above threshold, clear after m below."""

    raise_k: int = Field(3, ge=1)
    """Steps above threshold (out of raise_n) that raise an alert."""
    raise_n: int = Field(5, ge=1)
    """Window of recent steps raise_k is counted in."""
    clear_m: int = Field(10, ge=1)
    """Consecutive steps below threshold that clear a raised alert."""
    warmup_steps: int = Field(20, ge=0)
    """Steps a new (or reset) stream runs before it may alert: its state is still settling."""
    update_interval_s: float | None = Field(60.0, gt=0)
    """While raised, publish an `update` (the current score, severity and top features) at most this
    often, gateway monotonic seconds; null = never (docs/ALERTS.md)."""
    top_features: int = Field(3, ge=0)
    """How many most-deviating features an alert names."""

    @model_validator(mode="after")
    def _k_le_n(self) -> AlertPolicy:
        if self.raise_k > self.raise_n:
            raise ValueError(f"raise_k ({self.raise_k}) must be <= raise_n ({self.raise_n})")
        return self


class BaselineConfig(_Strict):
    """Per-stream baselines: each stream learns its own normal score level after it first appears
    (and after a reset command), then alerts against its own threshold (runtime.engine.baseline)."""

    learn_steps: int = Field(300, ge=0)
    """Warm steps a stream learns its own error scale from; 0 switches baselines off (every stream
    scored and thresholded as calibrated)."""
    policy: Literal["max", "stream"] = "max"
    """max: a feature's own scale is never below the calibrated one (a quieter machine keeps the
    calibrated sensitivity, a noisier one is weighed down); stream: its own scale either way."""
    learning_factor: float = Field(5.0, ge=1.0)
    """While a stream learns, it alerts only above this multiple of the model's threshold, and
    above learning_ratio × its own mean score so far: a jump to an extreme score still alerts,
    ordinary differences between machines are learned."""
    learning_ratio: float = Field(5.0, ge=1.0)
    """While a stream learns, it alerts only above this multiple of the mean of its own scores so
    far (from its first scored step; steps above the threshold, and warm steps above 2.5 × that
    mean, left out), and above learning_factor × the model's threshold: a healthy machine the
    model does not know scores high from its first step, a failure jumps against what the stream
    showed before."""
    out_of_range_factor: float = Field(25.0, gt=1.0)
    """A stream whose learned mean score is above this multiple of the calibration data's mean is
    not taken as normal: its retained status says `out-of-range` (the model does not know this
    machine) instead of `ok`; it alerts against its own level."""
    level_steps: int = Field(200, ge=0)
    """Warm steps after the scales are learned over which a stream learns its own level of the
    rescaled score; then a CUSUM against that level catches a persistent moderate shift that the
    per-step threshold misses (runtime.engine.baseline). 0 switches the shift detector off."""
    cusum_k: float = Field(2.0, ge=0.0)
    """The CUSUM's slack: how far above its own level (in standard deviations of the calibration
    scores) a stream's score must sit to count towards a shift."""
    cusum_h: float = Field(60.0, gt=0.0)
    """The CUSUM's decision interval, in standard deviations of the calibration scores: a shift
    is reported (as a step above the threshold, for the hysteresis) while the sum exceeds it."""
    bias_h: float = Field(12.0, ge=0.0)
    """The step-change detector's limit: a stream whose signed forecast errors stay biased on some
    feature, an EWMA of them this many of its own standard deviations away from the stream's mean
    (both learned over learn_steps + level_steps), counts as above the threshold
    (runtime.engine.shift). 0 switches it off; so does level_steps 0."""
    bias_lambda: float = Field(0.03, gt=0.0, le=1.0)
    """The step-change detector's EWMA weight (about 2/λ steps of memory)."""


class ModelConfig(_Strict):
    path: Path
    """Artifact folder holding model.onnx + manifest.json (relative to this file's folder)."""
    target: str
    """Name of the target (under targets:) this model runs on."""
    threshold: float | None = None
    """Overrides the manifest's calibrated threshold; null = the manifest's."""
    ewma_alpha: float | None = Field(None, gt=0, le=1)
    """Overrides the manifest's score smoothing (0 < alpha <= 1); null = the manifest's."""
    reduce: Literal["mean", "max", "top-k"] | None = None
    """Overrides how per-feature errors become one score (mean, max, top-k); null = the manifest's."""
    top_k: int | None = Field(None, ge=1)
    """Overrides the feature count reduce "top-k" averages; null = the manifest's."""
    feature_cap: float | None = Field(None, gt=0)
    """Overrides the cap on a feature's squared normalized error (e.g. 25); null = the manifest's.
    Any score override changes the score the calibrated threshold was chosen on."""
    alerts: AlertPolicy = AlertPolicy()
    """Alert hysteresis."""
    on_gap: Literal["ignore", "reset"] = "ignore"
    """What a gap in seq (or ts beyond max_gap_s) does to the stream's state."""
    max_gap_s: float | None = Field(None, gt=0)
    """A time gap longer than this counts as a gap; null = only seq gaps count."""
    baseline: BaselineConfig = BaselineConfig()
    """Per-stream baselines (learning period, how they combine with the model's threshold)."""


class TargetConfig(_Strict):
    type: ProviderType
    """Execution provider: cpu, openvino, cuda, tensorrt, qnn, coreml or dml."""
    options: dict[str, str | int | float | bool] = {}
    """Provider options passed to ONNX Runtime as-is (device_type, cache dirs, …)."""
    intra_op_threads: int = Field(1, ge=0)
    """Threads one inference may use; 0 = ONNX Runtime's default (all cores)."""
    precisions: list[Literal["fp32", "fp16", "int8"]] = ["fp32", "fp16", "int8"]
    """Artifact precisions this target accepts."""
    fallback_providers: list[ProviderType] = []
    """Accelerator providers that take the nodes `type` cannot run, in order
    (tensorrt → cuda). CPU is never listed here: `fallback` decides about it."""
    fallback: Literal["strict", "allow-cpu"] = "allow-cpu"
    """strict: refuse to start if any node would leave this provider; allow-cpu: report and count them."""

    @field_validator("fallback_providers")
    @classmethod
    def _chain(cls, chain: list[str], info: ValidationInfo) -> list[str]:
        if "cpu" in chain:
            raise ValueError(
                "'cpu' is not a fallback provider; set `fallback: allow-cpu` to let nodes fall back to CPU"
            )
        if len(set(chain)) != len(chain) or info.data.get("type") in chain:
            raise ValueError("each provider may appear once in type + fallback_providers")
        return chain

    @property
    def providers(self) -> tuple[str, ...]:
        """ONNX Runtime provider names of the chain: `type`, then `fallback_providers` (no implicit CPU)."""
        return tuple(PROVIDER_BY_TYPE[t] for t in (self.type, *self.fallback_providers))


class ScoreStreamConfig(_Strict):
    """The optional score stream on <prefix>/scores/<stream> (docs/ALERTS.md "Score stream")."""

    interval_s: float = Field(10.0, gt=0)
    """Publish each stream's latest score at most this often (gateway monotonic seconds)."""
    min_change: float | None = Field(None, gt=0)
    """Also publish at once when score / threshold moved by at least this much since the stream's
    last published score (e.g. 0.25); null = on the interval only."""


class RuntimeConfig(_Strict):
    max_batch: int = Field(1024, ge=1)
    """Most messages stepped in one inference call."""
    max_wait_ms: float = Field(2.0, ge=0)
    """How long the worker waits to fill a batch after a full one (max_batch: it is behind); a
    quiet gateway never waits (runtime.service.worker)."""
    queue_max: int = Field(100_000, ge=1)
    """Bound of the input queue between MQTT and the worker."""
    drop_policy: Literal["drop-oldest", "drop-newest", "block"] = "block"
    """When the queue is full: drop-oldest, drop-newest, or block (QoS 1 back-pressure)."""
    max_payload_bytes: int = Field(65536, ge=64)
    """Larger payloads are rejected."""
    max_samples_per_message: int = Field(256, ge=1)
    """Most samples one message may carry."""
    max_streams: int = Field(100_000, ge=1)
    """Most streams held in memory at once."""
    idle_ttl_s: float = Field(3600.0, gt=0)
    """A stream silent this long is forgotten (its state is dropped)."""
    stale_after_s: float | None = Field(300.0, gt=0)
    """A stream with no sample stepped for this long (silent, or every message rejected) gets the
    retained status `stale` (not while an alert is open); its next good sample restores the real
    one. Set it above the slowest stream's sample interval; null = never stale."""
    max_seq_jump: int | None = Field(64, ge=1)
    """A message whose seq is more than this ahead of its stream's last one is refused (rejected
    "seq-jump") unless the next message continues from it: one forged seq cannot make more than
    this many real samples after it look late; a sensor that really skipped ahead loses one
    message. 64 = the seqs remembered to tell late samples from duplicates. null = no bound."""
    max_ts_future_s: float | None = Field(86400.0, gt=0)
    """A ts more than this ahead of the gateway's clock, or before 2000-01-01, is rejected
    ("ts-range"); one day leaves room for a sensor clock set to another time zone. null = only
    the payload contract's bounds (0 <= ts < 1e11)."""
    reset_min_interval_s: float | None = Field(900.0, gt=0)
    """At most one reset command per stream in this many seconds; more are rejected ("reset-rate"):
    a reset storm cannot keep a faulty machine warming up. null = no limit."""
    checkpoint_path: Path | None = None
    """File where per-stream state is saved and restored across restarts; null = no checkpoints."""
    checkpoint_interval_s: float = Field(900.0, gt=0)
    """Seconds between checkpoints (and one at every clean stop); only models whose state changed
    are written. 900 s: ~127 MB/day of flash writes for 1,000 streams of a 2x64 LSTM (docs/RELIABILITY.md)."""
    metrics_address: str | None = "127.0.0.1:9108"
    """host:port of the Prometheus endpoint (and /healthz); null disables it."""
    topic_prefix: str = "edgewatch"
    """Prefix of every topic edgewatch publishes (<prefix>/alerts/<stream>, <prefix>/available)."""
    stats_interval_s: float | None = Field(60.0, gt=0)
    """Seconds between one-line statistics in the log; null = never."""
    score_stream: ScoreStreamConfig | None = None
    """Publish each stream's score and threshold on <prefix>/scores/<stream>; null (default) = off."""
    outgoing_max: int = Field(10_000, ge=1)
    """Most outgoing messages queued while the broker is away."""
    outgoing_max_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Most bytes of outgoing messages queued while the broker is away."""

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or v.startswith(("$", "/")) or re.search(r"[+#\x00]", v) or v.endswith("/"):
            raise ValueError("topic_prefix must be non-empty, without + # NUL, a leading $ or edge slashes")
        return v

    @field_validator("metrics_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"metrics_address {v!r} must be host:port, e.g. 127.0.0.1:9108")
        return v


class TrustConfig(_Strict):
    """Which signed artifacts this gateway accepts (edge_config.signing, docs/RELIABILITY.md)."""

    public_keys: list[Path] = []
    """Ed25519 public keys (PEM files, relative to this file's folder) whose signatures
    (signature.json, written by `edgewatch export --sign KEY`) are trusted."""
    require_signature: bool = False
    """Refuse a model that is unsigned or not validly signed by one of public_keys; off: an
    unsigned model is served with a warning (a signature present is still checked when keys are set)."""


class GatewayConfig(_Strict):
    broker: BrokerConfig = BrokerConfig()
    """The MQTT broker."""
    streams: list[StreamConfig] = Field(min_length=1)
    """Inputs: topic filters, stream ids, payload format, and the model serving them."""
    models: dict[str, ModelConfig] = Field(min_length=1)
    """Models by name: artifact folder, target, scoring overrides."""
    targets: dict[str, TargetConfig] = {"cpu": TargetConfig(type="cpu")}
    """Targets by name: where a model runs."""
    runtime: RuntimeConfig = RuntimeConfig()
    """Batching, queues, state, metrics and topics."""
    trust: TrustConfig = TrustConfig()
    """Signed artifacts: trusted public keys, and whether a signature is required."""

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> GatewayConfig:
        if info.context and info.context.get(DEFER_CONSISTENCY_CHECKS):
            return self
        problems = consistency_problems(self)
        if problems:
            raise ValueError("; ".join(f"{dotted(p.loc)}: {p.message}" for p in problems))
        return self


def _closest(name: str, known: list[str], section: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]!r}?" if close else f"defined {section}: {', '.join(known) or 'none'}"


def _template_problems(stream: StreamConfig, index: int) -> list[Problem]:
    """The first topic filter the stream's id template does not fit (one problem per stream)."""
    if stream.stream_id is None:
        return []
    for topic in stream.topics:
        try:
            check_template(stream.stream_id, topic)
        except ValueError as exc:
            return [Problem(("streams", index, "stream_id"), str(exc))]
    return []


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT topic filters (level by level: '+' any one level,
    '#' the rest, including the parent level itself: "a/#" matches "a")."""
    left, right = a.split("/"), b.split("/")
    for i, (x, y) in enumerate(zip(left, right, strict=False)):
        if x == "#" or y == "#":
            return True
        if x != y and x != "+" and y != "+":
            return False
        if i == min(len(left), len(right)) - 1 and len(left) != len(right):
            longer = left if len(left) > len(right) else right
            return longer[i + 1 :] == ["#"]
    return True


def _shares_topics(a: StreamConfig, b: StreamConfig) -> tuple[str, str] | None:
    return next(((x, y) for x in a.topics for y in b.topics if filters_overlap(x, y)), None)


def _overlap_problems(streams: list[StreamConfig]) -> list[Problem]:
    """Primary stream entries whose topic filters overlap: a message is routed to the first entry
    only, so the other model would silently never see those topics (shadow entries: below)."""
    problems: list[Problem] = []
    for j, later in enumerate(streams):
        if later.shadow:
            problems.extend(_shadow_problems(streams, j))
            continue
        for i, earlier in enumerate(streams[:j]):
            pair = None if earlier.shadow else _shares_topics(earlier, later)
            if pair is not None:
                problems.append(
                    Problem(
                        ("streams", j, "topics"),
                        f"{pair[1]!r} overlaps {pair[0]!r} of streams[{i}] ({earlier.name!r}): a message is "
                        "served by one stream entry only, so this one would miss those topics",
                        "make the filters disjoint, or declare the second one `shadow: true` with another model",
                    )
                )
                break
    return problems


def _shadow_problems(streams: list[StreamConfig], j: int) -> list[Problem]:
    """A shadow entry must overlap a primary entry, and its model serve only shadow entries (its
    alerts go to its own topics) under a name that is one topic level."""
    shadow, loc = streams[j], ("streams", j)
    if not shadow.model or re.search(r"[/+#\x00]", shadow.model):
        return [Problem((*loc, "model"), f"a shadow model's name is a topic level: {shadow.model!r} has / + # or NUL")]
    if any(not s.shadow and s.model == shadow.model for s in streams):
        return [Problem((*loc, "model"), f"model {shadow.model!r} also serves a primary stream entry")]
    if not any(not s.shadow and _shares_topics(s, shadow) for s in streams):
        return [Problem((*loc, "topics"), "a shadow entry's topics must overlap a primary (non-shadow) entry's")]
    return []


def consistency_problems(config: GatewayConfig) -> list[Problem]:
    """What no single section can check alone, each at its own place: stream-id templates that
    do not fit their topic filters, duplicate stream names, primary stream entries with overlapping
    topic filters, shadow entries that shadow nothing, undefined models and targets.

    The template check lives here, not on StreamConfig, so that `runtime.mqtt.topics` can still be
    handed (and refuse) any StreamConfig.
    """
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, stream in enumerate(config.streams):
        if stream.name in seen:
            where = f"also streams[{seen[stream.name]}]"
            problems.append(Problem(("streams", i, "name"), f"duplicate stream name {stream.name!r} ({where})"))
        seen.setdefault(stream.name, i)
        problems.extend(_template_problems(stream, i))
        if stream.model not in config.models:
            hint = _closest(stream.model, list(config.models), "models")
            problems.append(Problem(("streams", i, "model"), f"{stream.model!r} is not defined under models", hint))
    problems.extend(_overlap_problems(config.streams))
    for name, model in config.models.items():
        if model.target not in config.targets:
            hint = _closest(model.target, list(config.targets), "targets")
            problems.append(Problem(("models", name, "target"), f"{model.target!r} is not defined under targets", hint))
    return problems
