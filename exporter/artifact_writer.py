"""Write the artifact folder atomically: all of it, verified, or nothing.

The files go into a hidden temporary sibling of `--out`, are read back with the runtime's
own loader (`runtime.model.artifact.load_artifact`: sha256, no external data, graph names match
the manifest), signed when asked (edge_config.signing: DIR/signature.json over the exact bytes of
both files, checked against the key's public half), and only then is the folder renamed into
place. Any failure before the rename removes the temporary folder, so no half-written artifact
can be served.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from edge_config.errors import ArtifactError, ExportError, ExportInputError
from edge_config.manifest import MANIFEST_NAME, MODEL_NAME, Manifest, write_manifest
from runtime.model.artifact import load_artifact


def check_out_dir(out: Path, *, force: bool) -> None:
    """Refuse up front (before minutes of work) an --out that exists and would not be replaced."""
    out = Path(out)
    if out.exists() and not force:
        raise ExportInputError(f"--out {out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ExportInputError(f"--out {out} exists and is not a folder")


def write_artifact(out: Path, model: bytes, manifest: Manifest, *, force: bool, sign: Path | None = None) -> Path:
    """Write DIR/model.onnx + DIR/manifest.json (+ DIR/signature.json with the Ed25519 private key
    `sign`); `manifest.sha256` must match `model`."""
    out = Path(out)
    check_out_dir(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would keep a gateway's service user out; mkdir honours the umask.
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        (tmp / MODEL_NAME).write_bytes(model)
        write_manifest(manifest, tmp)
        if sign is not None:
            _sign(tmp, sign, model)
        try:
            load_artifact(tmp)
        except ArtifactError as exc:
            raise ExportError(f"internal: the artifact failed verification: {exc}") from None
        if out.exists():
            # Move the old folder aside first so the new one appears in a single rename.
            old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _sign(directory: Path, key: Path, model: bytes) -> None:
    """Sign the written files and check the signature with the key's own public half."""
    from edge_config.signing import public_key_of, sign_artifact, verify_signature

    manifest = (directory / MANIFEST_NAME).read_bytes()
    sign_artifact(directory, key, model, manifest)
    kid, public = public_key_of(key)
    try:
        verify_signature(directory, model, manifest, keys={kid: public}, require=True)
    except ArtifactError as exc:
        raise ExportError(f"internal: the signature failed verification: {exc}") from None
