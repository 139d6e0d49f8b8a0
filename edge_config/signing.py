"""Signed artifacts: an Ed25519 signature over model.onnx *and* manifest.json (issue 12).

The sha256 in the manifest catches a damaged model, not a tampered one: whoever can edit the
model can recompute it, and nothing covered the manifest (a threshold of 1e12 was served
silently). `edgewatch export --sign KEY` writes DIR/signature.json:

    {"format": 1, "algorithm": "ed25519", "key_id": "<16 hex>",
     "model_sha256": "<hex>", "manifest_sha256": "<hex>", "signature": "<base64>"}

The signature is over `signed_message(model_sha256, manifest_sha256)`: a fixed prefix and both
digests, so neither file can change without it failing. A gateway lists the public keys it
trusts (`trust.public_keys`, PEM files as `openssl pkey -pubout` writes them) and may require a
valid signature (`trust.require_signature`); see docs/RELIABILITY.md, "Artifact integrity".

Keys are plain PKCS#8 / SubjectPublicKeyInfo PEM files (`edgewatch keys generate`, or
`openssl genpkey -algorithm ed25519`), read with the `cryptography` library (imported lazily:
only signing and checking need it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_config.artifact_files import MAX_SIGNATURE_BYTES, read_artifact_file
from edge_config.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "SIGNATURE_NAME",
    "Verdict",
    "generate_keys",
    "key_id",
    "load_public_keys",
    "public_key_of",
    "sign_artifact",
    "signed_message",
    "verify_signature",
]

SIGNATURE_NAME = "signature.json"
_FORMAT = 1
_PREFIX = b"edgewatch-artifact-signature-v1\n"


def _crypto() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:  # pragma: no cover - a runtime dependency; only a broken install lacks it
        raise ConfigError("signed artifacts need the `cryptography` package (pip install cryptography)") from None


def signed_message(model_sha256: str, manifest_sha256: str) -> bytes:
    return _PREFIX + f"model.onnx sha256 {model_sha256}\nmanifest.json sha256 {manifest_sha256}\n".encode()


def key_id(public: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _load_private(path: Path) -> Ed25519PrivateKey:
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: an Ed25519 key is required, got {type(key).__name__}")
    return key


def public_key_of(private_key: Path) -> tuple[str, Ed25519PublicKey]:
    """(key id, public key) of a private key file: `export --sign` checks it before any work."""
    public = _load_private(private_key).public_key()
    return key_id(public), public


def load_public_keys(paths: Sequence[Path]) -> dict[str, Ed25519PublicKey]:
    """key id → public key, from PEM files (ConfigError on a missing, unreadable or non-Ed25519 file)."""
    if not paths:
        return {}
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path}: an Ed25519 public key is required, got {type(key).__name__}")
        keys[key_id(key)] = key
    return keys


def generate_keys(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair (private file mode 0600); returns its key id."""
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for path in (private_path, public_path):
        if Path(path).exists():
            raise ConfigError(f"{path} already exists; not overwritten")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(private)
    public = key.public_key()
    Path(public_path).write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(public)


def sign_artifact(directory: Path, private_key: Path, model_bytes: bytes, manifest_bytes: bytes) -> Path:
    """Write DIR/signature.json over these exact model and manifest bytes."""
    key = _load_private(private_key)
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    doc = {
        "format": _FORMAT,
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "model_sha256": model_sha,
        "manifest_sha256": manifest_sha,
        "signature": base64.b64encode(key.sign(signed_message(model_sha, manifest_sha))).decode(),
    }
    path = Path(directory) / SIGNATURE_NAME
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the signature check found for an artifact the gateway accepts."""

    key_id: str | None
    """The trusted key that signed it; None: unsigned (accepted because not required)."""
    warning: str | None = None
    """A line to log: unsigned, or signed but no keys configured to check it."""


def _signature_doc(directory: Path) -> dict[str, object] | None:
    path = Path(directory) / SIGNATURE_NAME
    try:
        raw = read_artifact_file(path, max_bytes=MAX_SIGNATURE_BYTES)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable signature: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("algorithm") != "ed25519":
        raise ArtifactError(f"{path}: not an edgewatch Ed25519 signature (format {_FORMAT})")
    return doc


def verify_signature(
    directory: Path,
    model_bytes: bytes,
    manifest_bytes: bytes,
    *,
    keys: dict[str, Ed25519PublicKey],
    require: bool,
) -> Verdict:
    """Check DIR/signature.json against these exact bytes and the trusted keys; ArtifactError if
    it fails, or if it is missing while `require`. A signature present while no key is trusted
    is not checked (there is nothing to check it against): accepted with a warning, unless required."""
    path = Path(directory) / SIGNATURE_NAME
    doc = _signature_doc(directory)
    if doc is None:
        if require:
            raise ArtifactError(
                f"{directory}: unsigned artifact (no {SIGNATURE_NAME}) and trust.require_signature is on"
            )
        return Verdict(None, f"{directory}: unsigned artifact served (trust.require_signature is off)")
    signer = str(doc.get("key_id"))
    if not keys:
        if require:
            raise ArtifactError(f"{path}: trust.require_signature is on but trust.public_keys lists no key")
        return Verdict(None, f"{directory}: signed by key {signer[:16]} but no trust.public_keys set: not checked")
    key = keys.get(signer)
    if key is None:
        raise ArtifactError(f"{path}: signed by key {signer[:16]}, which is not in trust.public_keys")
    _crypto()
    from cryptography.exceptions import InvalidSignature

    model_sha = hashlib.sha256(model_bytes).hexdigest()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    try:
        signature = base64.b64decode(str(doc.get("signature")), validate=True)
        key.verify(signature, signed_message(model_sha, manifest_sha))
    except (InvalidSignature, ValueError):
        changed = [
            name
            for name, digest in (("model.onnx", model_sha), ("manifest.json", manifest_sha))
            if doc.get(f"{name.split('.')[0]}_sha256") != digest
        ]
        what = f"{' and '.join(changed)} changed since signing" if changed else "the signature does not verify"
        raise ArtifactError(f"{path}: bad signature ({what}): tampered or replaced") from None
    return Verdict(signer)
