"""Load an artifact folder and verify it before anything is served.

The model bytes are read once, checked against the manifest's sha256, checked
for ONNX external-data references, and the *verified bytes* are what the
session is built from (never the path: the file could change in between).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from edge_config.errors import ArtifactError
from edge_config.manifest import MODEL_NAME, Manifest, read_manifest, sha256_bytes

__all__ = ["Artifact", "load_artifact"]


@dataclass(frozen=True)
class Artifact:
    directory: Path
    manifest: Manifest
    model_bytes: bytes

    @property
    def sha256(self) -> str:
        return self.manifest.sha256


def _external_data_refs(model: onnx.ModelProto) -> list[str]:
    refs = []
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                refs.append(tensor.name)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                    refs.append(f"{node.name}.{attr.name}")
                graphs.extend([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs))
    return refs


def load_artifact(directory: Path | str) -> Artifact:
    """Read DIR/manifest.json + DIR/model.onnx; raise ArtifactError unless both are intact."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    path = directory / MODEL_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read model: {exc.strerror or exc}") from None
    digest = sha256_bytes(data)
    if digest != manifest.sha256:
        raise ArtifactError(
            f"{path}: sha256 {digest[:12]}… does not match the manifest's {manifest.sha256[:12]}… (tampered or replaced)"
        )
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ArtifactError(f"{path}: not a valid ONNX model: {exc}") from None
    refs = _external_data_refs(model)
    if refs:
        raise ArtifactError(f"{path}: refers to external data ({', '.join(refs[:3])}); artifacts must be self-contained")
    names = {i.name for i in model.graph.input}
    missing = [n for n in [manifest.input, *(s.input for s in manifest.state)] if n not in names]
    if missing:
        raise ArtifactError(f"{path}: graph has no input(s) {missing} named in the manifest")
    outputs = [o.name for o in model.graph.output]
    if outputs != manifest.outputs:
        raise ArtifactError(f"{path}: graph outputs {outputs} differ from the manifest's {manifest.outputs}")
    return Artifact(directory=directory, manifest=manifest, model_bytes=data)
