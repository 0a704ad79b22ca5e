"""One loaded model package variant: frame in, predictions in the `lensops.inference/1` format out.

`Predictor.load` picks the fastest variant this machine can run, warms it up and runs the
package's golden samples through it; a variant that cannot load or disagrees with its own
golden outputs is refused (the next runnable variant is tried). Nothing serves a frame
before it passed. `predict` raises `ModelFailure` when the model errs or outputs NaN/inf,
so the model manager can roll back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from edge.messages import Prediction
from edge.package.codec import counts, decode, hold_over, preprocess
from edge.package.golden import check_samples
from edge.package.manifest import Manifest, PackageError
from edge.package.runtimes import RuntimeOptions, Session, choose_variant, open_session

log = logging.getLogger(__name__)

WARMUP_RUNS = 2


class ModelFailure(Exception):
    """The model raised while inferring or produced non-finite outputs: a reason to roll back."""


@dataclass(frozen=True)
class Result:
    predictions: list[Prediction]  # frozen: shared, never copied
    counts: dict[str, int]
    latency_ms: dict[str, float]  # preprocess, inference, total
    model: dict[str, str]  # name, version, variant

    def payload(self) -> dict:
        """The model part of an inference payload, as keyword arguments of `edge.messages.InferenceResult` (the
        runner adds schema, device, source, frame_ts; the publisher seq and instance)."""
        return {
            "model": self.model,
            "latency_ms": self.latency_ms,
            "predictions": self.predictions,
            "counts": self.counts,
        }


@dataclass
class Predictor:
    """A session on one variant with the manifest that says how to feed it and read it."""

    session: Session
    manifest: Manifest
    package_dir: Path
    version: str  # the registry's version when known (else the manifest's)
    score_threshold: Optional[float] = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(
        cls,
        package_dir: Path,
        manifest: Manifest,
        prefer_variant: Optional[str] = None,
        threads: Optional[int] = None,
        version: Optional[str] = None,
        score_threshold: Optional[float] = None,
        runtime_options: Optional[Mapping[str, RuntimeOptions]] = None,
    ) -> "Predictor":
        """A warmed-up predictor whose variant reproduced the golden samples; PackageError naming why not.

        With `prefer_variant` only that variant is tried; otherwise runnable variants are tried
        fastest first, and the error lists every variant's reason.
        """
        package_dir = Path(package_dir)
        reasons: list[str] = []
        remaining = manifest
        while True:
            try:
                variant = choose_variant(remaining, prefer_variant)
            except PackageError as exc:
                if not reasons:
                    raise
                if remaining.variants:  # the rest cannot run on this machine
                    reasons.append(str(exc))
                raise PackageError(
                    f"{manifest.name} {version or manifest.version}: no variant passed staging ({'; '.join(reasons)})"
                ) from None
            try:
                session = open_session(package_dir, manifest, variant, threads, runtime_options)
                predictor = cls(session, manifest, package_dir, version or manifest.version, score_threshold)
                predictor.warm_up()
                checked = check_samples(package_dir, manifest, session)
            except Exception as exc:  # PackageError, ModelFailure, or the runtime's own error in a golden sample
                reasons.append(
                    f"{variant.id}: {exc}"
                    if isinstance(exc, (PackageError, ModelFailure))
                    else f"{variant.id}: {type(exc).__name__}: {exc}"
                )
                log.warning(
                    "%s %s: variant %s refused: %s", manifest.name, version or manifest.version, variant.id, exc
                )
                if prefer_variant:
                    raise PackageError(reasons[-1]) from None
                remaining = remaining.model_copy(
                    update={"variants": tuple(v for v in remaining.variants if v.id != variant.id)}
                )
                continue
            if not checked:
                log.warning("%s %s: package has no golden samples; loaded unchecked", manifest.name, predictor.version)
            log.info(
                "%s %s: serving variant %s (%d golden samples agree)",
                manifest.name,
                predictor.version,
                variant.id,
                checked,
            )
            return predictor

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def variant(self) -> str:
        return self.session.variant.id

    @property
    def max_batch(self) -> Optional[int]:
        """The most frames one call of the session takes (a graph whose input fixes the batch, as an ONNX
        file with input [1, 3, H, W] does), None when any number will do."""
        return getattr(self.session, "max_batch", None)

    @property
    def model(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "variant": self.variant}

    def warm_up(self, runs: int = WARMUP_RUNS) -> None:
        """Run a mid-grey frame a few times (first runs allocate); ModelFailure if outputs are not finite."""
        height, width = self.manifest.input.size
        frame = np.full((height, width, 3), 127, np.uint8)
        for _ in range(runs):
            self._infer(self.prepare(frame))

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """The session's outputs for a preprocessed batch; ModelFailure when it raises or any output is not finite."""
        outputs = self._run(batch)
        self._check_finite(outputs)
        return outputs

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            with self._lock:  # one OpenVINO infer request per session: never used by two threads at once
                return self.session.run(batch)
        except Exception as exc:  # runtimes raise their own types
            raise ModelFailure(
                f"{self.name} {self.version} ({self.variant}) failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _check_finite(self, outputs: list[np.ndarray]) -> None:
        for name, output in zip(self.manifest.output.names, outputs):
            if not np.all(np.isfinite(output)):
                raise ModelFailure(
                    f"{self.name} {self.version} ({self.variant}): output '{name}' has NaN or infinite values"
                )

    def prepare(self, frame_bgr: np.ndarray) -> np.ndarray:
        """One HxWx3 BGR frame as the model's [1, 3, height, width] float32 input (edge.package.codec.preprocess)."""
        return preprocess([frame_bgr], self.manifest.input)

    def infer_prepared(self, prepared: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """Run prepared frames ([1, 3, H, W] each) as one batch: (outputs with one row per frame, wall ms).
        ModelFailure when the session raises; the outputs are not checked here (`finish` checks each frame's)."""
        batch = prepared[0] if len(prepared) == 1 else np.concatenate(prepared)
        start = time.perf_counter()
        outputs = self._run(batch)
        return outputs, (time.perf_counter() - start) * 1000

    def finish(
        self,
        outputs: list[np.ndarray],
        previous: Optional[list[Prediction]],
        preprocess_ms: float,
        inference_ms: float,
    ) -> Result:
        """One frame's Result from its outputs (one row each): ModelFailure when they are not finite.

        `preprocess_ms` is the frame's preprocessing, `inference_ms` its inference (in a batch: its share of
        the batch's run); `latency_ms.total` is their sum plus this frame's output decoding: the model's time
        for the frame, without any wait for a batch.
        """
        self._check_finite(outputs)
        decode_start = time.perf_counter()
        spec = self.manifest.output
        threshold = spec.score_threshold if self.score_threshold is None else self.score_threshold
        hold = spec.hold_threshold if previous and self.manifest.task == "detection" else None
        if hold is not None and hold < threshold:
            candidates = decode(outputs, list(self.manifest.labels), spec, hold)[0]
            predictions = hold_over(candidates, previous, threshold)
        else:
            predictions = decode(outputs, list(self.manifest.labels), spec, threshold)[0]
        found = counts(predictions, self.manifest.task)
        decode_ms = (time.perf_counter() - decode_start) * 1000
        latency = {
            "preprocess": round(preprocess_ms, 3),
            "inference": round(inference_ms, 3),
            "total": round(preprocess_ms + inference_ms + decode_ms, 3),
        }
        return Result(predictions, found, latency, self.model)

    def predict(self, frame_bgr: np.ndarray, previous: Optional[list[Prediction]] = None) -> Result:
        """Predictions for one HxWx3 BGR frame; boxes normalized to that frame.

        `previous`: the predictions of the frame before on the same stream; with the manifest's
        `hold_threshold` a detection scoring between the two thresholds is kept where it continues one.
        ModelFailure when the model raises or outputs NaN/inf.
        """
        start = time.perf_counter()
        prepared = self.prepare(frame_bgr)
        preprocess_ms = (time.perf_counter() - start) * 1000
        outputs, inference_ms = self.infer_prepared([prepared])
        return self.finish(outputs, previous, preprocess_ms, inference_ms)
