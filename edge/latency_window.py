"""Recent per-frame figures (milliseconds) and their percentiles, for the device status.

A `Window` keeps the last `size` values in a ring buffer (one numpy array, O(1) per `add`);
`percentiles()` runs numpy's percentile (linear interpolation) over what it holds. Thread-safe:
the inference thread adds, the status thread reads.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional

import numpy as np

WINDOW_FRAMES = 200  # the last N inferred frames of a source


class Window:
    """The last `size` values (ms); `add(ms)`, `percentiles()`, `clear()`."""

    def __init__(self, size: int = WINDOW_FRAMES):
        if size < 1:
            raise ValueError(f"window size {size} must be at least 1")
        self.size = size
        self._values = np.zeros(size, dtype=np.float64)
        self._next = 0  # where the next value goes
        self._count = 0  # how many slots hold a value (<= size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values[self._next] = ms
            self._next = (self._next + 1) % self.size
            self._count = min(self._count + 1, self.size)

    def clear(self) -> None:
        with self._lock:
            self._next = self._count = 0

    def __len__(self) -> int:
        return self._count

    def percentiles(self) -> Optional[Dict[str, float]]:
        """{"p50": ms, "p99": ms, "n": values used} rounded to 0.01 ms; None while empty."""
        with self._lock:
            values = self._values[: self._count].copy()
        if not len(values):
            return None
        p50, p99 = np.percentile(values, [50, 99])
        return {"p50": round(float(p50), 2), "p99": round(float(p99), 2), "n": int(len(values))}
