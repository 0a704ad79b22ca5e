"""Runtimes are plugins (edge/package/runtimes/): every collected runtime declares its key, module, options
and session; a manifest naming any other runtime is one error listing the valid keys; each session opens with
the options a device has always run. OpenVINO is imported with its telemetry off: no event is sent (each send
forks a process, which deadlocked `lensops optimize` next to MXNet's engine, and a device must not call out)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from common.errors import USER_ERROR_EXIT
from common.models import StrictModel
from edge.package import MANIFEST, PackageError, Variant, read_manifest
from edge.package import runtimes as runtimes_package
from edge.package.runtimes import (
    RUNTIMES,
    Runtime,
    RuntimeOptions,
    get_runtime,
    import_openvino,
    open_variant,
    runtime_available,
)
from lensops.cli import main as lensops
from tests.edge.runner_setup import wait_until

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import onnx
    from onnx import TensorProto, helper
    from openvino_telemetry.utils.sender import TelemetrySender

    sent = []
    TelemetrySender.send = lambda self, *args, **kwargs: sent.append(args)  # every backend sends through it
    from edge.package.runtimes import import_openvino

    ov = import_openvino()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])),
              "relu.onnx")
    ov.convert_model("relu.onnx")  # the converter's own events (version, parameters, result)
    print("sent", len(sent))
""")


def test_importing_and_converting_sends_no_openvino_telemetry(tmp_path):
    # given a fresh process (the telemetry object is a process-wide singleton)
    # when openvino is imported the project's way and a model converted
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    # then nothing was sent
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "sent 0", done.stdout


VALID = "mxnet, onnxruntime, openvino"


@pytest.mark.parametrize("key", sorted(RUNTIMES))
def test_each_collected_runtime_declares_its_key_module_options_and_session(key):
    runtime = RUNTIMES[key]
    # its module's KEY is the key it is collected under, the one manifests name it by
    assert isinstance(runtime, Runtime) and runtime.key == key
    module = importlib.import_module(runtime.session.__module__)
    assert module.KEY == key and module.RUNTIME is runtime
    # the module whose presence makes it available, and the prefix of its variants' ids
    assert runtime.module and runtime.variant_prefix and "-" not in runtime.variant_prefix
    assert runtime.available() == (importlib.util.find_spec(runtime.module) is not None)
    # typed options: strict, defaults valid, tagged with the key and with no other
    assert issubclass(runtime.options, RuntimeOptions) and issubclass(runtime.options, StrictModel)
    assert runtime.options().runtime == key
    other = next(k for k in sorted(RUNTIMES) + ["other"] if k != key)
    with pytest.raises(ValidationError):
        runtime.options(runtime=other)
    with pytest.raises(ValidationError):
        runtime.options(no_such_option=1)
    # a session class with run(batch)
    assert isinstance(runtime.session, type) and callable(getattr(runtime.session, "run", None))


def test_every_runtime_module_is_collected_once():
    # given the runtime modules in edge/package/runtimes/
    declared = []
    for info in pkgutil.iter_modules(runtimes_package.__path__, f"{runtimes_package.__name__}."):
        module = importlib.import_module(info.name)
        if isinstance(getattr(module, "RUNTIME", None), Runtime):
            declared.append(module.RUNTIME)
    # then each is in RUNTIMES (a module left out of the collection would never be loaded)
    assert sorted(r.key for r in declared) == sorted(RUNTIMES), "add the module's RUNTIME to _COLLECTED"
    # and no two share a key or a variant id prefix
    assert len({r.variant_prefix for r in RUNTIMES.values()}) == len(RUNTIMES)


def test_the_pipeline_names_variants_by_the_collected_runtimes():
    from pipelines.optimize.variants import VARIANTS, BuiltVariant

    # every variant the pipeline builds belongs to a collected runtime, found by its id's prefix
    for vid in VARIANTS:
        runtime = BuiltVariant(vid, "entry").runtime
        assert runtime in RUNTIMES and vid.startswith(RUNTIMES[runtime].variant_prefix + "-")
    assert BuiltVariant("onnx-int8", "entry").runtime == "onnxruntime"


def manifest_json(runtime: str) -> dict:
    return {
        "schema": "lensops.package/1",
        "name": "tiny",
        "version": "1",
        "task": "classification",
        "labels": ["a", "b"],
        "created": "2026-01-01T00:00:00Z",
        "input": {"size": [8, 8], "mean": [0, 0, 0], "std": [1, 1, 1]},
        "output": {"type": "probabilities", "names": ["probabilities"]},
        "variants": [
            {
                "id": "trt-fp32",
                "runtime": runtime,
                "precision": "fp32",
                "entry": "variants/trt-fp32/model.plan",
                "files": {"variants/trt-fp32/model.plan": "0" * 64},
            }
        ],
    }


