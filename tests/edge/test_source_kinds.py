"""Source kinds as plugins (edge/source_kinds): `type` is optional and recognised from the uri as before,
an explicit one is checked against the uri, an unknown one lists the valid ones, and a new kind is one
module plus its line in `KINDS`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edge.config import ConfigError
from edge.source_kinds import KINDS, SourceKind, kind_of, parse_source, source_config_union
from edge.sources import Source
from tests.edge.test_config import MINIMAL, load_text, project, write_video  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def uris(tmp_path) -> dict:
    """One uri of each kind."""
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    return {
        "camera": "0",
        "stream": "rtsp://cam/live",
        "file": str(write_video(tmp_path / "clip.mp4")),
        "folder": str(tmp_path / "imgs"),
    }


def test_the_kinds_are_the_four_of_the_device_config():
    assert [kind.key() for kind in KINDS] == ["camera", "stream", "file", "folder"]


def test_an_explicit_type_that_fits_the_uri_gives_the_same_config_as_none(uris):
    for key, uri in uris.items():
        given = parse_source({"id": "s", "uri": uri, "type": key})
        recognised = parse_source({"id": "s", "uri": uri})
        assert given == recognised and given.kind == key and type(given).key() == key


def test_another_kind_s_key_left_unset_parses_as_it_always_did():
    config = parse_source({"id": "s", "uri": "rtsp://cam/live", "loop": False, "fps": None})
    assert config.kind == "stream" and "loop" not in config.model_fields
    assert parse_source({"id": "s", "uri": "0", "username": None, "transport": None}).kind == "camera"
    with pytest.raises(ValidationError, match="fps applies to video files and image folders, not to the stream"):
        parse_source({"id": "s", "uri": "rtsp://cam/live", "fps": 5})


def test_an_unknown_type_is_one_line_naming_the_source_and_the_valid_types(project):
    text = MINIMAL.replace("{id: door, uri: data/demo/video.mp4}", "{id: door, uri: data/demo/video.mp4, type: webcam}")
    with pytest.raises(ConfigError) as error:
        load_text(project, text)
    message = str(error.value)
    assert message.splitlines() == [
        f"{project / 'device.yaml'}: sources[0].type: source 'door': unknown type 'webcam'; "
        "expected one of: camera, stream, file, folder"
    ], message


@pytest.mark.parametrize(
    "fields, expected",
    [
        (
            {"uri": "rtsp://cam/live", "type": "camera"},
            "sources[0].type: source 'door': type camera takes a camera index or /dev/video*, "
            "but 'rtsp://cam/live' is a stream: give type stream, or leave type out",
        ),
        (
            {"uri": "data/demo/video.mp4", "type": "folder"},
            "sources[0].type: source 'door': type folder takes an image folder, but",
        ),
        ({"uri": "data/demo/missing.mp4", "type": "file"}, "sources[0].uri: video file or image folder not found: "),
        ({"uri": "rtsp://admin:pw@cam/live", "type": "file"}, "but 'rtsp://*:*@cam/live' is a stream"),
        ({"uri": "0", "transport": "tcp"}, "sources[0]: source 'door': transport applies to rtsp/http streams, not"),
        ({"uri": "rtsp://cam/live", "transport": "sctp"}, "sources[0].transport: Input should be 'tcp' or 'udp'"),
        ({"uri": "rtsp://cam/live", "colour": 1}, "sources[0].colour: unknown key; expected one of: id, uri, type,"),
        ({"type": "camera"}, "sources[0].uri: Field required"),
        ({}, "sources[0].uri: Field required"),
    ],
)
def test_a_type_that_contradicts_the_uri_and_other_source_errors_are_one_clear_line(project, fields, expected):
    source = ", ".join(f"{key}: {value}" for key, value in {"id": "door", **fields}.items())
    text = MINIMAL.replace("{id: door, uri: data/demo/video.mp4}", "{" + source + "}")
    with pytest.raises(ConfigError) as error:
        load_text(project, text)
    message = str(error.value)
    assert expected in message and len(message.splitlines()) == 1, message
    assert "pw@" not in message


def test_the_device_stream_key_is_not_taken_for_a_source_kind(project):
    with pytest.raises(ConfigError, match=r"device.yaml: stream.port: Input should be a valid integer"):
        load_text(project, MINIMAL.replace("port: 8080", "port: eighty"))


def test_no_module_outside_the_kinds_compares_kind_names():
    keys = "|".join(kind.key() for kind in KINDS)
    compared = re.compile(rf"""\bkind\s*(==|!=|in|not in)\s*[(\[]?\s*["']({keys})["']""")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "edge").rglob("*.py"))
        if "source_kinds" not in path.parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if compared.search(line)
    ]
    assert not found, found


# -- a new kind: one module (here, this class) and its line in KINDS ------------------------------------------


class Pattern:
    """A reader of synthetic frames, frame i filled with i."""

    fps = 0.0

    def __init__(self, frames: int):
        self.left, self.next = frames, 0

    def read(self) -> Optional[np.ndarray]:
        if self.next >= self.left:
            return None
        self.next += 1
        return np.full((8, 8, 3), self.next - 1, np.uint8)

    def release(self) -> None:
        pass


class PatternSourceConfig(SourceKind):
    """What edge/source_kinds/pattern.py would hold: `pattern://N`, N synthetic frames, live."""

    NOUN = "test pattern"
    URI_FORMS = "pattern://N"
    PATHS = False
    DROPS_BY_DEFAULT = False
    CONSECUTIVE_FRAMES = True
    CHECK_FIRST_FRAME = False

    type: Literal["pattern"] = "pattern"
    size: int = 8

    @classmethod
    def target(cls, uri: str, base_dir: Optional[Path]) -> Optional[str]:
        return uri if re.fullmatch(r"pattern://\d+", uri) else None

    def open_reader(self):
        return Pattern(int(self.uri[len("pattern://") :]))


def test_a_new_kind_is_one_class_and_its_line_in_the_collection(uris):
    # given the kinds with one more registered (what adding it to KINDS does)
    kinds = (*KINDS, PatternSourceConfig)
    adapter = TypeAdapter(source_config_union(kinds))
    # then its uris are recognised, with or without its type, and the other kinds' are as before
    config = adapter.validate_python({"id": "p", "uri": "pattern://5"})
    assert isinstance(config, PatternSourceConfig) and config.kind == "pattern" and config.size == 8
    assert adapter.validate_python({"id": "p", "uri": "pattern://5", "type": "pattern", "size": 4}).size == 4
    assert [kind_of(uri, kinds=kinds).key() for uri in uris.values()] == list(uris)
    # and the messages name it: the valid types, its keys on other kinds, the uris it takes
    with pytest.raises(ValidationError, match="expected one of: camera, stream, file, folder, pattern"):
        adapter.validate_python({"id": "p", "uri": "pattern://5", "type": "gst"})
    with pytest.raises(ValidationError, match="size applies to test patterns, not to the stream"):
        adapter.validate_python({"id": "p", "uri": "rtsp://cam/live", "size": 4})
    with pytest.raises(ValidationError, match=r"pattern://N"):
        adapter.validate_python({"id": "p", "uri": "ftp://cam"})
    # and the runner's capture thread plays it with what it declares (no drops by default)
    source = Source(config).start()
    try:
        frames = [source.get(timeout=5) for _ in range(5)]
        assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2, 3, 4]
        assert source.stats()["drops"] == 0
    finally:
        source.stop()


def test_a_kind_that_does_not_declare_what_the_runner_reads_is_refused_when_collected():
    class Undeclared(SourceKind):
        type: Literal["odd"] = "odd"

    with pytest.raises(TypeError, match="declares no NOUN, URI_FORMS"):
        source_config_union((*KINDS, Undeclared))
    with pytest.raises(TypeError, match="same key"):
        source_config_union((*KINDS, KINDS[0]))
