"""Load an artifact folder and verify it before anything is served.

The model bytes are read once, checked against the manifest's sha256, checked
for ONNX external-data references (in every tensor the format can hold: dense and
sparse initializers, node attributes, subgraphs, local functions), run through the
ONNX checker and compared with the manifest's names and shapes. The *verified
bytes* are what the session is built from (never the path: the file could change
in between).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from edge_config.artifact_files import MAX_MODEL_BYTES, read_artifact_file
from edge_config.errors import ArtifactError, ConfigError
from edge_config.manifest import MANIFEST_NAME, MODEL_NAME, Manifest, parse_manifest, read_manifest_bytes, sha256_bytes
from edge_config.schema import TrustConfig

__all__ = ["Artifact", "load_artifact"]

log = logging.getLogger("edgewatch.artifact")


@dataclass(frozen=True)
class Artifact:
    directory: Path
    manifest: Manifest
    model_bytes: bytes
    signer: str | None = None
    """Key id of the trusted key that signed it (edge_config.signing); None: not checked or unsigned."""

    @property
    def sha256(self) -> str:
        return self.manifest.sha256


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor stored in the model, with a name for messages: dense and sparse
    initializers and node attributes, in the main graph, every subgraph and every local function."""
    graphs = [model.graph]
    nodes = [node for function in model.functions for node in function.node]
    while graphs or nodes:
        while graphs:
            graph = graphs.pop()
            yield from ((t.name, t) for t in graph.initializer)
            yield from ((s.values.name, t) for s in graph.sparse_initializer for t in (s.values, s.indices))
            nodes.extend(graph.node)
        if nodes:
            node = nodes.pop()
            for attr in node.attribute:
                label = f"{node.name or node.op_type}.{attr.name}"
                dense = [*([attr.t] if attr.HasField("t") else []), *attr.tensors]
                sparse = [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []), *attr.sparse_tensors]
                yield from ((label, t) for t in dense)
                yield from ((label, t) for s in sparse for t in (s.values, s.indices))
                graphs.extend([*([attr.g] if attr.HasField("g") else []), *attr.graphs])


def _external_data_refs(model: onnx.ModelProto) -> list[str]:
    # external_data entries count even without data_location=EXTERNAL: refuse anything
    # that names a file, whatever a given runtime version would make of it
    return [
        name
        for name, tensor in _tensors(model)
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0
    ]


def _static_dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    """The value's dims (None where dynamic), or None if the graph declares no shape."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type" or not value.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _shape_mismatches(model: onnx.ModelProto, manifest: Manifest) -> list[str]:
    """Where the graph's declared static dims contradict the manifest (dynamic dims pass)."""
    values = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    expected: list[tuple[str, list[int | str]]] = [(manifest.input, ["batch", "time", manifest.features.count])]
    for spec in manifest.state:
        expected += [(spec.input, list(spec.shape)), (spec.output, list(spec.shape))]
    problems = []
    for name, want in expected:
        dims = _static_dims(values[name]) if name in values else None
        if dims is None:
            continue
        if len(dims) != len(want) or any(
            d is not None and isinstance(w, int) and d != w for d, w in zip(dims, want, strict=False)
        ):
            shown = [d if d is not None else "?" for d in dims]
            problems.append(f"{name} is {shown} in the graph but {want} in the manifest")
        elif name != manifest.input and values[name].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"{name} is not float32 in the graph")
    return problems


def load_artifact(directory: Path | str, trust: TrustConfig | None = None) -> Artifact:
    """Read DIR/manifest.json + DIR/model.onnx; raise ArtifactError unless both are intact.

    Checks, in order: the manifest is valid; the bytes' sha256 is the manifest's; with `trust`
    (what a gateway passes), DIR/signature.json over both files' bytes (edge_config.signing:
    refused when invalid or, with require_signature, missing; an unsigned model is logged); they parse
    as ONNX; no tensor refers to external data; the ONNX checker passes; the graph has the
    inputs and outputs the manifest names, with the static state/feature dims it states.
    """
    directory = Path(directory)
    manifest_bytes = read_manifest_bytes(directory)
    manifest = parse_manifest(manifest_bytes, directory / MANIFEST_NAME)
    path = directory / MODEL_NAME
    try:
        data = read_artifact_file(path, max_bytes=MAX_MODEL_BYTES)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read model: {exc.strerror or exc}") from None
    digest = sha256_bytes(data)
    if digest != manifest.sha256:
        raise ArtifactError(
            f"{path}: sha256 {digest[:12]}… does not match the manifest's {manifest.sha256[:12]}… "
            "(tampered or replaced)"
        )
    signer = None if trust is None else _check_signature(directory, data, manifest_bytes, trust)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 — protobuf raises several unrelated types
        raise ArtifactError(f"{path}: not a valid ONNX model: {exc}") from None
    if not model.graph.node:
        raise ArtifactError(f"{path}: has no graph nodes (empty or truncated file)")
    refs = _external_data_refs(model)
    if refs:
        raise ArtifactError(
            f"{path}: refers to external data ({', '.join(refs[:3])}); artifacts must be self-contained"
        )
    try:
        # catches what parses but cannot be a model: e.g. a file cut right after the graph
        # (no opset), dangling node inputs, wrong IR version; contrib-op domains pass
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: fails the ONNX checker (onnx {onnx.__version__}): {first}") from None
    names = {i.name for i in model.graph.input}
    missing = [n for n in [manifest.input, *(s.input for s in manifest.state)] if n not in names]
    if missing:
        raise ArtifactError(f"{path}: graph has no input(s) {missing} named in the manifest")
    outputs = [o.name for o in model.graph.output]
    if outputs != manifest.outputs:
        raise ArtifactError(f"{path}: graph outputs {outputs} differ from the manifest's {manifest.outputs}")
    mismatches = _shape_mismatches(model, manifest)
    if mismatches:
        raise ArtifactError(f"{path}: graph and manifest disagree: {'; '.join(mismatches[:3])}")
    return Artifact(directory=directory, manifest=manifest, model_bytes=data, signer=signer)


def _check_signature(directory: Path, model: bytes, manifest: bytes, trust: TrustConfig) -> str | None:
    from edge_config.signing import load_public_keys, verify_signature

    try:
        keys = load_public_keys(trust.public_keys)
    except ConfigError as exc:
        raise ArtifactError(f"trust.public_keys: {exc}") from None
    verdict = verify_signature(directory, model, manifest, keys=keys, require=trust.require_signature)
    if verdict.warning is not None:
        log.warning("%s", verdict.warning)
    return verdict.key_id
