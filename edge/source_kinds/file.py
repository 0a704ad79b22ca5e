"""`file`: a video file played through FFmpeg, at its own rate or `fps`, once or in a `loop`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from edge.source_kinds.base import Reader, ReplayKind, SourceError, UndecodableSource, local_path
from edge.source_kinds.video import VideoReader, decode_threads_field

KEY = "file"
DEFAULT_FPS = 25.0  # when a file does not say its own rate


class FileSourceConfig(ReplayKind):
    """A video file (a path, or file://): every frame is delivered, frames are consecutive."""

    NOUN = "video file"
    URI_FORMS = "a video file"
    CONSECUTIVE_FRAMES = True

    type: Literal[KEY] = KEY
    decode_threads: Optional[int] = decode_threads_field()

    @classmethod
    def target(cls, uri: str, base_dir: Optional[Path]) -> Optional[str]:
        path = local_path(uri, base_dir)
        return str(path) if path is not None and path.is_file() else None

    def open_reader(self) -> Reader:
        try:
            return VideoReader(
                self.uri, self.stall_timeout_s, KEY, default_fps=DEFAULT_FPS, threads=self.decode_threads
            )
        except SourceError:
            if Path(self.uri).is_file():
                raise UndecodableSource(f"cannot decode video file {self.uri!r}: {why_undecodable(self.uri)}") from None
            raise

    def no_frame(self, reader: Reader) -> SourceError:
        return UndecodableSource(f"video file {self.uri!r} opens but no frame decodes: {why_undecodable(self.uri)}")


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
