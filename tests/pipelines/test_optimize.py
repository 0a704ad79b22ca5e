"""Optimize: export parity, variants with gates and latency, golden samples; the gate's verdicts."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from edge.messages import Prediction
from pipelines.config import ParityGate, PipelineConfig
from pipelines.optimize.export import export_mxnet, export_onnx, inference_block
from pipelines.optimize.stage import optimize, parity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_detector(tiny_det, tmp_path_factory):
    from tests.training.helpers import quick_config
    from training.runner import train
    from training.sagemaker_env import RunEnvironment

    out = tmp_path_factory.mktemp("det")
    cfg = quick_config(tiny_det, out, task="detection", input_size=96, batch_size=8, epochs=1)
    return train(cfg, RunEnvironment(), out).model_dir


def test_detector_onnx_matches_the_mxnet_graph(tiny_detector, tmp_path):
    # given a trained SSD exported as an inference graph without NMS
    block, meta = inference_block(tiny_detector)
    symbol, params = export_mxnet(block, tmp_path / "model")
    onnx_path = export_onnx(symbol, params, "detection", 96, tmp_path / "model.onnx")
    # when ONNX Runtime runs it on a batch of 3 (dynamic batch)
    x = np.random.default_rng(0).random((3, 3, 96, 96), dtype=np.float32)
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(["scores", "boxes"], {"data": x})
    want = [o.asnumpy() for o in block(mx.nd.array(x))]
    # then scores and boxes match MXNet's, with no NaN (the expander's BatchNorm statistics are sane)
    for g, w in zip(got, want):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, w, atol=1e-4)
    assert got[0].shape[-1] == len(meta["classes"]) and got[1].shape[-1] == 4


def test_optimize_gates_and_measures_every_variant(colour_models, tmp_path):
    # when the classifier is optimized into three variants
    cfg = PipelineConfig(
        variants=("mxnet-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32"), latency_runs=5, golden_samples=2
    )
    report = optimize(colour_models.strong, colour_models.data, tmp_path / "build", tmp_path / "report", cfg)
    # then each variant has parity figures, a latency and a verdict, and the fp32 ones agree exactly
    rows = report["variants"]
    assert set(rows) == {"mxnet-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32"}
    for vid in ("mxnet-fp32", "onnx-fp32", "openvino-fp32"):
        assert rows[vid]["passed"], rows[vid]["reason"]
        assert rows[vid]["parity"]["top1_agreement"] == 1.0
    for row in rows.values():
        assert row["latency"]["median_ms"] > 0 and row["speedup_vs_mxnet"] > 0
    # and the CPU is recorded, golden samples are written, dvc metrics and plot data exist
    assert report["cpu"]["model"] and isinstance(report["cpu"]["flags"], list)
    assert len(list((tmp_path / "build" / "samples").glob("*.png"))) == 2
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["variants_passed"] >= 3 and "best_speedup_vs_mxnet" in metrics
    assert (tmp_path / "report" / "latency.csv").read_text().startswith("variant,latency_ms,accuracy")


def test_parity_gate_verdicts():
    cfg = PipelineConfig(parity=ParityGate(min_top1_agreement=0.99, max_accuracy_drop_pt=0.5, max_map_drop_pt=1.0))
    ref = [[Prediction(label="a", score=0.9)]] * 100
    same = parity("classification", {"accuracy": 0.9}, {"accuracy": 0.9}, ref, ref, cfg)
    assert same[1] is None
    flipped = [[Prediction(label="b", score=0.9)]] * 2 + ref[2:]
    assert "agreement" in parity("classification", {"accuracy": 0.9}, {"accuracy": 0.9}, ref, flipped, cfg)[1]
    assert "accuracy drop" in parity("classification", {"accuracy": 0.9}, {"accuracy": 0.89}, ref, ref, cfg)[1]
    assert parity("detection", {"map": 0.80}, {"map": 0.795}, [], [], cfg)[1] is None
    assert "mAP drop" in parity("detection", {"map": 0.80}, {"map": 0.78}, [], [], cfg)[1]


def test_a_variant_failing_the_gate_is_left_out_with_its_reason(colour_models, tmp_path):
    from edge.package import PackageError
    from pipelines.package import build_package

    # given a gate nothing can pass (agreement above 100%)
    cfg = PipelineConfig(
        variants=("onnx-fp32",), latency_runs=3, golden_samples=1, parity=ParityGate(min_top1_agreement=1.01)
    )
    report = optimize(colour_models.strong, colour_models.data, tmp_path / "build", tmp_path / "report", cfg)
    assert not report["variants"]["onnx-fp32"]["passed"]
    assert "agreement" in report["variants"]["onnx-fp32"]["reason"]
    # then packaging refuses, naming the reason
    with pytest.raises(PackageError, match="no variant passed.*agreement"):
        build_package(tmp_path / "build", tmp_path / "pkg")
