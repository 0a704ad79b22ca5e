"""Where frames come from: a source URI sorted into its kind, and one reader per kind.

Kinds: `camera` (an index such as `0`, or `/dev/video0`), `stream` (`rtsp://`, `rtsps://`,
`http://`, `https://`), `file` (a video file) and `folder` (images read in sorted name order).
A reader is opened by the capture thread, returns one BGR uint8 image per `read()` (None when
a file or folder has no more frames, or a live read failed) and is released by the same thread.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Literal, Optional, Protocol

import cv2
import numpy as np

from common.errors import UserError
from common.images import IMAGE_SUFFIXES
from edge.redact import redact

log = logging.getLogger(__name__)

Kind = Literal["camera", "stream", "file", "folder"]
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
DEFAULT_FILE_FPS = 25.0  # when a file does not say its own rate
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def why_undecodable(path: str) -> str:
    """The likeliest reason FFmpeg cannot open a video file that exists (it does not say through OpenCV)."""
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as handle:
            boxes = _top_level_boxes(handle, size)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if size == 0:
        return "the file is empty"
    if boxes[:1] == [b"ftyp"]:  # ISO base media (MP4, MOV): the moov box indexes the frames
        if b"moov" not in boxes:
            return "an MP4 without its moov index (a recording cut off before it was finished?)"
        return "an MP4 whose frames FFmpeg cannot decode (a codec this build lacks, or damaged data)"
    return "FFmpeg cannot open it (not a video, damaged, or a format this build lacks)"


def _top_level_boxes(handle, size: int) -> list[bytes]:
    """The types of an ISO base media file's top-level boxes (ISO/IEC 14496-12 4.2); for any other file
    the first 'type' read is not ftyp."""
    boxes, offset = [], 0
    while offset + 8 <= size and len(boxes) < 1000:
        handle.seek(offset)
        header = handle.read(16)
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if length == 1 and len(header) == 16:
            length = int.from_bytes(header[8:16], "big")
        boxes.append(kind)
        if length < 8 or boxes[0] != b"ftyp":
            break
        offset += length
    return boxes


class SourceError(UserError):
    """A source that cannot be opened or read; the capture thread reports it and retries."""


class UndecodableSource(SourceError):
    """A video file or image folder that is there but yields no frame: retried a few times, then failed."""


def classify_uri(uri: str, base_dir: Optional[Path] = None) -> tuple[Kind, str]:
    """(kind, target) of a source URI; relative paths are taken from `base_dir` (default: the working folder).

    Raises ValueError naming the value for an unknown scheme, a missing path or an empty folder.
    """
    text = str(uri).strip()
    if not text:
        raise ValueError("empty source uri")
    if text.isdigit():
        return "camera", text
    scheme = _SCHEME.match(text)
    if scheme:
        name = scheme.group(1).lower()
        if name == "file":
            text = text[len("file://") :]
        elif name in STREAM_SCHEMES:
            return "stream", text
        else:
            raise ValueError(
                f"unknown scheme '{name}://' in {redact(uri)!r}; expected a camera index, /dev/video*, "
                f"a video file, an image folder or one of: " + ", ".join(f"{s}://" for s in STREAM_SCHEMES)
            )
    if text.startswith("/dev/video"):
        return "camera", text
    path = Path(text)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        if not folder_images(path):
            raise ValueError(f"image folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return "folder", str(path)
    if not path.is_file():
        raise ValueError(f"video file or image folder not found: {str(path)!r}")
    return "file", str(path)


def folder_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


class Reader(Protocol):
    fps: float  # the source's own frame rate (0 when unknown or live)

    def read(self) -> Optional[np.ndarray]: ...

    def release(self) -> None: ...


_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"  # read by OpenCV at each open: one open at a time sets it
_FFMPEG_OPTIONS_LOCK = threading.Lock()


class VideoReader:
    """A camera, stream or video file through `cv2.VideoCapture` (FFmpeg for files and streams).

    `transport` ("tcp" or "udp") sets FFmpeg's `rtsp_transport` for this open (RTP over the RTSP
    connection, through NAT and firewalls, or over UDP); None keeps OpenCV's default (TCP preferred).
    """

    def __init__(self, kind: Kind, target: str, timeout_s: float, transport: Optional[str] = None):
        self.kind = kind
        if kind == "camera" and target.isdigit():
            self._cap = cv2.VideoCapture(int(target))
        else:
            # FFmpeg honours these, so a stalled stream returns from read() instead of blocking forever
            ms = max(int(timeout_s * 1000), 1)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
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
            if kind == "file" and Path(target).is_file():
                raise UndecodableSource(f"cannot decode video file {target!r}: {why_undecodable(target)}")
            raise SourceError(f"cannot open {kind} {redact(target)!r}")  # the target may carry a password
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else (DEFAULT_FILE_FPS if kind == "file" else 0.0)

    def read(self) -> Optional[np.ndarray]:
        ok, image = self._cap.read()
        return image if ok and image is not None else None

    def release(self) -> None:
        self._cap.release()


class FolderReader:
    """Images of one folder in sorted name order; an unreadable image is skipped with a warning
    (`skipped` counts them)."""

    fps = 0.0

    def __init__(self, folder: str):
        self._paths = folder_images(Path(folder))
        if not self._paths:
            raise SourceError(f"image folder {folder!r} holds no images")
        self._next = 0
        self.skipped: list[str] = []

    def read(self) -> Optional[np.ndarray]:
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image
            log.warning("skipping unreadable image %s", path)
            self.skipped.append(path.name)
        return None

    def release(self) -> None:
        self._paths = []


def open_reader(kind: Kind, target: str, timeout_s: float, transport: Optional[str] = None) -> Reader:
    """The reader for one source; raises SourceError when it cannot be opened (UndecodableSource when
    a video file is there but FFmpeg cannot open it)."""
    if kind == "folder":
        return FolderReader(target)
    return VideoReader(kind, target, timeout_s, transport)


def no_frame(kind: Kind, target: str, reader: Reader) -> UndecodableSource:
    """The error for a file or folder that opened but gave no frame, naming what could not be decoded and why."""
    if kind == "folder":
        names = getattr(reader, "skipped", [])
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return UndecodableSource(f"image folder {target!r}: no image decodes ({shown})")
    return UndecodableSource(f"video file {target!r} opens but no frame decodes: {why_undecodable(target)}")


def first_frame(kind: Kind, target: str, timeout_s: float) -> np.ndarray:
    """Open a file or folder source and decode its first frame; UndecodableSource (naming the file and
    the reason) when none decodes, SourceError when it cannot be opened."""
    reader = open_reader(kind, target, timeout_s)
    try:
        image = reader.read()
    finally:
        reader.release()
    if image is None:
        raise no_frame(kind, target, reader)
    return image
