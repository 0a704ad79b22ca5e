"""Frame sources on real files, folders and an HTTP MJPEG server served from a test thread."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge import sources
from edge.sources import Source, SourceConfig, parse_source

SIZE = (64, 48)  # width, height


def write_video(path: Path, frames: int, fps: float = 25.0) -> Path:
    """An mp4v video whose frame i is flat grey at level 10 * i (readable back within a few levels)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(frames):
        writer.write(np.full((SIZE[1], SIZE[0], 3), 10 * i, np.uint8))
    writer.release()
    return path


def level(frame) -> int:
    return int(round(float(frame.image.mean()) / 10))


def drain(source: Source, timeout: float = 5.0) -> list:
    """Every frame until the source ends (or `timeout` passes)."""
    frames, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = source.get(timeout=0.5)
        if frame is None and source.ended:
            break
        if frame is not None:
            frames.append(frame)
    return frames


def wait_for(condition, timeout: float = 5.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "clip.mp4", 20)


@pytest.fixture
def started():
    running: list[Source] = []

    def start(config: SourceConfig, **kwargs) -> Source:
        running.append(Source(config, **kwargs).start())
        return running[-1]

    yield start
    for source in running:
        source.stop()


# -- configuration -------------------------------------------------------------------------------


def test_config_sorts_uris_into_kinds(video, tmp_path):
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    kinds = {
        uri: parse_source(dict(id="s", uri=uri)).kind
        for uri in (0, "/dev/video0", "rtsp://cam/live", "https://cam/x.mjpg", str(video), str(tmp_path / "imgs"))
    }
    assert list(kinds.values()) == ["camera", "camera", "stream", "stream", "file", "folder"], kinds
    relative = parse_source({"id": "s", "uri": "clip.mp4"}, base_dir=tmp_path)
    assert relative.uri == str(video) and relative.kind == "file"


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"uri": "missing/clip.mp4"}, ["uri", "missing/clip.mp4"]),
        ({"uri": "ftp://cam/live"}, ["uri", "ftp://"]),
        ({"uri": "rtsp://cam/live", "loop": True}, ["loop", "rtsp://cam/live"]),
        ({"uri": "rtsp://cam/live", "fps": 5}, ["fps"]),
        ({"uri": "rtsp://cam/live", "stall_timeout_s": 0}, ["stall_timeout_s"]),
        ({"uri": "rtsp://cam/live", "colour": "red"}, ["colour"]),
        ({"uri": "rtsp://cam/live", "id": "door/1"}, ["id"]),
    ],
)
def test_bad_config_is_a_value_error_naming_field_and_value(fields, named):
    with pytest.raises(ValueError) as caught:
        parse_source({"id": "door", **fields})
    assert isinstance(caught.value, ValidationError)
    for word in named:
        assert word in str(caught.value), f"{word!r} not named in: {caught.value}"


def test_empty_image_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no images"):
        parse_source(dict(id="s", uri=str(tmp_path)))


# -- files and folders ---------------------------------------------------------------------------


def test_file_delivers_every_frame_in_order_without_drops(video, started):
    # given a file replay (no-drop by default) read as fast as possible by a slow consumer
    source = started(parse_source(dict(id="door", uri=str(video), fps=0)))
    frames = []
    for frame in iter(lambda: source.get(timeout=2), None):
        frames.append(frame)
        time.sleep(0.003)
    # then every frame arrives once, in order, and the source has ended
    assert [f.index for f in frames] == list(range(20))
    assert [level(f) for f in frames] == list(range(20)), "frames out of order or repeated"
    stats = source.stats()
    assert (stats["state"], stats["frames"], stats["drops"]) == ("ended", 20, 0), stats
    assert all(f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3) for f in frames)
    assert all(a.captured < b.captured for a, b in zip(frames, frames[1:])), "monotonic capture times"


def test_newest_wins_counts_what_it_drops(video, started):
    # given newest-wins on a file read as fast as possible and nobody reading until it ends
    source = started(parse_source(dict(id="door", uri=str(video), fps=0, drop=True)))
    assert wait_for(lambda: source.stats()["state"] == "ended")
    # then only the newest frame is left and the other 19 are counted as dropped
    frames = drain(source)
    assert [f.index for f in frames] == [19]
    stats = source.stats()
    assert stats["drops"] == 19 and stats["frames"] == 20, stats


def test_file_plays_at_its_own_frame_rate(tmp_path, started):
    clip = write_video(tmp_path / "fast.mp4", 10, fps=40.0)
    start = time.monotonic()
    frames = drain(started(parse_source(dict(id="s", uri=str(clip)))))
    elapsed = time.monotonic() - start
    assert len(frames) == 10
    assert 0.2 <= elapsed < 1.5, f"10 frames at 40 fps took {elapsed:.2f} s, expected about 0.25 s"


def test_looping_file_starts_again(video, started):
    source = started(parse_source(dict(id="s", uri=str(video), fps=0, loop=True)))
    indices = [source.get(timeout=2).index for _ in range(45)]
    assert indices == list(range(20)) * 2 + list(range(5))
    assert source.stats()["state"] == "ok"


