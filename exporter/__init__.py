"""exporter: a trained PyTorch LSTM/GRU module → streaming, quantized ONNX artifact.

load → make streaming → export → quantize → validate (parity gates) → write artifact.
torch is imported lazily, only inside the code paths that need it.
"""