def test_an_unknown_runtime_in_a_manifest_is_one_error_listing_the_valid_ones(tmp_path, capsys):
    # given a package whose manifest names a runtime the device does not collect
    (tmp_path / MANIFEST).write_text(json.dumps(manifest_json("tensorrt")))
    # when it is read, then one PackageError names the file, the field, the value and the valid keys
    with pytest.raises(PackageError) as caught:
        read_manifest(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / MANIFEST}: field 'variants.0.runtime'"), message
    assert "unknown runtime 'tensorrt'" in message and f"(valid: {VALID})" in message
    assert "\n" not in message
    # and the CLI prints it as one error line, exit 2
    assert lensops(["package", "verify", str(tmp_path)]) == USER_ERROR_EXIT
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "tensorrt" in errors[0] and VALID in errors[0], errors


def test_each_collected_runtime_is_accepted_by_the_manifest():
    for key in RUNTIMES:
        assert Variant(id="v", runtime=key, precision="fp32", entry="m", files={"m": ""}).runtime == key


def test_an_unknown_runtime_key_lists_the_valid_ones():
    for call in (lambda: get_runtime("tflite"), lambda: runtime_available("tflite")):
        with pytest.raises(PackageError, match=rf"unknown runtime 'tflite' \(valid: {VALID}\)"):
            call()


