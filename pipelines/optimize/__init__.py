"""Optimize stage: the trained MXNet network -> ONNX -> runtime variants, each gated on parity."""
