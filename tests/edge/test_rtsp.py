"""RTSP sources against a real RTSP server (GStreamer's gst-rtsp-server, tests/edge/rtsp_server.py)
serving the demo video as H.264: frames flow; the server stops and comes back (stall, reconnect);
a server that requires a user and password (from password_env or a file); RTP over TCP."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Optional

import cv2
import pytest

from edge.sources import Source, parse_source
from tests.edge.conftest import free_port
from tests.edge.runner_fixtures import video  # noqa: F401 (fixture)
from tests.edge.runner_setup import wait_until

SERVER = Path(__file__).with_name("rtsp_server.py")
PASSWORD = "rtsp-S3cret!"


class RtspServer:
    def __init__(self, frames: Path, port: int, **options):
        self.frames, self.port, self.options = frames, port, options
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def start(self) -> "RtspServer":
        command = ["/usr/bin/python3", str(SERVER), "--frames", str(self.frames), "--port", str(self.port)]
        for key, value in self.options.items():
            command += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"the RTSP server did not start: {line} {self.process.stderr.read()}"
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="module")
def frames(video, tmp_path_factory) -> Path:
    """The demo video's frames as JPEGs (what the server loops over)."""
    folder = tmp_path_factory.mktemp("rtsp-frames")
    capture = cv2.VideoCapture(str(video))
    count = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        cv2.imwrite(str(folder / f"{count:05d}.jpg"), image)
        count += 1
    assert count >= 60, count
    return folder


@pytest.fixture
def servers(frames):
    made: list[RtspServer] = []

    def make(**options) -> RtspServer:
        made.append(RtspServer(frames, free_port(), **options).start())
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def sources():
    made: list[Source] = []

    def start(**config) -> Source:
        # stall_timeout_s 5: an RTSP open takes ~2 s here, longer on a busy machine
        made.append(
            Source(parse_source(dict(id="cam", stall_timeout_s=5, reconnect_backoff_max_s=0.5, **config))).start()
        )
        return made[-1]

    yield start
    for source in made:
        source.stop()


def frames_of(source: Source) -> int:
    return source.stats()["frames"]


def test_frames_flow_and_a_server_that_stops_and_comes_back_is_reconnected(servers, sources):
    # given an RTSP camera
    server = servers()
    source = sources(uri=server.url)
    # when it plays, then frames flow
    assert wait_until(lambda: frames_of(source) >= 30, 60), source.stats()
    frame = source._slot.get(timeout=5)
    assert frame is not None and frame.image.shape == (240, 320, 3), frame
    # when the server goes away, then the stall is detected and the source is degraded
    server.stop()
    assert wait_until(lambda: source.stats()["state"] == "degraded", 30), source.stats()
    before = frames_of(source)
    # and when it is back on the same port, the source reconnects by itself and frames flow again
    server.start()
    assert wait_until(lambda: frames_of(source) >= before + 30, 60), source.stats()
    stats = source.stats()
    assert stats["state"] == "ok" and stats["reconnects"] >= 1, stats


def test_a_camera_that_requires_a_user_and_password_from_the_environment_or_a_file(
    servers, sources, tmp_path, monkeypatch
):
    # given a camera that requires basic authentication
    secret = tmp_path / "camera.secret"
    secret.write_text(PASSWORD + "\n")
    server = servers(user="viewer", password_file=secret)
    monkeypatch.setenv("CAM_PASSWORD", PASSWORD)
    # when the password comes from an environment variable, or a file, frames flow
    from_env = sources(uri=server.url, username="viewer", password_env="CAM_PASSWORD")
    from_file = sources(uri=server.url, username="viewer", password_file=str(secret))
    assert wait_until(lambda: frames_of(from_env) >= 10 and frames_of(from_file) >= 10, 60), (
        from_env.stats(),
        from_file.stats(),
    )
    # and a wrong password is refused, shown without the password
    monkeypatch.setenv("WRONG", "not-" + PASSWORD)
    refused = sources(uri=server.url, username="viewer", password_env="WRONG")
    assert wait_until(lambda: refused.stats()["reconnects"] >= 1, 30), refused.stats()
    stats = refused.stats()
    assert stats["frames"] == 0 and stats["state"] == "degraded" and PASSWORD not in stats["last_error"], stats
    # and the YAML may not hold the password itself
    with pytest.raises(ValueError, match="secrets are not read from the YAML"):
        parse_source(dict(id="cam", uri=server.url, username="viewer", password=PASSWORD))


def test_rtp_over_tcp_for_a_camera_that_refuses_udp(servers, sources):
    # given a camera that offers RTP over the RTSP connection (TCP) only
    server = servers(tcp_only=True)
    # when one source asks for TCP and another for UDP
    tcp = sources(uri=server.url, transport="tcp")
    udp = sources(uri=server.url, transport="udp")
    # then TCP plays, UDP is refused (461 Unsupported transport) and retried
    assert wait_until(lambda: frames_of(tcp) >= 30, 60), tcp.stats()
    assert wait_until(lambda: udp.stats()["reconnects"] >= 1, 30), udp.stats()
    assert frames_of(udp) == 0 and udp.stats()["state"] == "degraded", udp.stats()