def relu_onnx(path: Path, batch: int | str = 1) -> Path:
    """y = relu(x) for x of shape [batch, 2] (a name for `batch`: any batch)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_onnx_runtime_sessions_keep_the_device_options(tmp_path):
    # given a one-node ONNX variant
    relu_onnx(tmp_path / "model.onnx")
    variant = Variant(
        id="onnx-fp32", runtime="onnxruntime", precision="fp32", entry="model.onnx", files={"model.onnx": ""}
    )
    # when it is opened the way a device opens it
    session = open_variant(tmp_path, variant, ("y",), threads=2)
    # then all graph optimizations, the given intra-op threads, one inter-op thread, no spinning
    import onnxruntime as ort

    options = session._session.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert (options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level) == (2, 1, 3)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session._session.get_providers() == ["CPUExecutionProvider"]
    out = session.run(np.array([[-1.0, 2.0]], dtype=np.float32))
    np.testing.assert_array_equal(out[0], [[0.0, 2.0]])
    # and its graph's input [1, 2] caps a batch at one frame (batching across sources reads it)
    assert session.max_batch == 1


def test_openvino_sessions_keep_the_device_options(tmp_path):
    # given the same graph as an OpenVINO variant (read from ONNX: the runtime opens either)
    relu_onnx(tmp_path / "model.onnx")
    variant = Variant(
        id="openvino-fp32", runtime="openvino", precision="fp32", entry="model.onnx", files={"model.onnx": ""}
    )
    # when it is opened the way a device opens it
    session = open_variant(tmp_path, variant, ("y",), threads=2)
    # then compiled for latency, fp32 precision, the given threads
    compiled = session._compiled
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == import_openvino().Type.f32
    out = session.run(np.array([[-1.0, 2.0]], dtype=np.float32))
    np.testing.assert_array_equal(out[0], [[0.0, 2.0]])


def _openvino(folder: Path):
    variant = Variant(
        id="openvino-fp32", runtime="openvino", precision="fp32", entry="model.onnx", files={"model.onnx": ""}
    )
    return open_variant(folder, variant, ("y",), threads=1)


def test_openvino_runs_batches_of_any_size_and_compiles_a_static_model_per_power_of_two(tmp_path):
    from edge.package.runtimes.openvino_runtime import batch_bucket

    # given an OpenVINO variant whose graph takes any batch (the pipeline's exports do)
    session = _openvino(relu_onnx(tmp_path / "model.onnx", batch="N").parent)
    rng = np.random.default_rng(0)
    sizes = (1, 3, 2, 5, 8, 1, 4, 3)
    # when batches change size from call to call, as batches across sources do
    for n in sizes:
        x = rng.standard_normal((n, 2)).astype(np.float32)
        # then each row gets its own result, whether the model as read or a static one ran it
        np.testing.assert_array_equal(session.run(x)[0], np.maximum(x, 0))
    # and a static model is compiled in the background for each power of two above 1 that was asked for
    assert wait_until(lambda: session.static_sizes() == [2, 4, 8], 60), session.static_sizes()
    for n in sizes:
        x = rng.standard_normal((n, 2)).astype(np.float32)
        np.testing.assert_array_equal(session.run(x)[0], np.maximum(x, 0))  # the padding rows are dropped
    assert [batch_bucket(n) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 16]


def test_an_openvino_graph_whose_input_fixes_the_batch_runs_batches_once_its_static_model_is_ready(tmp_path):
    # given a graph whose input is [1, 2]: the model as read takes one frame
    session = _openvino(relu_onnx(tmp_path / "model.onnx").parent)
    x = np.array([[-1.0, 2.0], [3.0, -4.0], [5.0, 6.0]], np.float32)
    # when a batch of three comes before its static model is ready, it fails (the batcher runs each alone)
    with pytest.raises(RuntimeError):
        session.run(x)
    # then the batch of four compiled meanwhile runs it
    assert wait_until(lambda: session.static_sizes() == [4], 60), session.static_sizes()
    np.testing.assert_array_equal(session.run(x)[0], np.maximum(x, 0))
    assert session.max_batch is None


def test_an_openvino_graph_whose_ops_fix_the_batch_says_so_after_its_first_larger_batch(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # given a graph that reshapes its input to a constant [1, 2]: OpenVINO cannot reshape it to batch 4
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    target = numpy_helper.from_array(np.array([1, 2], np.int64), "target")
    nodes = [helper.make_node("Reshape", ["x", "target"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [target])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "model.onnx"))
    session = _openvino(tmp_path)
    assert session.max_batch is None and session.run(np.array([[-1.0, 2.0]], np.float32))[0].tolist() == [[0, 2]]
    # when a batch of three comes: it fails (the batcher then runs each frame alone) ...
    with pytest.raises(RuntimeError):
        session.run(np.ones((3, 2), np.float32))
    # ... and once the static model for 4 is refused, the session says it takes one frame: no larger batch
    assert wait_until(lambda: session.max_batch == 1, 60), session.max_batch
    assert session.static_sizes() == []


def test_a_device_config_replaces_a_runtimes_options(tmp_path):
    """`runtimes: {openvino: {...}}` in device.yaml: typed by that runtime's options class, handed to its sessions;
    a runtime it does not name keeps its defaults; an unknown runtime or key is one line naming it."""
    import yaml

    from edge.config import ConfigError, load_config
    from edge.package.runtimes import open_session

    (tmp_path / "v.mp4").write_bytes(b"\0")
    (tmp_path / "mlflow.db").touch()
    device = {
        "device_id": "cam-01",
        "registry": {"uri": "sqlite:///mlflow.db", "model": "m"},
        "sources": [{"id": "door", "uri": "v.mp4"}],
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump({**device, "runtimes": {"openvino": {"performance_hint": "THROUGHPUT"}}}))
    config = load_config(path)
    assert type(config.runtimes["openvino"]).__name__ == "OpenVinoOptions"
    # the options reach the session the device opens; ONNX Runtime, not named, keeps its defaults
    relu_onnx(tmp_path / "model.onnx")
    variants = [
        Variant(id=f"{prefix}-fp32", runtime=key, precision="fp32", entry="model.onnx", files={"model.onnx": ""})
        for prefix, key in (("openvino", "openvino"), ("onnx", "onnxruntime"))
    ]
    manifest = SimpleNamespace(output=SimpleNamespace(names=("y",)))  # what open_session reads of it
    ov = open_session(tmp_path, manifest, variants[0], 1, config.runtimes)
    assert str(ov._compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    ort = open_session(tmp_path, manifest, variants[1], 1, config.runtimes)
    assert ort._session.get_session_options().inter_op_num_threads == 1
    # a partial precision map replaces only the precisions it names
    path.write_text(yaml.safe_dump({**device, "runtimes": {"openvino": {"precision_hints": {"fp32": "bf16"}}}}))
    hints = load_config(path).runtimes["openvino"].precision_hints
    assert hints == {"fp32": "bf16", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
    for runtimes, expected in (
        ({"tensorrt": {}}, "runtimes.tensorrt: Input tag 'tensorrt'"),
        ({"openvino": {"performance_hint": "FAST"}}, "runtimes.openvino.performance_hint: Input should be"),
        ({"onnxruntime": {"alow_spinning": True}}, "runtimes.onnxruntime.alow_spinning: unknown key (did you mean"),
        ({"openvino": {"runtime": "mxnet"}}, "runtimes: openvino: runtime 'mxnet' under 'openvino'"),
        (
            {"openvino": {"precision_hints": {"int4": "i4"}}},
            "runtimes.openvino.precision_hints: unknown precision int4",
        ),
    ):
        path.write_text(yaml.safe_dump({**device, "runtimes": runtimes}))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert expected in str(err.value) and str(err.value).count("\n") == 0
