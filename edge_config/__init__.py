"""edge_config: the contracts shared by exporter and runtime.

The gateway config schema, the model artifact manifest, the target presets and
the error hierarchy. Imports neither torch nor onnxruntime.
"""
