"""ONNX Runtime (`onnxruntime`): variants `onnx-<precision>`, entry `model.onnx`, on the CPU execution provider."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Tuple

import numpy as np

from edge.package.runtimes.base import LoadedSession, Runtime, RuntimeOptions

if TYPE_CHECKING:
    from edge.package.manifest import Variant

KEY: Final = "onnxruntime"  # a manifest variant's `runtime`


class OnnxRuntimeOptions(RuntimeOptions):
    runtime: Literal[KEY] = KEY
    graph_optimization_level: Literal[
        "ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"
    ] = "ORT_ENABLE_ALL"
    inter_op_threads: int = 1
    log_severity_level: int = 3  # errors only
    # No busy-waiting between calls: a camera loop leaves gaps between frames, and spinning threads
    # steal those cores from decoding and publishing (measured in benchmarks/: runner frames/s up).
    allow_spinning: bool = False


class OnnxRuntimeSession(LoadedSession):
    def _load(
        self, path: Path, variant: Variant, names: Tuple[str, ...], threads: int, options: OnnxRuntimeOptions
    ) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, options.graph_optimization_level)
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = options.inter_op_threads
        session_options.log_severity_level = options.log_severity_level
        session_options.add_session_config_entry("session.intra_op.allow_spinning", str(int(options.allow_spinning)))
        self._session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        batch = self._session.get_inputs()[0].shape[0]  # an int when the graph fixes it, else a name or None
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None
        self._names = list(names)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._session.run(self._names, {self._input: batch})


RUNTIME = Runtime(
    key=KEY, module="onnxruntime", variant_prefix="onnx", options=OnnxRuntimeOptions, session=OnnxRuntimeSession
)
