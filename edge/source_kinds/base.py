"""What every source kind shares: the common config fields, what a kind declares, the reader protocol
and the source errors.

A kind is one module of this package with `KEY` and a config class (`FileSourceConfig`: a subclass of
`SourceKind` with `type: Literal[KEY] = KEY`). The class is the kind: besides its own config keys it
declares how it recognises a URI (`target`), how it opens a reader (`open_reader`), what it says when it
opens but no frame decodes (`no_frame`), its words in messages (`NOUN`, `URI_FORMS`, `PATHS`) and the
behaviour flags the runner reads instead of comparing kind names:

- `DROPS_BY_DEFAULT`: with `drop` unset, the newest frame wins (live sources) or the consumer is waited for;
- `CONSECUTIVE_FRAMES`: frame N+1 follows frame N in time, so a detector's hold-over may carry boxes over
  (not for an image folder's unrelated stills);
- `CHECK_FIRST_FRAME`: `lensops edge check` decodes its first frame (files; a camera may be offline then).

A replay (a file or folder: wait for the consumer, pace to `fps`, end or `loop`, give up after a few
undecodable tries) is a kind whose config subclasses `ReplayKind`, which adds those two keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Optional, Protocol

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from common.errors import UserError
from common.models import StrictModel
from edge.redact import redact
from edge.secrets import refuse_password_key

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class SourceError(UserError):
    """A source that cannot be opened or read; the capture thread reports it and retries."""


class UndecodableSource(SourceError):
    """A video file or image folder that is there but yields no frame: retried a few times, then failed."""


class Reader(Protocol):
    """Opened by the capture thread, one BGR uint8 image per `read()` (None when a file or folder has no
    more frames, or a live read failed), released by the same thread."""

    fps: float  # the source's own frame rate (0 when unknown or live)

    def read(self) -> Optional[np.ndarray]: ...

    def release(self) -> None: ...


def scheme_of(uri: str) -> Optional[str]:
    """The URI's scheme in lower case (`rtsp` of `rtsp://cam/live`), None for a plain path or index."""
    found = _SCHEME.match(uri)
    return found.group(1).lower() if found else None


def local_path(uri: str, base_dir: Optional[Path]) -> Optional[Path]:
    """The file-system path a URI names (`file://` dropped, relative ones taken from `base_dir`), or None
    when it has another scheme."""
    scheme = scheme_of(uri)
    if scheme not in (None, "file"):
        return None
    path = Path(uri[len("file://") :] if scheme == "file" else uri)
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


class SourceKind(StrictModel):
    """One frame source of the runner: the keys every kind has. Relative paths are taken from the
    validation context's `base_dir` (the config file's folder) when given, else from the working folder."""

    # what a kind declares (checked when the kinds are collected, edge.source_kinds.source_config_union)
    NOUN: ClassVar[str]  # in messages: "video file", "rtsp/http stream"
    URI_FORMS: ClassVar[str]  # the URIs it takes, for messages: "a camera index or /dev/video*"
    PATHS: ClassVar[bool]  # its URIs are file-system paths (named in the "not found" message)
    DROPS_BY_DEFAULT: ClassVar[bool]
    CONSECUTIVE_FRAMES: ClassVar[bool]
    CHECK_FIRST_FRAME: ClassVar[bool]

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="name in topics, URLs and metrics")
    uri: str = Field(
        description="camera index (0) or /dev/video0, a video file, an image folder, "
        "or an rtsp://, rtsps://, http:// or https:// stream"
    )
    type: str = Field(description="the kind of source (a module of edge/source_kinds); default: recognised from uri")
    drop: Optional[bool] = Field(
        None,
        description="true: newest frame wins, overwritten frames are counted; "
        "false: wait for the consumer, never drop. Default: true for "
        "cameras and streams, false for files and folders",
    )
    model: Optional[str] = Field(None, description="registered model for this source (default: the runner's)")
    stall_timeout_s: float = Field(5.0, gt=0, description="reconnect when an open or read takes longer")
    reconnect_backoff_max_s: float = Field(30.0, gt=0, description="cap of the exponential reconnect backoff")

    @classmethod
    def key(cls) -> str:
        """The kind's `type` value (its `KEY`)."""
        return str(cls.model_fields["type"].default)

    @classmethod
    def target(cls, uri: str, base_dir: Optional[Path]) -> Optional[str]:
        """What the reader opens when `uri` is this kind's (the URI, or the resolved path); None when it is
        not; ValueError when it is this kind's but cannot be used (an image folder with no images)."""
        raise NotImplementedError

    def open_reader(self) -> Reader:
        """The reader, opened now; SourceError when it cannot be opened (UndecodableSource when a file is
        there but cannot be decoded: retried a few times, then the source has failed)."""
        raise NotImplementedError

    def no_frame(self, reader: Reader) -> SourceError:
        """The error for a source that opened but gave no first frame, naming what and why."""
        return UndecodableSource(f"{self.NOUN} {redact(self.uri)!r} opens but gives no frame")

    @property
    def kind(self) -> str:
        """camera, stream, file or folder: the source's `type`."""
        return self.type

    @property
    def drops_frames(self) -> bool:
        return self.drop if self.drop is not None else self.DROPS_BY_DEFAULT

    @field_validator("uri", mode="before")
    @classmethod
    def _camera_index(cls, uri: object) -> object:
        return str(uri) if isinstance(uri, int) and not isinstance(uri, bool) else uri

    @field_validator("uri")
    @classmethod
    def _uri_of_this_kind(cls, uri: str, info: ValidationInfo) -> str:
        text = uri.strip()
        if not text:
            raise ValueError("empty source uri")
        target = cls.target(text, (info.context or {}).get("base_dir"))
        if target is None:
            raise ValueError(f"type {cls.key()} takes {cls.URI_FORMS}, not {redact(text)!r}")
        return target

    @model_validator(mode="before")
    @classmethod
    def _no_secrets_in_yaml(cls, data: Any) -> Any:
        return refuse_password_key(data)


class ReplayKind(SourceKind):
    """A replay: frames are waited for, paced to `fps`, and it ends (or loops); a source that opens
    but yields no frame a few times in a row has failed. What every replay is: local paths, never a dropped
    frame by default, decoded by `lensops edge check`."""

    PATHS: ClassVar[bool] = True
    DROPS_BY_DEFAULT: ClassVar[bool] = False
    CHECK_FIRST_FRAME: ClassVar[bool] = True

    loop: bool = Field(False, description="files and folders: start again at the end")
    fps: Optional[float] = Field(
        None,
        ge=0,
        description="files and folders: pace to this rate; default the "
        "file's own rate (folders: 0); 0 = as fast as possible",
    )


def first_frame(source: SourceKind) -> np.ndarray:
    """Open a source and decode its first frame; the kind's no-frame error (UndecodableSource, naming the
    file and the reason) when none decodes, SourceError when it cannot be opened."""
    reader = source.open_reader()
    try:
        image = reader.read()
    finally:
        reader.release()
    if image is None:
        raise source.no_frame(reader)
    return image
