"""`camera`: a local camera, by index (`0`) or device (`/dev/video0`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from edge.source_kinds.base import Reader, SourceKind
from edge.source_kinds.video import VideoReader

KEY = "camera"


class CameraSourceConfig(SourceKind):
    """A local camera: the newest frame wins, frames are consecutive."""

    NOUN = "camera"
    URI_FORMS = "a camera index or /dev/video*"
    PATHS = False
    DROPS_BY_DEFAULT = True
    CONSECUTIVE_FRAMES = True
    CHECK_FIRST_FRAME = False  # it may be in use, or not plugged in yet, at check time

    type: Literal[KEY] = KEY

    @classmethod
    def target(cls, uri: str, base_dir: Optional[Path]) -> Optional[str]:
        return uri if uri.isdigit() or uri.startswith("/dev/video") else None

    def open_reader(self) -> Reader:
        device = int(self.uri) if self.uri.isdigit() else self.uri
        return VideoReader(device, self.stall_timeout_s, KEY)
