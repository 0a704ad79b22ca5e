"""Where an inferred frame goes: the MQTT outbox, the project stream, the capture folder.

Each sink is a plain callable taking an `Inferred`. The capture sink hands frames to its own
thread (saving a frame takes ~30 ms) through a small queue and counts what it had to skip.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Optional

from edge.capture import Capture
from edge.messages import InferenceResult
from edge.mqtt import Publisher
from edge.mqtt.payloads import INFERENCE, utc_timestamp
from edge.stream import StreamState
from edge.worker import Inferred

log = logging.getLogger(__name__)


def inference_payload(device_id: str, inferred: Inferred) -> InferenceResult:
    """The `lensops.inference/1` payload without `seq` (the publisher numbers it)."""
    frame = inferred.frame
    return InferenceResult(
        schema=INFERENCE,
        device=device_id,
        source=frame.source_id,
        frame_ts=utc_timestamp(frame.timestamp),
        **inferred.result.payload(),
    )


class PublishSink:
    """Enqueue every result (or what the publish policy keeps) in the outbox; remembers the last seq."""

    def __init__(self, publisher: Publisher, device_id: str):
        self.publisher, self.device_id = publisher, device_id
        self.last_seq: dict[str, int] = {}
        self.published: dict[str, int] = {}

    def __call__(self, inferred: Inferred) -> None:
        source = inferred.frame.source_id
        seq = self.publisher.publish_inference(source, inference_payload(self.device_id, inferred))
        if seq is not None:
            self.last_seq[source] = seq
            self.published[source] = self.published.get(source, 0) + 1


class StreamSink:
    """The newest frame and its predictions for the HTTP page (drawn only when someone watches)."""

    def __init__(self, state: StreamState):
        self.state = state

    def __call__(self, inferred: Inferred) -> None:
        result = inferred.result
        self.state.update_frame(
            inferred.frame.source_id, inferred.frame.image, result.predictions, result.model, result.latency_ms
        )


class CaptureSink:
    """Offers frames to a Capture from a thread of its own; skips (and counts) frames while it is busy."""

    def __init__(self, capture: Capture, depth: int = 4):
        self.capture = capture
        self.skipped = 0
        self._queue: "queue.Queue[Optional[Inferred]]" = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> "CaptureSink":
        self._thread.start()
        return self

    def __call__(self, inferred: Inferred) -> None:
        try:
            self._queue.put_nowait(inferred)
        except queue.Full:
            self.skipped += 1

    def stop(self, timeout_s: float = 5.0) -> None:
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def stats(self) -> dict:
        return {**self.capture.stats(), "skipped": self.skipped}

    def _run(self) -> None:
        while True:
            inferred = self._queue.get()
            if inferred is None:
                return
            result = inferred.result
            try:
                self.capture.offer(
                    inferred.frame.image, result.predictions, inferred.frame.source_id, inferred.labels, result.model
                )
            except Exception:  # a full disk or a bad frame must not stop capturing the next ones
                log.exception("capture of a frame of %s failed", inferred.frame.source_id)
