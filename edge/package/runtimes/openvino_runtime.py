"""OpenVINO (`openvino`): variants `openvino-<precision>`, entry `model.xml` (+ `model.bin`), compiled for the CPU.

`import_openvino` is how every part of the project imports openvino (the pipeline converts with it too):
with its telemetry off.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Final, Literal, Optional, Tuple

import numpy as np
from pydantic import Field, field_validator

from edge.package.runtimes.base import LoadedSession, Runtime, RuntimeOptions

if TYPE_CHECKING:
    from edge.package.manifest import Variant

log = logging.getLogger(__name__)

KEY: Final = "openvino"  # a manifest variant's `runtime`


PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


class OpenVinoOptions(RuntimeOptions):
    runtime: Literal[KEY] = KEY
    device: str = "CPU"
    performance_hint: Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"] = "LATENCY"
    precision_hints: Dict[str, str] = Field(
        default_factory=lambda: dict(PRECISION_HINTS),
        description="a variant's precision -> INFERENCE_PRECISION_HINT (int8: the IR's int8 ops, f32 elsewhere); "
        "the precisions given replace those of the default map, the others keep theirs",
    )

    @field_validator("precision_hints")
    @classmethod
    def _over_the_defaults(cls, hints: Dict[str, str]) -> Dict[str, str]:
        unknown = sorted(set(hints) - set(PRECISION_HINTS))
        if unknown:
            raise ValueError(
                f"precision_hints: unknown precision {', '.join(unknown)} (valid: {', '.join(PRECISION_HINTS)})"
            )
        return {**PRECISION_HINTS, **hints}


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


def batch_bucket(n: int) -> int:
    """The static batch size a batch of `n` frames runs at: the next power of two (1, 2, 4, 8, ...)."""
    return 1 << max(0, n - 1).bit_length()


class OpenVinoSession(LoadedSession):
    """The model as read (compiled at load) serves batches of one, and any batch whose static model is not
    ready yet; a batch of 2 or more frames runs on a static-shape model compiled for its size rounded up to
    a power of two (`batch_bucket`; the rows beyond the batch are zeros, and their outputs are dropped).
    Batches across sources (edge/batching.py) change size from call to call, and a model compiled with a
    dynamic batch dimension pays for each change (OpenVINO's guide, "Dynamic Shapes": static reshaping
    suits a shape that holds over many calls). Each static model is compiled on a background thread the
    first time its size is asked for, so no frame waits for a compile; a `max_size: 8` batcher adds at
    most 3 compiled models. A graph whose ops fix the batch cannot be reshaped: `max_batch` then says
    its batch. `run` is serialised (an infer request serves one call at a time)."""

    def _load(
        self, path: Path, variant: Variant, names: Tuple[str, ...], threads: int, options: OpenVinoOptions
    ) -> None:
        self._ov = import_openvino()
        self._core = self._ov.Core()
        self._device = options.device
        self._config = {
            "INFERENCE_PRECISION_HINT": options.precision_hints[variant.precision],
            "PERFORMANCE_HINT": options.performance_hint,
            "INFERENCE_NUM_THREADS": threads,
        }
        self._model = self._core.read_model(str(path))
        self._names = names
        self._lock = threading.Lock()  # an infer request serves one call at a time; guards _by_size
        self._compiled = self._core.compile_model(self._model, self._device, self._config)
        self._as_read = self._entry(self._compiled)
        self._by_size: Dict[int, Optional[tuple]] = {}  # bucket -> its static model; None while compiling or refused

    def _entry(self, compiled) -> tuple:
        return compiled, compiled.create_infer_request(), [compiled.output(name) for name in self._names]

    def static_sizes(self) -> list[int]:
        """The batch sizes a static model is ready for."""
        with self._lock:
            return sorted(size for size, entry in self._by_size.items() if entry is not None)

    def _compile(self, size: int) -> None:
        """Compile the model reshaped to batches of `size` (on a background thread)."""
        model = self._model.clone()
        shape = list(model.input(0).get_partial_shape())
        try:
            model.reshape({model.input(0): self._ov.PartialShape([self._ov.Dimension(size), *shape[1:]])})
            entry = self._entry(self._core.compile_model(model, self._device, self._config))
        except Exception as exc:  # a graph whose batch dimension is fixed by its ops
            log.warning("OpenVINO: cannot reshape %s to batch %d (%s); running it as read", self.variant.id, size, exc)
            if shape and shape[0].is_static:  # the batcher hands it no more frames than its graph takes
                self.max_batch = shape[0].get_length()
            return
        with self._lock:
            self._by_size[size] = entry

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = len(batch)
        with self._lock:
            entry, size = self._as_read, n
            if n > 1:
                bucket = batch_bucket(n)
                if bucket not in self._by_size:
                    self._by_size[bucket] = None
                    threading.Thread(target=self._compile, args=(bucket,), name="openvino-compile", daemon=True).start()
                if self._by_size[bucket] is not None:
                    entry, size = self._by_size[bucket], bucket
            if size != n:
                batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
            _, request, outputs = entry
            result = request.infer({0: batch})
            return [np.asarray(result[o], dtype=np.float32)[:n] for o in outputs]


RUNTIME = Runtime(
    key=KEY, module="openvino", variant_prefix="openvino", options=OpenVinoOptions, session=OpenVinoSession
)
