"""`folder`: the images of one folder in sorted name order, at `fps` (default: as fast as consumed)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np

from common.images import IMAGE_SUFFIXES
from edge.source_kinds.base import Reader, ReplayKind, SourceError, UndecodableSource, local_path

log = logging.getLogger(__name__)

KEY = "folder"


class FolderSourceConfig(ReplayKind):
    """An image folder: every image is delivered; they are unrelated stills (no detector hold-over)."""

    NOUN = "image folder"
    URI_FORMS = "an image folder"
    CONSECUTIVE_FRAMES = False

    type: Literal[KEY] = KEY

    @classmethod
    def target(cls, uri: str, base_dir: Optional[Path]) -> Optional[str]:
        path = local_path(uri, base_dir)
        if path is None or not path.is_dir():
            return None
        if not folder_images(path):
            raise ValueError(f"image folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return str(path)

    def open_reader(self) -> Reader:
        return FolderReader(self.uri)

    def no_frame(self, reader: Reader) -> SourceError:
        names = getattr(reader, "skipped", [])
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return UndecodableSource(f"image folder {self.uri!r}: no image decodes ({shown})")


def folder_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


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
