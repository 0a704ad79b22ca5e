"""Per source, two threads: frame -> the model serving now (inference), then -> the sinks (delivery).

The inference thread reads `manager.current()` once per frame, so a hot swap lands between two
frames and no frame is lost to it. Until a model serves it leaves frames in the source (a file
waits, a camera keeps its newest frame). A frame whose model fails is reported to the manager;
when that rolled the model back, the frame is run again on the restored model.

The delivery thread hands each inferred frame, in order, to the sinks (publish, stream, capture),
so the outbox commit of frame N overlaps the inference of frame N+1. They are joined by a short
queue (DELIVERY_DEPTH): when the sinks fall behind, inference waits rather than piling frames up.
Sinks are plain callables; one that raises is logged and counted, and the others still get the frame.

`stats()` also gives, over the last WINDOW_FRAMES inferred frames of the model serving now (the
window restarts when the model version or variant changes), `latency_ms` (the model's time per
frame: preprocess + inference + decoding, the figure the manager checks against the latency budget)
and `frame_age_ms` (capture to result: the frame's wait in the source plus that time) as
{p50, p99, n}; None before the first frame.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from edge.batching import Batcher, BatchConfig
from edge.frames import Frame
from edge.latency_window import WINDOW_FRAMES, Window
from edge.manager import ModelManager
from edge.messages import Prediction
from edge.predictor import ModelFailure, Predictor, Result
from edge.sources import Source

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a waiting worker looks at its stop flag
DELIVERY_DEPTH = 2  # inferred frames waiting for the sinks, at most
_END = None  # on the delivery queue: nothing follows


@dataclass(frozen=True)
class Inferred:
    """One frame with what the model said about it."""

    frame: Frame
    result: Result
    labels: tuple[str, ...]
    task: str


Sink = Callable[[Inferred], None]


class InferenceWorker:
    """`start()`, `stop()`, `stats()`; `done` once its source ended and every frame went through the sinks."""

    def __init__(
        self,
        source: Source,
        manager: ModelManager,
        sinks: Sequence[tuple[str, Sink]],
        batcher: Optional[Batcher] = None,
    ):
        self.source = source
        self.manager = manager
        # the batch queue this source shares with the others on its model (none: every frame alone)
        self.batcher = batcher or Batcher(BatchConfig(max_size=1), members=1)
        self.sinks = list(sinks)
        self._stop = threading.Event()
        self._abandon = threading.Event()  # stop() gave up waiting: drop what is left
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._delivery: Optional[threading.Thread] = None
        self._outgoing: "queue.Queue[Optional[Inferred]]" = queue.Queue(DELIVERY_DEPTH)
        self._lock = threading.Lock()
        self._inferred = self._failed = self._sink_errors = 0
        self._last_error: Optional[str] = None
        self._failing = False  # the last frame failed on the model
        self._ended = False  # the source ended and every frame of it was inferred
        self._model: Optional[dict] = None
        self._latency, self._frame_age = Window(WINDOW_FRAMES), Window(WINDOW_FRAMES)
        # the last frame's predictions, for a detector's hold-over: only from the same loaded model, only
        # for consecutive frames of a video (an image folder's frames are unrelated stills)
        self._previous: list[Prediction] = []
        self._previous_from: Optional[Predictor] = None
        self._stream = source.config.CONSECUTIVE_FRAMES

    @property
    def id(self) -> str:
        return self.source.id

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait_done(self, timeout_s: Optional[float] = None) -> bool:
        """Block until `done` (or the timeout); whether it is."""
        return self._done.wait(timeout_s)

    def start(self) -> "InferenceWorker":
        self._delivery = threading.Thread(target=self._deliver, name=f"deliver-{self.id}", daemon=True)
        self._delivery.start()
        self._thread = threading.Thread(target=self._run, name=f"infer-{self.id}", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Stop taking frames (the one being inferred finishes); what was inferred still goes to the sinks."""
        self._stop.set()

    def join(self, deadline: float) -> None:
        """Wait for both threads until `deadline` (time.monotonic()); past it, frames not yet delivered are
        given up (a hung sink must not hold the inference thread, or the runner's stop, forever)."""
        for thread in (self._thread, self._delivery):
            if thread is not None:
                thread.join(max(deadline - time.monotonic(), 0))
        self._abandon.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.request_stop()
        self.join(time.monotonic() + timeout_s)

    def stats(self) -> dict:
        with self._lock:
            return {
                "inferred": self._inferred,
                "failed": self._failed,
                "sink_errors": self._sink_errors,
                "failing": self._failing,
                "model": self._model,
                "last_error": self._last_error,
                "latency_ms": self._latency.percentiles(),
                "frame_age_ms": self._frame_age.percentiles(),
            }

    # -- the threads ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._infer_frames()
        finally:
            self.batcher.leave()  # the others' batches no longer wait for this source
            self._put(_END)  # the delivery thread drains what is queued, then ends

    def _infer_frames(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.manager.ready.wait(POLL_S):
                    continue
                frame = self.source.get(timeout=POLL_S)
                if frame is None and self.source.ended:
                    frame = self.source.get(timeout=0)  # a frame handed over just before the end
                    if frame is None:
                        log.info(
                            "source %s %s; %d frames inferred", self.id, self.source.stats()["state"], self._inferred
                        )
                        self._ended = True
                        return
                if frame is not None:
                    self._handle(frame)
        except Exception:  # a bug here must not pass silently; the other sources keep going
            log.exception("inference worker %s stopped", self.id)
            self._note(failed=False, error="inference worker stopped on an internal error")

    def _handle(self, frame: Frame) -> None:
        outcome = self._infer(frame)
        if outcome is None:
            return
        result, predictor = outcome
        self._put(Inferred(frame, result, tuple(predictor.manifest.labels), predictor.manifest.task))

    def _put(self, item: Optional[Inferred]) -> None:
        """Hand over to the delivery thread; waits while it is behind, unless stop() gave up on it."""
        while not self._abandon.is_set():
            try:
                self._outgoing.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _deliver(self) -> None:
        """The delivery thread: every inferred frame, in order, to every sink; `done` after the last."""
        while True:
            inferred = self._outgoing.get()
            if inferred is _END:
                if self._ended:
                    self._done.set()
                return
            self._to_sinks(inferred)

    def _to_sinks(self, inferred: Inferred) -> None:
        for name, sink in self.sinks:
            try:
                sink(inferred)
            except Exception as exc:  # one failing sink does not stop the others or the loop
                log.exception("source %s: sink %s failed", self.id, name)
                with self._lock:
                    self._sink_errors += 1
                    self._last_error = f"{name}: {type(exc).__name__}: {exc}"

    def _infer(self, frame: Frame) -> Optional[tuple[Result, Predictor]]:
        tried: list[Predictor] = []
        while True:
            predictor = self.manager.current()
            if predictor is None or any(p is predictor for p in tried):
                self._previous_from = None
                self._note(
                    failed=True,
                    error=f"frame {frame.index} not inferred: "
                    f"{'no model' if predictor is None else 'the model failed'}",
                )
                return None
            tried.append(predictor)
            previous = self._previous if self._previous_from is predictor and self._stream else None
            try:
                result = self.batcher.predict(predictor, frame.image, previous)
            except Exception as exc:  # ModelFailure; anything else is a model failure too
                self._previous_from = None  # the next frame starts afresh
                failure = exc if isinstance(exc, ModelFailure) else ModelFailure(f"{type(exc).__name__}: {exc}")
                log.warning("source %s: frame %d: %s", self.id, frame.index, failure)
                self.manager.report_failure(failure, predictor)  # may roll back: then the loop retries the frame
                self._note(failed=False, error=str(failure))
                continue
            self.manager.report_latency(result.latency_ms["total"], predictor)
            self._previous, self._previous_from = result.predictions, predictor
            age_ms = (time.monotonic() - frame.captured) * 1000
            with self._lock:
                self._inferred += 1
                self._failing = False
                if result.model != self._model:  # the figures are of the model serving now
                    self._latency.clear()
                    self._frame_age.clear()
                self._model = dict(result.model)
                self._latency.add(result.latency_ms["total"])
                self._frame_age.add(age_ms)
            return result, predictor

    def _note(self, failed: bool, error: str) -> None:
        with self._lock:
            if failed:
                self._failed += 1
                self._failing = True
            self._last_error = error
