"""Which inference results are published (`publish_policy`), and the publish rate limit.

`every_frame` publishes all; `on_change` publishes when a source's counts differ from the last
published ones (and, with `interval_s`, at least every `interval_s` as a heartbeat); `interval`
publishes at most one result per source every `interval_s`. Skipped results take no `seq`, so
`seq` stays contiguous over what is published.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Mapping, Optional

from edge.mqtt.config import PublishPolicy


class PublishGate:
    """Decides per source whether a result is published; thread-safe (one call per frame)."""

    def __init__(
        self,
        policy: PublishPolicy = PublishPolicy.EVERY_FRAME,
        interval_s: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        policy = PublishPolicy(policy)
        if policy is PublishPolicy.INTERVAL and not interval_s:
            raise ValueError("publish_policy interval requires interval_s")
        self.policy = policy
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, dict]] = {}

    def should_publish(self, source_id: str, counts: Mapping[str, int]) -> bool:
        """True when this result is to be published; the decision is remembered as published."""
        now = self._clock()
        counts = dict(counts)
        with self._lock:
            last = self._last.get(source_id)
            publish = last is None or self._due(last, now, counts)
            if publish:
                self._last[source_id] = (now, counts)
        return publish

    def _due(self, last: tuple[float, dict], now: float, counts: dict) -> bool:
        when, last_counts = last
        elapsed = self.interval_s is not None and now - when >= self.interval_s
        if self.policy is PublishPolicy.EVERY_FRAME:
            return True
        if self.policy is PublishPolicy.ON_CHANGE:
            return _nonzero(counts) != _nonzero(last_counts) or elapsed
        return elapsed


def _nonzero(counts: dict) -> dict:
    return {label: n for label, n in counts.items() if n}


class RateLimiter:
    """At most `per_second` events in any one-second window (a sliding log: exact, unlike a token bucket).

    Below one per second: one event per 1/`per_second` seconds.
    """

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic):
        if per_second <= 0:
            raise ValueError(f"per_second: {per_second} must be positive")
        self.limit = max(1, int(per_second))
        self.window_s = max(1.0, 1.0 / per_second)
        self._clock = clock
        self._times: deque[float] = deque()

    def try_acquire(self) -> bool:
        now = self._clock()
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True