def test_image_folder_in_sorted_order(tmp_path, started):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, value in [("b.png", 20), ("a.jpg", 10), ("c.bmp", 30)]:
        cv2.imwrite(str(folder / name), np.full((8, 8, 3), value, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / "d.png").write_bytes(b"not a png either")  # skipped with a warning
    frames = drain(started(parse_source(dict(id="s", uri=str(folder)))))
    assert [int(f.image.mean()) for f in frames] == [10, 20, 30]
    assert [f.index for f in frames] == [0, 1, 2]


# -- failures ------------------------------------------------------------------------------------


def free_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return port


def test_refused_stream_backs_off_while_another_source_delivers(video, started, monkeypatch):
    monkeypatch.setattr(sources, "BACKOFF_INITIAL_S", 0.05)
    # given a stream nobody serves next to a looping file
    dead = started(
        parse_source(dict(id="dead", uri=f"http://127.0.0.1:{free_port()}/x.mjpg", reconnect_backoff_max_s=0.4))
    )
    alive = started(parse_source(dict(id="alive", uri=str(video), loop=True, fps=100)))
    start = time.monotonic()
    got = [alive.get(timeout=1) for _ in range(80)]  # about 1 s at 100 fps
    elapsed = time.monotonic() - start
    # then the dead one is degraded and retried with a growing delay, the other one is unaffected
    stats = dead.stats()
    assert stats["state"] == "degraded" and "cannot open" in stats["last_error"], stats
    # delays 0.05, 0.1, 0.2, 0.4, 0.4, ...: about 4-6 reconnects in ~1 s (a fixed 0.05 s would give ~20)
    assert 2 <= stats["reconnects"] <= 8, (stats, elapsed)
    assert all(f is not None for f in got) and alive.stats()["state"] == "ok"


def test_vanished_file_is_retried_and_recovers(video, tmp_path, started, monkeypatch):
    monkeypatch.setattr(sources, "BACKOFF_INITIAL_S", 0.05)
    source = started(parse_source(dict(id="s", uri=str(video), loop=True, fps=0, reconnect_backoff_max_s=0.1)))
    assert source.get(timeout=2) is not None
    kept = video.rename(tmp_path / "elsewhere.mp4")
    # the open file plays to its end; the reopen for the next pass fails
    assert wait_for(lambda: (source.get(timeout=0.05), source.stats()["state"] == "degraded")[1])
    assert wait_for(lambda: source.stats()["reconnects"] >= 2)
    assert "cannot open" in source.stats()["last_error"]
    kept.rename(video)
    assert wait_for(lambda: source.get(timeout=0.1) is not None and source.stats()["state"] == "ok")


class _MjpegHandler(BaseHTTPRequestHandler):
    """Streams numbered JPEG frames; the first connection goes silent after `stall_after` frames."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.connections += 1
            stalls = server.connections == 1
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(10_000):
            if server.closing.is_set():
                return
            if stalls and i >= server.stall_after:
                server.stalled_at = time.monotonic()
                server.closing.wait(10)  # keep the connection open, send nothing
                return
            data = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
            try:
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(data), data)
                )
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.02)


@pytest.fixture
def mjpeg_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MjpegHandler)
    server.daemon_threads = True
    server.lock, server.connections, server.stall_after = threading.Lock(), 0, 5
    server.closing = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.closing.set()
    server.shutdown()
    server.server_close()


def test_stalled_stream_is_reconnected(mjpeg_server, started):
    # given an MJPEG stream that goes silent after 5 frames without closing the connection
    url = f"http://127.0.0.1:{mjpeg_server.server_address[1]}/cam.mjpg"
    source = started(parse_source(dict(id="cam", uri=url, stall_timeout_s=0.5, reconnect_backoff_max_s=0.2)))
    first = source.get(timeout=3)
    assert first is not None, "the stream delivered nothing"
    # then it is reconnected after the stall timeout + backoff, and frames flow again
    assert wait_for(lambda: source.stats()["reconnects"] >= 1, timeout=3), source.stats()
    stats = source.stats()
    assert "no frame" in stats["last_error"] or "stalled" in stats["last_error"], stats
    frames_before = stats["frames"]
    after: list = []
    assert wait_for(
        lambda: after.append(source.get(timeout=0.1)) or (after[-1] is not None and source.stats()["state"] == "ok"),
        timeout=3,
    )
    recovered = time.monotonic() - mjpeg_server.stalled_at
    assert after[-1].index > first.index, "live frames are numbered on across reconnects"
    assert source.stats()["frames"] > frames_before and mjpeg_server.connections >= 2, source.stats()
    # the configured 0.5 s stall timeout was used, not the 5 s default (a bound on which setting applied, not a
    # speed figure: capture threads run `capture_nice` steps nicer, so a loaded machine slows them down)
    assert recovered < 4.0, f"took {recovered:.1f} s to recover from a stall (timeout 0.5 s, backoff 0.2 s)"


class _StuckReader:
    """A reader whose second read never returns (a backend that ignores its timeouts)."""

    fps = 0.0

    def __init__(self, release: threading.Event):
        self.reads, self.release_event = 0, release

    def read(self):
        self.reads += 1
        if self.reads > 1:
            self.release_event.wait(10)
            return None
        return np.zeros((4, 4, 3), np.uint8)

    def release(self):
        pass


def test_watchdog_abandons_a_read_that_never_returns(started):
    unblock = threading.Event()
    opened: list[_StuckReader] = []

    def open_stuck(config):
        opened.append(_StuckReader(unblock))
        return opened[-1]

    try:
        source = started(
            parse_source(dict(id="cam", uri="rtsp://cam/live", stall_timeout_s=0.3, reconnect_backoff_max_s=0.1)),
            open_reader=open_stuck,
        )
        # each reader gives one frame, then blocks; the watchdog opens a new one each time
        assert wait_for(lambda: len(opened) >= 3, timeout=4), f"{len(opened)} readers opened"
        stats = source.stats()
        assert stats["frames"] >= 2 and "stalled" in stats["last_error"], stats
    finally:
        unblock.set()
