"""The handoff between a capture thread and its consumer: a frame and a one-frame slot."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured image: BGR uint8; its number in the source (from 0 at each pass over a file or
    folder, since start for cameras and streams); wall-clock time.time() and time.monotonic() at capture."""

    source_id: str
    image: np.ndarray
    index: int
    timestamp: float
    captured: float


class FrameSlot:
    """A one-frame handoff: newest wins (counting overwritten frames) or the writer waits."""

    def __init__(self, drop: bool):
        self.drop = drop
        self.drops = 0
        self._frame: Optional[Frame] = None
        self._finished = False
        self._cond = threading.Condition()

    def put(self, frame: Frame) -> bool:
        """Hand over a frame; False when the slot was closed while waiting."""
        with self._cond:
            if self.drop:
                if self._frame is not None:
                    self.drops += 1
            else:
                while self._frame is not None and not self._finished:
                    self._cond.wait()
            if self._finished:
                return False
            self._frame = frame
            self._cond.notify_all()
            return True

    def get(self, timeout: Optional[float]) -> Optional[Frame]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None or self._finished, timeout):
                return None
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def finish(self, keep_last: bool = True) -> None:
        """No more frames: readers drain what is left (unless not `keep_last`) and then get None at once."""
        with self._cond:
            if not keep_last:
                self._frame = None
            self._finished = True
            self._cond.notify_all()

    def wait_empty(self, stop: threading.Event) -> None:
        with self._cond:
            while self._frame is not None and not stop.is_set():
                self._cond.wait(0.1)
