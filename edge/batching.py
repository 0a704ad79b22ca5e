"""Batching across sources: frames of different sources that share a model are inferred as one batch.

Each source keeps its own inference thread (its order, hold-over, hot swap and figures stay its own).
A thread with a frame calls `Batcher.predict`: the frame is preprocessed on that thread, then joins the
model's queue. One of the waiting threads at a time leads: it waits at most `deadline_ms` for the batch
to fill up to `max_size` frames of the same loaded model (or for every source sharing the model to be
waiting), runs the batch once, decodes each frame's outputs and hands each frame its own `Result`. The
others wait for theirs; while a batch runs, the next one gathers, so a busy model batches more. This is
dynamic batching as inference servers do it (Triton's `max_batch_size` and `max_queue_delay_microseconds`,
TorchServe's `batch_size` and `max_batch_delay`).

A model one source uses is never batched: that thread calls `Predictor.predict` as before, so batching
costs a one-camera device nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np
from pydantic import Field

from common.models import StrictModel
from edge.messages import Prediction
from edge.predictor import ModelFailure, Predictor, Result


class BatchConfig(StrictModel):
    """How frames of sources that share a model are batched (`batch:` in the device config)."""

    max_size: int = Field(
        8, ge=1, description="frames of different sources inferred as one batch, at most (1: no batching)"
    )
    deadline_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="how long the first frame of a batch waits for frames of other sources (ms; 0: take the "
        "frames already waiting)",
    )


class _Request:
    """One source's frame waiting for its batch; `event` is set when its result is in, or when it leads next."""

    __slots__ = ("predictor", "prepared", "previous", "prepared_ms", "result", "error", "done", "lead", "event")

    def __init__(self, predictor: Predictor, prepared: np.ndarray, previous, prepared_ms: float):
        self.predictor = predictor
        self.prepared = prepared
        self.previous = previous
        self.prepared_ms = prepared_ms
        self.result: Optional[Result] = None
        self.error: Optional[BaseException] = None
        self.done = False
        self.lead = False
        self.event = threading.Event()


class Batcher:
    """The batch queue of one model, shared by the inference threads of the `members` sources that use it.

    Only the leading thread waits on the queue's condition (for more frames); the others wait on their own
    request's event, so a new frame or a finished batch wakes one thread, never all of them."""

    def __init__(self, config: BatchConfig, members: int):
        self.config = config
        self.members = members
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the leader waits on it for frames to join
        self._pending: list[_Request] = []
        self._leading = False
        self._batches = self._frames = 0

    @property
    def batching(self) -> bool:
        return self.config.max_size > 1 and self.members > 1

    def stats(self) -> dict:
        """Batches run and frames in them since start; `mean` frames per batch (None before the first)."""
        with self._lock:
            mean = round(self._frames / self._batches, 2) if self._batches else None
            return {"batches": self._batches, "frames": self._frames, "mean": mean}

    def predict(self, predictor: Predictor, frame_bgr: np.ndarray, previous: Optional[list[Prediction]]) -> Result:
        """The frame's `Result`, as `predictor.predict(frame_bgr, previous)` gives it; ModelFailure when the
        model failed on it (run alone after its batch failed, or its own outputs are not finite)."""
        if not self.batching:
            return predictor.predict(frame_bgr, previous)
        started = time.perf_counter()
        prepared = predictor.prepare(frame_bgr)
        request = _Request(predictor, prepared, previous, (time.perf_counter() - started) * 1000)
        with self._lock:
            self._pending.append(request)
            if self._leading:
                self._arrived.notify()  # the leader may be waiting for frames to join
            else:
                self._leading = request.lead = True
        if not request.lead:
            request.event.wait()  # its result is in, or the last leader handed it the lead
            if request.done:
                return self._outcome(request)
        batch = [request]
        try:
            with self._lock:
                batch = self._gather(request)
            self._run(batch)
        finally:
            with self._lock:
                self._batches += 1
                self._frames += len(batch)
                for item in batch:
                    if item.result is None and item.error is None:  # _gather or _run did not get that far
                        item.error = ModelFailure("the batch this frame was in stopped on an internal error")
                    item.done = True
                self._pending = [r for r in self._pending if not r.done]  # a batch _gather did not take out
                following = self._pending[0] if self._pending else None  # the next leader
                if following is None:
                    self._leading = False
                else:
                    following.lead = True
            for item in batch:
                item.event.set()
            if following is not None:
                following.event.set()
        return self._outcome(request)

    def leave(self) -> None:
        """A source that uses the model stopped for good (its worker ended): a leader no longer waits for it."""
        with self._lock:
            self.members = max(self.members - 1, 0)
            self._arrived.notify()

    def _gather(self, leader: _Request) -> list[_Request]:
        """Under the lock: up to max_size requests for the leader's predictor (fewer when its graph fixes
        the batch: `Predictor.max_batch`), waiting at most the deadline for more (not when every member is
        already waiting); they leave the queue."""
        limit = min(self.config.max_size, leader.predictor.max_batch or self.config.max_size)
        deadline = time.monotonic() + self.config.deadline_ms / 1000
        same: list[_Request] = []  # a batch of one takes no other
        while limit > 1:
            same = [r for r in self._pending if r.predictor is leader.predictor]
            remaining = deadline - time.monotonic()
            if len(same) >= limit or len(self._pending) >= self.members or remaining <= 0:
                break
            self._arrived.wait(remaining)
        batch = [leader, *[r for r in same if r is not leader][: limit - 1]]  # its own frame first
        taken = {id(r) for r in batch}
        self._pending = [r for r in self._pending if id(r) not in taken]
        return batch

    @staticmethod
    def _run(batch: list[_Request]) -> None:
        """Infer the batch once and give each request its result or error. When the session fails on the
        batch, each frame is run again alone, so only a frame that fails alone fails (and the manager counts
        one failure per failing frame, as without batching). A batched frame's `latency_ms.inference` is its
        share of its batch's run (the batch's wall time / the batch's size)."""
        predictor = batch[0].predictor
        try:
            outputs, inference_ms = predictor.infer_prepared([r.prepared for r in batch])
        except Exception:  # ModelFailure (runtimes' own errors are wrapped)
            for request in batch:
                try:
                    alone, alone_ms = predictor.infer_prepared([request.prepared])
                    request.result = predictor.finish(alone, request.previous, request.prepared_ms, alone_ms)
                except Exception as exc:
                    request.error = exc
            return
        share_ms = inference_ms / len(batch)
        for i, request in enumerate(batch):
            try:
                request.result = predictor.finish(
                    [output[i : i + 1] for output in outputs], request.previous, request.prepared_ms, share_ms
                )
            except Exception as exc:  # this frame's outputs are not finite, or its decoding failed
                request.error = exc

    @staticmethod
    def _outcome(request: _Request) -> Result:
        """The request's result; its error raised as a ModelFailure of this thread's own (one exception object
        is never raised in several threads at once)."""
        if request.error is not None:
            raise ModelFailure(str(request.error)) from request.error
        assert request.result is not None
        return request.result
