"""Open a package variant with its runtime (ONNX Runtime, OpenVINO, MXNet) behind one `run(batch)`.

Every session returns the outputs named by the manifest, in that order, as float32 numpy arrays.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from common.cpu import cpu_features
from edge.package.manifest import Manifest, PackageError, Variant

log = logging.getLogger(__name__)

_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


class Session(Protocol):
    variant: Variant

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def runtime_available(runtime: str) -> bool:
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "mxnet": "mxnet"}[runtime]
    return importlib.util.find_spec(module) is not None


def supported(variant: Variant, features: frozenset[str] | None = None) -> Optional[str]:
    """None when this machine can run `variant`, else the reason it cannot."""
    if not runtime_available(variant.runtime):
        return f"{variant.runtime} is not installed"
    missing = set(variant.cpu_features) - (cpu_features() if features is None else features)
    if missing:
        return f"CPU lacks {', '.join(sorted(missing))}"
    return None


def choose_variant(manifest: Manifest, prefer: Optional[str] = None, features: frozenset[str] | None = None) -> Variant:
    """`prefer` if given and runnable, else the runnable variant with the lowest measured latency."""
    if prefer:
        variant = manifest.variant(prefer)
        reason = supported(variant, features)
        if reason:
            raise PackageError(f"variant '{prefer}' cannot run here: {reason}")
        return variant
    runnable = [v for v in manifest.variants if supported(v, features) is None]
    if not runnable:
        reasons = "; ".join(f"{v.id}: {supported(v, features)}" for v in manifest.variants)
        raise PackageError(f"no variant of {manifest.name} {manifest.version} can run here ({reasons})")
    return min(runnable, key=lambda v: (v.latency.median_ms if v.latency else float("inf"), v.id))


def _opt_out_of_openvino_telemetry() -> None:
    """OpenVINO sends usage events (on import, on each conversion) unless told not to (opt-out: no
    consent file needed), each from a fork()ed process. That fork, taken while MXNet's engine
    worked in the same process, deadlocked `lensops optimize`; and neither the pipeline nor a
    device should call out. This process is opted out without writing a consent file (the
    telemetry library may still create ~/intel as OpenVINO itself would): the telemetry object is
    a process-wide singleton that each OpenVINO tool re-initialises (turning it back on), so it is
    made inert here, before openvino is first imported."""
    try:
        import openvino_telemetry
    except ImportError:  # an OpenVINO without telemetry
        return
    try:
        telemetry = openvino_telemetry.Telemetry(
            app_name="lensops", app_version="0", tid="none", enable_opt_in_dialog=True
        )  # no consent file: declined, no dialog
        telemetry.consent = False
        telemetry.init = lambda *args, **kwargs: None  # OpenVINO's own init would consent again
    except Exception as exc:  # a telemetry library that changed shape must not stop OpenVINO loading
        log.warning("could not turn OpenVINO telemetry off: %s: %s", type(exc).__name__, exc)


def import_openvino():
    """`import openvino`, with its telemetry off for this process."""
    _opt_out_of_openvino_telemetry()
    import openvino

    return openvino


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class OnnxRuntimeSession:
    def __init__(self, path: Path, variant: Variant, names: tuple[str, ...], threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No busy-waiting between calls: a camera loop leaves gaps between frames, and spinning threads
        # steal those cores from decoding and publishing (measured in benchmarks/: runner frames/s up).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.variant = variant
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._names = list(names)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._session.run(self._names, {self._input: batch})


class OpenVinoSession:
    def __init__(self, path: Path, variant: Variant, names: tuple[str, ...], threads: int):
        ov = import_openvino()

        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": _PRECISION_HINT[variant.precision],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
        }
        model = core.read_model(str(path))
        self.variant = variant
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._outputs = [self._compiled.output(name) for name in names]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        result = self._request.infer({0: batch})
        return [np.asarray(result[o], dtype=np.float32) for o in self._outputs]


class MxnetSession:
    def __init__(self, path: Path, variant: Variant, names: tuple[str, ...], threads: int):
        import mxnet as mx

        params = [f for f in variant.files if f.endswith(".params")]
        self.variant = variant
        self._mx = mx
        self._net = mx.gluon.SymbolBlock.imports(str(path), ["data"], str(path.parent / Path(params[0]).name))
        self._net.hybridize(static_alloc=True, static_shape=True)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        out = self._net(self._mx.nd.array(batch))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o.asnumpy() for o in out]


_SESSIONS = {"onnxruntime": OnnxRuntimeSession, "openvino": OpenVinoSession, "mxnet": MxnetSession}


def open_session(package_dir: Path, manifest: Manifest, variant: Variant, threads: Optional[int] = None) -> Session:
    return open_variant(package_dir, variant, manifest.output.names, threads)


def open_variant(
    package_dir: Path, variant: Variant, output_names: tuple[str, ...], threads: Optional[int] = None
) -> Session:
    """A session on one variant's files under `package_dir` (a package or a build folder)."""
    # CPU features are the chooser's business (choose_variant): the pipeline measures every variant.
    if not runtime_available(variant.runtime):
        raise PackageError(f"variant '{variant.id}' cannot run here: {variant.runtime} is not installed")
    path = Path(package_dir) / variant.entry
    try:
        return _SESSIONS[variant.runtime](path, variant, tuple(output_names), threads or default_threads())
    except PackageError:
        raise
    except Exception as exc:  # runtimes raise their own types; name the file
        raise PackageError(f"{path}: {variant.runtime} could not load it ({type(exc).__name__}: {exc})") from None
