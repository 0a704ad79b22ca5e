"""`stream`: a network camera or stream over RTSP or HTTP, with an optional login and RTP transport."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, model_validator

from edge.redact import redact
from edge.secrets import read_password
from edge.source_kinds.base import Reader, SourceKind, scheme_of
from edge.source_kinds.video import VideoReader, decode_threads_field

KEY = "stream"
SCHEMES = ("rtsp", "rtsps", "http", "https")


class StreamSourceConfig(SourceKind):
    """An rtsp://, rtsps://, http:// or https:// stream: the newest frame wins, frames are consecutive."""

    NOUN = "rtsp/http stream"
    URI_FORMS = "an " + ", ".join(f"{s}://" for s in SCHEMES[:-1]) + f" or {SCHEMES[-1]}:// URL"
    PATHS = False
    DROPS_BY_DEFAULT = True
    CONSECUTIVE_FRAMES = True
    CHECK_FIRST_FRAME = False  # it may be offline at check time

    type: Literal[KEY] = KEY
    username: Optional[str] = Field(None, description="streams: user for the camera's RTSP/HTTP authentication")
    password_env: Optional[str] = Field(None, description="streams: environment variable holding the password")
    password_file: Optional[Path] = Field(None, description="streams: file holding the password")
    transport: Optional[Literal["tcp", "udp"]] = Field(
        None, description="RTSP: RTP over tcp (through NAT and firewalls) or udp; default OpenCV's (tcp preferred)"
    )
    decode_threads: Optional[int] = decode_threads_field()

    @classmethod
    def target(cls, uri: str, base_dir: Optional[Path]) -> Optional[str]:
        return uri if scheme_of(uri) in SCHEMES else None

    @model_validator(mode="after")
    def _login_and_transport(self) -> "StreamSourceConfig":
        shown = redact(self.uri)
        if self.transport and scheme_of(self.uri) not in ("rtsp", "rtsps"):
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
        password_file, read now) put into it; ValueError naming what is missing."""
        if not self.username:
            return self.uri
        password = read_password(self.password_env, self.password_file, f"source '{self.id}': ")
        parts = urlsplit(self.uri)
        userinfo = quote(self.username, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))

    def open_reader(self) -> Reader:
        return VideoReader(
            self.open_target(), self.stall_timeout_s, KEY, transport=self.transport, threads=self.decode_threads
        )
