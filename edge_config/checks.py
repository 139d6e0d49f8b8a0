"""The checks that read files: artifact folders, model/target fit, feature names, TLS files.

They run on a validated config whose relative paths are already resolved, and they find
every problem rather than stopping at the first, each at the key that names the file.
"""

from __future__ import annotations

from pathlib import Path

from edge_config.artifact_files import MAX_MODEL_BYTES, read_artifact_file
from edge_config.compat import suitable_presets, target_problems
from edge_config.errors import ArtifactError, ConfigError
from edge_config.manifest import MANIFEST_NAME, MODEL_NAME, Manifest, parse_manifest, read_manifest_bytes, sha256_bytes
from edge_config.problems import Problem
from edge_config.schema import GatewayConfig, TrustConfig
from edge_config.signing import load_public_keys, verify_signature

__all__ = ["file_problems"]


def _artifact(name: str, directory: Path, trust: TrustConfig) -> tuple[Manifest | None, list[Problem]]:
    loc = ("models", name, "path")
    if not directory.is_dir():
        what = "is not a folder" if directory.exists() else "does not exist"
        hint = "an artifact folder holds model.onnx + manifest.json, written by `edgewatch export`"
        return None, [Problem(loc, f"{directory} {what}", hint)]
    try:
        manifest_bytes = read_manifest_bytes(directory)
        manifest = parse_manifest(manifest_bytes, directory / MANIFEST_NAME)
    except ArtifactError as exc:
        return None, [Problem(loc, str(exc))]
    model = directory / MODEL_NAME
    try:
        model_bytes = read_artifact_file(model, max_bytes=MAX_MODEL_BYTES)
        digest = sha256_bytes(model_bytes)
    except OSError as exc:
        return manifest, [Problem(loc, f"cannot read {model}: {exc.strerror or exc}")]
    except ArtifactError as exc:
        return manifest, [Problem(loc, str(exc))]
    if digest != manifest.sha256:
        return manifest, [
            Problem(loc, f"{model} does not match the sha256 in its manifest (replaced or damaged)", "export it again")
        ]
    try:
        verify_signature(
            directory,
            model_bytes,
            manifest_bytes,
            keys=load_public_keys(trust.public_keys),
            require=trust.require_signature,
        )
    except (ArtifactError, ConfigError) as exc:
        return manifest, [Problem(loc, str(exc))]
    return manifest, []


def _model_problems(config: GatewayConfig) -> tuple[dict[str, Manifest], list[Problem]]:
    manifests: dict[str, Manifest] = {}
    problems: list[Problem] = []
    for name, model in config.models.items():
        manifest, found = _artifact(name, model.path, config.trust)
        problems.extend(found)
        if manifest is None:
            continue
        manifests[name] = manifest
        target = config.targets.get(model.target)
        if target is None:  # an undefined target is reported by schema.consistency_problems
            continue
        for reason in target_problems(manifest, target):
            presets = ", ".join(suitable_presets(target)) or "none"
            problems.append(
                Problem(
                    ("models", name, "target"),
                    f"artifact {manifest.name!r} ({manifest.target}) does not suit target {model.target!r} "
                    f"({target.type}): {reason}",
                    f"export for this target with --target {presets}, or pick another target",
                )
            )
    return manifests, problems


def _feature_problems(config: GatewayConfig, manifests: dict[str, Manifest]) -> list[Problem]:
    problems = []
    for i, stream in enumerate(config.streams):
        manifest = manifests.get(stream.model)
        if manifest is None or stream.features is None:
            continue
        names = manifest.features.names
        mapped: dict[str, str] = {}
        for key, feature in stream.features.items():
            loc = ("streams", i, "features", key)
            if feature not in names:
                problems.append(
                    Problem(
                        loc,
                        f"{feature!r} is not a feature of model {stream.model!r}",
                        f"its features: {', '.join(names)}",
                    )
                )
            elif feature in mapped:
                problems.append(
                    Problem(loc, f"feature {feature!r} is already mapped from payload key {mapped[feature]!r}")
                )
            mapped.setdefault(feature, key)
    return problems


def _tls_problems(config: GatewayConfig) -> list[Problem]:
    tls = config.broker.tls
    if tls is None:
        return []
    problems = []
    for key in ("ca_file", "cert_file", "key_file"):
        path: Path | None = getattr(tls, key)
        if path is not None and not path.is_file():
            problems.append(
                Problem(("broker", "tls", key), f"{path} {'is not a file' if path.exists() else 'does not exist'}")
            )
    return problems


def _checkpoint_problems(config: GatewayConfig) -> list[Problem]:
    path = config.runtime.checkpoint_path
    if path is None or path.parent.is_dir():
        return []
    return [
        Problem(
            ("runtime", "checkpoint_path"),
            f"folder {path.parent} does not exist",
            "create it; systemd StateDirectory=edgewatch makes /var/lib/edgewatch",
        )
    ]


def file_problems(config: GatewayConfig) -> list[Problem]:
    """Every problem found by reading the files the config names."""
    manifests, problems = _model_problems(config)
    return [*problems, *_feature_problems(config, manifests), *_tls_problems(config), *_checkpoint_problems(config)]
