"""The machine's measured peak GFLOP/s per precision, at the thread count the variants use.

fp32 and int8: a large square MatMul (n = 1024: 2.1 GFLOP, compute-bound) as a one-node ONNX graph
through ONNX Runtime: MatMul (MLAS sgemm) and MatMulInteger (u8 x s8 -> s32, MLAS's int8 GEMM:
VNNI where the CPU has it, AVX2/AVX-512BW pmaddubsw otherwise). bf16: OpenVINO has no fast bf16
MatMul without avx512_bf16/AMX (it emulates), so its peak is a 1x1 convolution (256 -> 256
channels at 56x56, 0.8 GFLOP) compiled with the bf16 precision hint, the layer CNN variants spend
their time in; `native` says whether the CPU has bf16 instructions. The fastest of a few runs counts
(a peak is the best the machine does; other processes on shared cores only ever slow a run down).
"""

from __future__ import annotations

import time

import numpy as np

from edge.package.runtimes import cpu_features

N = 1024  # MatMul side
CONV_C, CONV_HW = 256, 56  # 1x1 convolution: channels in = out, spatial side


def _model(nodes, inputs, outputs, initializers):
    from onnx import helper

    graph = helper.make_graph(nodes, "peak", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def matmul_model(dtype: str) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if dtype == "fp32":
        b, op, types = rng.standard_normal((N, N)).astype(np.float32), "MatMul", (TensorProto.FLOAT, TensorProto.FLOAT)
    else:
        b, op, types = (
            rng.integers(-127, 128, (N, N)).astype(np.int8),
            "MatMulInteger",
            (TensorProto.UINT8, TensorProto.INT32),
        )
    return _model(
        [helper.make_node(op, ["a", "b"], ["y"])],
        [helper.make_tensor_value_info("a", types[0], [N, N])],
        [helper.make_tensor_value_info("y", types[1], [N, N])],
        [numpy_helper.from_array(b, "b")],
    )


def conv_model() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((CONV_C, CONV_C, 1, 1)).astype(np.float32)
    shape = [1, CONV_C, CONV_HW, CONV_HW]
    return _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(w, "w")],
    )


def _best_s(run, runs: int) -> float:
    run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def ort_matmul(dtype: str, threads: int, runs: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(matmul_model(dtype), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    a = (
        rng.standard_normal((N, N)).astype(np.float32)
        if dtype == "fp32"
        else rng.integers(0, 256, (N, N)).astype(np.uint8)
    )
    return 2 * N**3 / _best_s(lambda: session.run(None, {"a": a}), runs) / 1e9


def openvino_conv(hint: str, threads: int, runs: int) -> float:
    from edge.package.runtimes import import_openvino

    ov = import_openvino()

    core = ov.Core()
    model = core.read_model(conv_model(), ov.Tensor(np.zeros(0, np.uint8)))
    compiled = core.compile_model(
        model,
        "CPU",
        {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads},
    )
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal((1, CONV_C, CONV_HW, CONV_HW)).astype(np.float32)
    flop = 2 * CONV_C * CONV_C * CONV_HW * CONV_HW
    return flop / _best_s(lambda: request.infer({0: x}), runs) / 1e9


def measure(threads: int, runs: int = 5) -> dict:
    """{precision: {"gflops", "how"}} for fp32, int8 (GOP/s) and bf16 at `threads` threads."""
    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & cpu_features())
    return {
        "threads": threads,
        "fp32": {"gflops": round(ort_matmul("fp32", threads, runs), 1), "how": f"ONNX Runtime MatMul {N}x{N}x{N} fp32"},
        "int8": {
            "gflops": round(ort_matmul("int8", threads, runs), 1),
            "how": f"ONNX Runtime MatMulInteger {N}x{N}x{N} u8 x s8 (GOP/s)",
        },
        "bf16": {
            "gflops": round(openvino_conv("bf16", threads, runs), 1),
            "native": native_bf16,
            "how": f"OpenVINO 1x1 Conv {CONV_C}->{CONV_C} at {CONV_HW}x{CONV_HW}, bf16 hint"
            + ("" if native_bf16 else " (no avx512_bf16/AMX here: OpenVINO emulates bf16)"),
        },
    }
