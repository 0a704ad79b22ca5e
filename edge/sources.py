"""Frame sources: one capture thread per camera, stream, video file or image folder.

Each `Source` hands frames to its consumer through a single slot. By default live sources keep
the newest frame and count the ones they overwrite (`drop: true`), while files and folders wait
for the consumer, so every frame of a replay is seen (`drop: false`). A watchdog thread on
`time.monotonic()` abandons an open or read that takes longer than `stall_timeout_s` and a fresh
capture thread reconnects after an exponential backoff. Failures are caught and shown in
`stats()`; they never leave the source's own threads.

What differs between kinds (their keys, their reader, whether they drop by default, whether they are
a replay) is declared by the kind's module in `edge/source_kinds/`; nothing here names a kind.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Callable, Optional

import numpy as np

from edge.frames import Frame, FrameSlot
from edge.redact import redact
from edge.source_kinds import Reader, ReplayKind, SourceConfig, SourceKind, UndecodableSource, parse_source

__all__ = ["DECODE_TRIES", "OpenReader", "Source", "SourceConfig", "parse_source"]

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
DECODE_TRIES = 3  # a file or folder that is there but yields no frame this many times in a row has failed
FPS_WINDOW_S = 2.0
# Capture threads (and the FFmpeg threads they start) run this much nicer than the rest of the runner (Linux,
# per thread): when the cores are busy, a frame already decoded is taken, inferred and published before the
# next one is decoded. Decoding is most of a camera's CPU; without this, a consumer waiting for a core behind
# many decoders let its source's slot be overwritten (8 1080p cameras on a 2-core EPYC, one run each: frame age
# p99 60 -> 22 ms, dropped frames 1 -> 0).
CAPTURE_NICE = 10

OpenReader = Callable[[SourceKind], Reader]  # the source's config -> its reader, opened


def lower_priority(nice: int) -> None:
    """Run the calling thread `nice` steps nicer than the process's main thread (Linux, where a thread has its
    own nice value; the threads it starts inherit it; a capture thread started by another one does not add
    up). Raising one's own nice value needs no privilege; elsewhere, or if refused, nothing."""
    if not nice or not sys.platform.startswith("linux"):
        return
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's (its id is the process id)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(base + nice, 19))
    except OSError as exc:
        log.debug("capture thread priority unchanged: %s", exc)


def open_reader(config: SourceKind) -> Reader:
    """The kind's own reader (tests and benchmarks hand `Source` another)."""
    return config.open_reader()


