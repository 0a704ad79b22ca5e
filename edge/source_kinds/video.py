"""The OpenCV reader that cameras, streams and video files share (FFmpeg for paths and URLs)."""

from __future__ import annotations

import os
import threading
from typing import Optional, Union

import cv2
import numpy as np

from pydantic import Field

from edge.redact import redact
from edge.source_kinds.base import SourceError

_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"  # read by OpenCV at each open: one open at a time sets it
_FFMPEG_OPTIONS_LOCK = threading.Lock()


def decode_threads_field():
    """The `decode_threads` key of the kinds FFmpeg decodes (files, streams)."""
    return Field(
        None,
        ge=1,
        le=64,
        description="FFmpeg decoder threads for this source; default: 1 when the device has at least as many "
        "sources as cores (many cameras: one thread each decodes with the least CPU), else FFmpeg's own choice",
    )


class VideoReader:
    """A camera, stream or video file through `cv2.VideoCapture`: an int is a camera index (the default
    backend), a str a path or URL opened with FFmpeg and open/read timeouts of `timeout_s`.

    `transport` ("tcp" or "udp") sets FFmpeg's `rtsp_transport` for this open (RTP over the RTSP
    connection, through NAT and firewalls, or over UDP); None keeps OpenCV's default (TCP preferred).
    `noun` names the source in the SourceError when it cannot be opened; `default_fps` is the rate
    when the source does not say its own. `threads` sets FFmpeg's decoder threads (CAP_PROP_N_THREADS;
    None: FFmpeg's choice, one per core).
    """

    def __init__(
        self,
        target: Union[int, str],
        timeout_s: float,
        noun: str,
        transport: Optional[str] = None,
        default_fps: float = 0.0,
        threads: Optional[int] = None,
    ):
        if isinstance(target, int):
            self._cap = cv2.VideoCapture(target)
        else:
            # FFmpeg honours these, so a stalled stream returns from read() instead of blocking forever
            ms = max(int(timeout_s * 1000), 1)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            if threads:
                params += [cv2.CAP_PROP_N_THREADS, threads]
            if not transport:
                self._cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            else:  # only these opens wait for each other (the option is process-wide while set)
                with _FFMPEG_OPTIONS_LOCK:
                    before = os.environ.get(_FFMPEG_OPTIONS)
                    os.environ[_FFMPEG_OPTIONS] = "|".join(filter(None, [before, f"rtsp_transport;{transport}"]))
                    try:
                        self._cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
                    finally:
                        if before is None:
                            os.environ.pop(_FFMPEG_OPTIONS, None)
                        else:
                            os.environ[_FFMPEG_OPTIONS] = before
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open {noun} {redact(str(target))!r}")  # the target may carry a password
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else default_fps

    def read(self) -> Optional[np.ndarray]:
        ok, image = self._cap.read()
        return image if ok and image is not None else None

    def release(self) -> None:
        self._cap.release()
