"""OpenVINO (`openvino`): variants `openvino-<precision>`, entry `model.xml` (+ `model.bin`), compiled for the CPU.

`import_openvino` is how every part of the project imports openvino (the pipeline converts with it too):
with its telemetry off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Final, Literal, Tuple

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


class OpenVinoSession(LoadedSession):
    def _load(
        self, path: Path, variant: Variant, names: Tuple[str, ...], threads: int, options: OpenVinoOptions
    ) -> None:
        ov = import_openvino()

        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": options.precision_hints[variant.precision],
            "PERFORMANCE_HINT": options.performance_hint,
            "INFERENCE_NUM_THREADS": threads,
        }
        model = core.read_model(str(path))
        self._compiled = core.compile_model(model, options.device, config)
        self._request = self._compiled.create_infer_request()
        self._outputs = [self._compiled.output(name) for name in names]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        result = self._request.infer({0: batch})
        return [np.asarray(result[o], dtype=np.float32) for o in self._outputs]


RUNTIME = Runtime(
    key=KEY, module="openvino", variant_prefix="openvino", options=OpenVinoOptions, session=OpenVinoSession
)