class Source:
    """One frame source: `start()`, then `get(timeout)` frames, `stats()` at any time, `stop()`."""

    def __init__(self, config: SourceKind, open_reader: OpenReader = open_reader, nice: int = CAPTURE_NICE):
        self.config = config
        self._open_reader = open_reader
        self._nice = nice
        self._slot = FrameSlot(config.drops_frames)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._busy: Optional[tuple[int, float]] = None  # (generation, monotonic start) of an open or read
        self._failures = 0  # consecutive; sets the backoff
        self._undecodable = 0  # consecutive tries of a file or folder that is there but yields no frame
        self._state = "starting"
        self._frames = self._reconnects = 0
        self._last_error: Optional[str] = None
        self._recent: deque[float] = deque(maxlen=1024)
        self._threads: list[threading.Thread] = []
        # files and folders: wait for the consumer, pace, end or loop, fail when nothing decodes
        self._replay: Optional[ReplayKind] = config if isinstance(config, ReplayKind) else None

    @classmethod
    def from_config(cls, config: SourceKind) -> "Source":
        return cls(config)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def ended(self) -> bool:
        return self._state in ("ended", "stopped", "failed")

    @property
    def failed(self) -> bool:
        """A file or folder that could not be decoded DECODE_TRIES times in a row: no more tries."""
        return self._state == "failed"

    def start(self) -> "Source":
        self._spawn(self._capture, self._generation)
        self._spawn(self._watch)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            if self._state != "failed":  # a failed source says so after the runner stopped too
                self._state = "stopped"
            self._generation += 1
        self._slot.finish(keep_last=False)
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:  # a thread stuck in a backend's read is left behind (a daemon)
            thread.join(max(deadline - time.monotonic(), 0))

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame, or None after `timeout` seconds, at the end of a file, or once stopped."""
        return self._slot.get(timeout)

    def stats(self) -> dict:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._recent if now - t <= FPS_WINDOW_S]
            fps = (len(recent) - 1) / (now - recent[0]) if len(recent) > 1 else 0.0  # falls off during a stall
            return {
                "state": self._state,
                "fps": round(fps, 2),
                "frames": self._frames,
                "drops": self._slot.drops,
                "reconnects": self._reconnects,
                "last_error": self._last_error,
            }

    # -- capture thread ----------------------------------------------------------------------------

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=f"source-{self.id}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _capture(self, generation: int) -> None:
        lower_priority(self._nice)
        reader: Optional[Reader] = None
        try:
            while self._current(generation) and not self.failed:
                if reader is None:
                    reader = self._connect(generation)
                    index, due = 0, time.monotonic()
                    continue
                image = self._timed(generation, reader.read)
                if not self._current(generation):
                    break
                if image is not None:
                    due = self._pace(reader, due)
                    self._deliver(image, index if self._replay is not None else None)
                    index += 1
                elif self._replay is not None and index == 0:  # it opened, but not one frame decodes
                    reader.release()
                    self._undecodable_try(str(self.config.no_frame(reader)))
                    reader = None
                elif self._replay is not None:
                    reader.release()
                    reader = None
                    if not self._replay.loop:
                        self._end()
                        return
                else:  # a live read failed
                    self._fail(f"no frame from {self.config.kind} {redact(self.config.uri)!r}")
                    reader.release()
                    reader = None
        except Exception as exc:  # noqa: BLE001 - a source's failure stays in its stats
            log.exception("source %s: capture thread failed", self.id)
            self._fail(f"{type(exc).__name__}: {exc}")
            if self._current(generation):
                with self._lock:
                    self._generation += 1
                self._spawn(self._capture, self._generation)
        finally:
            if reader is not None:
                reader.release()

    def _connect(self, generation: int) -> Optional[Reader]:
        """Open the reader, after the backoff when the last attempt failed; None when it failed again."""
        if self._failures:
            delay = min(self.config.reconnect_backoff_max_s, BACKOFF_INITIAL_S * 2 ** (self._failures - 1))
            if self._stop.wait(delay) or not self._current(generation):
                return None
            with self._lock:
                self._reconnects += 1
        try:
            reader = self._timed(generation, lambda: self._open_reader(self.config))
        except UndecodableSource as exc:
            self._undecodable_try(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - SourceError, or whatever a backend raises
            self._fail(str(exc))
            return None
        if not self._current(generation):
            reader.release()
            return None
        return reader

    def _timed(self, generation: int, call):
        """Run an open or read under the watchdog's eye."""
        self._busy = (generation, time.monotonic())
        try:
            return call()
        finally:
            with self._lock:
                if self._busy is not None and self._busy[0] == generation:
                    self._busy = None

    def _pace(self, reader: Reader, due: float) -> float:
        """Sleep until this frame is due (files and folders); returns when the next one is."""
        if self._replay is None:
            return due
        fps = self._replay.fps if self._replay.fps is not None else reader.fps
        if not fps:
            return due
        now = time.monotonic()
        if due > now:
            self._stop.wait(due - now)
        elif due < now - 1.0 / fps:
            due = now  # far behind (a slow consumer): do not burst to catch up
        return due + 1.0 / fps

    def _deliver(self, image: np.ndarray, index: Optional[int]) -> None:
        """Hand over a frame; `index` None numbers it by the frames read since start (live sources)."""
        now = time.monotonic()
        with self._lock:
            index = self._frames if index is None else index
            self._failures = self._undecodable = 0
            self._frames += 1
            self._recent.append(now)
            if self._state in ("starting", "degraded"):
                self._state = "ok"
        self._slot.put(Frame(self.id, image, index, time.time(), now))

    def _fail(self, error: str) -> None:
        log.warning("source %s: %s", self.id, error)
        with self._lock:
            self._failures += 1
            self._last_error = error
            if self._state not in ("stopped", "failed"):
                self._state = "degraded"

    def _undecodable_try(self, error: str) -> None:
        """One more try of a file or folder that yields no frame; after DECODE_TRIES it has failed."""
        self._fail(error)
        with self._lock:
            self._undecodable += 1
            if self._undecodable < DECODE_TRIES or self._state == "stopped":
                return
            self._state = "failed"
        log.error("source %s: failed after %d tries: %s", self.id, DECODE_TRIES, error)
        self._slot.finish()

    def _end(self) -> None:
        with self._lock:
            if self._state != "stopped":
                self._state = "ended"
        self._slot.finish()

    # -- watchdog ----------------------------------------------------------------------------------

    def _watch(self) -> None:
        tick = min(0.25, self.config.stall_timeout_s / 4)
        while not self._stop.wait(tick):
            busy = self._busy
            if busy is None or time.monotonic() - busy[1] <= self.config.stall_timeout_s:
                continue
            # the open or read is stuck: leave it to return on its own, reconnect in a new thread
            self._fail(f"stalled: no frame for {time.monotonic() - busy[1]:.1f} s")
            with self._lock:
                self._generation += 1
                self._busy = None
            self._spawn(self._capture, self._generation)
