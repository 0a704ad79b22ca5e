"""Frame sources: one capture thread per camera, stream, video file or image folder.

Each `Source` hands frames to its consumer through a single slot. By default live sources keep
the newest frame and count the ones they overwrite (`drop: true`), while files and folders wait
for the consumer, so every frame of a replay is seen (`drop: false`). A watchdog thread on
`time.monotonic()` abandons an open or read that takes longer than `stall_timeout_s` and a fresh
capture thread reconnects after an exponential backoff. Failures are caught and shown in
`stats()`; they never leave the source's own threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Literal, Optional
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from edge.frames import Frame, FrameSlot
from edge.readers import Kind, Reader, UndecodableSource, classify_uri, no_frame, open_reader
from edge.redact import redact
from edge.secrets import read_password, refuse_password_key

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
DECODE_TRIES = 3  # a file or folder that is there but yields no frame this many times in a row has failed
FPS_WINDOW_S = 2.0


class SourceConfig(BaseModel):
    """One frame source of the runner. Relative paths are taken from the validation context's
    `base_dir` (the config file's folder) when given, else from the working folder."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="name in topics, URLs and metrics")
    uri: str = Field(
        description="camera index (0) or /dev/video0, a video file, an image folder, "
        "or an rtsp://, rtsps://, http:// or https:// stream"
    )
    loop: bool = Field(False, description="files and folders: start again at the end")
    fps: Optional[float] = Field(
        None,
        ge=0,
        description="files and folders: pace to this rate; default the "
        "file's own rate (folders: 0); 0 = as fast as possible",
    )
    drop: Optional[bool] = Field(
        None,
        description="true: newest frame wins, overwritten frames are counted; "
        "false: wait for the consumer, never drop. Default: true for "
        "cameras and streams, false for files and folders",
    )
    model: Optional[str] = Field(None, description="registered model for this source (default: the runner's)")
    stall_timeout_s: float = Field(5.0, gt=0, description="reconnect when an open or read takes longer")
    reconnect_backoff_max_s: float = Field(30.0, gt=0, description="cap of the exponential reconnect backoff")
    username: Optional[str] = Field(None, description="streams: user for the camera's RTSP/HTTP authentication")
    password_env: Optional[str] = Field(None, description="streams: environment variable holding the password")
    password_file: Optional[Path] = Field(None, description="streams: file holding the password")
    transport: Optional[Literal["tcp", "udp"]] = Field(
        None, description="RTSP: RTP over tcp (through NAT and firewalls) or udp; default OpenCV's (tcp preferred)"
    )

    _kind: Kind = PrivateAttr("file")

    @field_validator("uri", mode="before")
    @classmethod
    def _camera_index(cls, uri: object) -> object:
        return str(uri) if isinstance(uri, int) and not isinstance(uri, bool) else uri

    @field_validator("uri")
    @classmethod
    def _known_uri(cls, uri: str, info: ValidationInfo) -> str:
        kind, target = classify_uri(uri, (info.context or {}).get("base_dir"))
        return target if kind in ("file", "folder") else uri.strip()

    @model_validator(mode="before")
    @classmethod
    def _no_secrets_in_yaml(cls, data: Any) -> Any:
        return refuse_password_key(data)

    @model_validator(mode="after")
    def _replay_options_need_a_replay(self) -> "SourceConfig":
        self._kind = classify_uri(self.uri)[0]
        if self.kind in ("camera", "stream"):
            for name in ("loop", "fps"):
                if getattr(self, name) not in (None, False):
                    raise ValueError(
                        f"source '{self.id}': {name} applies to video files and image folders, "
                        f"not to the {self.kind} {redact(self.uri)!r}"
                    )
        shown = redact(self.uri)
        if self.kind != "stream":
            for name in ("username", "password_env", "password_file", "transport"):
                if getattr(self, name) is not None:
                    raise ValueError(f"source '{self.id}': {name} applies to rtsp/http streams, not to {shown!r}")
        if self.transport and not self.uri.lower().startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"source '{self.id}': transport applies to rtsp:// streams, not to {shown!r}")
        if self.password_env and self.password_file:
            raise ValueError(f"source '{self.id}': password_env and password_file: give one of them, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError(f"source '{self.id}': a password (password_env / password_file) requires username")
        if self.username and urlsplit(self.uri).username:
            raise ValueError(f"source '{self.id}': the user is in the URL and in username; give it in one place")
        if self.password_file is not None and not Path(self.password_file).is_file():
            raise ValueError(f"source '{self.id}': password_file {str(self.password_file)!r} not found")
        return self

    def open_target(self) -> str:
        """What the reader opens: the URI, with username and the password (from password_env or
        password_file, read now) put into a stream URL; ValueError naming what is missing."""
        if not self.username:
            return str(self.uri)
        password = read_password(self.password_env, self.password_file, f"source '{self.id}': ")
        parts = urlsplit(self.uri)
        userinfo = quote(self.username, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))

    @property
    def kind(self) -> Kind:
        """camera, stream, file or folder (decided when the config was read)."""
        return self._kind

    @property
    def drops_frames(self) -> bool:
        return self.drop if self.drop is not None else self.kind in ("camera", "stream")


OpenReader = Callable[[Kind, str, float, Optional[str]], Reader]  # kind, target, timeout_s, transport


class Source:
    """One frame source: `start()`, then `get(timeout)` frames, `stats()` at any time, `stop()`."""

    def __init__(self, config: SourceConfig, open_reader: OpenReader = open_reader):
        self.config = config
        self._open_reader = open_reader
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
        self._replay = config.kind in ("file", "folder")

    @classmethod
    def from_config(cls, config: SourceConfig) -> "Source":
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
                    self._deliver(image, index if self._replay else None)
                    index += 1
                elif self._replay and index == 0:  # it opened, but not one frame decodes
                    reader.release()
                    self._undecodable_try(str(no_frame(self.config.kind, str(self.config.uri), reader)))
                    reader = None
                elif self._replay:
                    reader.release()
                    reader = None
                    if not self.config.loop:
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
            reader = self._timed(
                generation,
                lambda: self._open_reader(
                    self.config.kind, self.config.open_target(), self.config.stall_timeout_s, self.config.transport
                ),
            )
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
        fps = self.config.fps if self.config.fps is not None else reader.fps
        if not self._replay or not fps:
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
