"""runtime: the edgewatch gateway daemon (no torch).

bus (MQTT) → payload (decode) → streams (per-stream state) → engine (batched
ONNX Runtime step) → scoring → alerts → bus.
"""
