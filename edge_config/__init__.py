"""edge_config: the contracts shared by exporter and runtime.

The gateway config schema, the model artifact manifest, the target presets and
the error hierarchy. Imports neither torch nor onnxruntime.

The names below are the package's public API; the modules behind them (`schema`,
`manifest`, `presets`, `loading`, …) are the implementation and may move.
"""

from __future__ import annotations

from edge_config.compat import suitable_presets, target_problems
from edge_config.errors import (
    ArtifactError,
    BatchError,
    BusError,
    CheckpointError,
    ConfigError,
    EdgewatchError,
    ExportError,
    ExportInputError,
    ParityError,
    PayloadError,
    TargetError,
    UnsupportedModelError,
)
from edge_config.loading import load_config
from edge_config.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MODEL_NAME,
    Calibration,
    Features,
    Manifest,
    Normalization,
    ParityResult,
    ScoreSettings,
    StateSpec,
    read_manifest,
    sha256_bytes,
    write_manifest,
)
from edge_config.presets import (
    EXPORT_TARGETS,
    PROVIDER_BY_TYPE,
    ExportTarget,
    Precision,
    ProviderType,
    Quantization,
    check_precision,
    export_target,
)
from edge_config.schema import (
    AlertPolicy,
    BaselineConfig,
    BrokerConfig,
    GatewayConfig,
    ModelConfig,
    RuntimeConfig,
    StreamConfig,
    TargetConfig,
    TLSConfig,
    validate_topic_filter,
)

__all__ = [
    "EXPORT_TARGETS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MODEL_NAME",
    "PROVIDER_BY_TYPE",
    "AlertPolicy",
    "ArtifactError",
    "BaselineConfig",
    "BatchError",
    "BrokerConfig",
    "BusError",
    "Calibration",
    "CheckpointError",
    "ConfigError",
    "EdgewatchError",
    "ExportError",
    "ExportInputError",
    "ExportTarget",
    "Features",
    "GatewayConfig",
    "Manifest",
    "ModelConfig",
    "Normalization",
    "ParityError",
    "ParityResult",
    "PayloadError",
    "Precision",
    "ProviderType",
    "Quantization",
    "RuntimeConfig",
    "ScoreSettings",
    "StateSpec",
    "StreamConfig",
    "TLSConfig",
    "TargetConfig",
    "TargetError",
    "UnsupportedModelError",
    "check_precision",
    "export_target",
    "load_config",
    "read_manifest",
    "sha256_bytes",
    "suitable_presets",
    "target_problems",
    "validate_topic_filter",
    "write_manifest",
]
