"""Multiply-accumulates per image, counted from an ONNX graph's Conv, Gemm and MatMul shapes.

The batch dimension is fixed to 1 and onnx shape inference fills in every intermediate shape.
Conv: N * C_out * H_out * W_out * (C_in / group) * k_h * k_w. Gemm / MatMul: the product of the
output's dimensions times the shared (inner) dimension. Element-wise work (BatchNorm folded or
not, activations, softmax, box decoding) is not counted: it is a small share of these CNNs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _dims(value_info) -> list[int] | None:
    dims = [d.dim_value for d in value_info.type.tensor_type.shape.dim]
    return dims if dims and all(d > 0 for d in dims) else None


def count_macs(onnx_path: Path) -> int:
    """MACs of one image through the graph (batch 1)."""
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    weights = {init.name: list(init.dims) for init in graph.initializer}
    for value in graph.input:
        if value.name not in weights:
            value.type.tensor_type.shape.dim[0].dim_value = 1
    del graph.value_info[:]
    for output in graph.output:  # outputs carry the symbolic batch too; inference fills them in
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: _dims(v) for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)}
    shapes.update(weights)

    total = 0
    for node in inferred.node:
        if node.op_type == "Conv":
            out, w = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out and w:  # w: [C_out, C_in / group, k_h, k_w]
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
                inner = a[-2] if trans_a else a[-1]
                total += int(np.prod(out)) * inner
    return total
