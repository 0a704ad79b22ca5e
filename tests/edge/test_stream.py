"""The project stream over real HTTP: page, status, MJPEG, health, metrics, and a headless Chromium look."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge.stream
from edge.annotate import annotate, label_colour
from edge.messages import Prediction
from edge.stream import StreamConfig, StreamServer, StreamState

BACKGROUND = (90, 40, 30)  # BGR, a colour no label has
BOX = [0.25, 0.25, 0.75, 0.75]
MODEL = {"name": "shapes-detector", "version": "7", "variant": "onnx-fp32"}
OK_STATS = {"state": "ok", "fps": 24.5, "frames": 10, "drops": 1, "reconnects": 0, "last_error": None}
CHROMIUM = Path("/usr/bin/chromium")


def frame() -> np.ndarray:
    return np.full((240, 320, 3), BACKGROUND, np.uint8)


@pytest.fixture
def server():
    server = StreamServer(StreamConfig(port=0, host="127.0.0.1"), StreamState()).start()
    yield server
    server.stop()


@pytest.fixture
def fed(server):
    """A server with one source, one frame and one detection on it."""
    server.state.set_stats({"sources": {"door": dict(OK_STATS)}, "outbox_depth": 3})
    server.state.update_frame(
        "door",
        frame(),
        [Prediction(label="person", score=0.91, box=BOX)],
        MODEL,
        {"preprocess": 0.9, "inference": 1.6, "total": 3.1},
    )
    return server


def fetch(server, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


class MjpegClient:
    """Reads an MJPEG stream part by part."""

    def __init__(self, server, query: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        self.conn.request("GET", f"/stream.mjpg?{query}")
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.content_type = self.response.getheader("Content-Type")
        self.boundary = b"--" + self.content_type.split("boundary=")[1].encode()
        assert self.response.readline().strip() == self.boundary

    def part(self) -> bytes:
        headers = {}
        for line in iter(self.response.readline, b"\r\n"):
            key, value = line.decode().split(":", 1)
            headers[key.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg", headers
        body = self.response.read(int(headers["content-length"]))
        assert self.response.readline() == b"\r\n" and self.response.readline().strip() == self.boundary
        return body

    def image(self) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(self.part(), np.uint8), cv2.IMREAD_COLOR)

    def close(self) -> None:
        self.conn.close()


def mjpeg_parts(server, query: str, count: int) -> tuple[str, list[bytes]]:
    """The content type and the first `count` parts' bodies of an MJPEG stream."""
    client = MjpegClient(server, query)
    parts = [client.part() for _ in range(count)]
    client.close()
    return client.content_type, parts


def colour_mask(image: np.ndarray, colour, tolerance: int = 60) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - np.array(colour)) <= tolerance, axis=2)


# -- endpoints -----------------------------------------------------------------------------------


def test_page_shows_streams_model_and_stats(fed):
    status, content_type, page = fetch(fed, "/")
    assert status == 200 and content_type.startswith("text/html")
    assert "shapes-detector version 7 (onnx-fp32)" in page, "model name/version/variant missing from the page"
    assert 'src="/stream.mjpg?source=door&amp;kind=project"' in page
    assert 'src="/stream.mjpg?source=door&amp;kind=device"' in page
    assert '<dd data-stat="fps">24.5</dd>' in page and "/status.json" in page


def test_status_json_has_model_predictions_and_stats(fed):
    status, content_type, body = fetch(fed, "/status.json")
    assert status == 200 and content_type == "application/json"
    door = json.loads(body)["sources"]["door"]
    assert door["model"] == MODEL and door["stats"]["frames"] == 10 and door["predictions"][0]["box"] == BOX
    assert json.loads(body)["device"] == {"outbox_depth": 3}


def test_mjpeg_streams_annotated_and_raw_jpegs(fed, monkeypatch):
    monkeypatch.setattr(edge.stream, "KEEPALIVE_S", 0.1)
    content_type, parts = mjpeg_parts(fed, "source=door&kind=project", 2)
    assert content_type.startswith("multipart/x-mixed-replace; boundary=")
    project = cv2.imdecode(np.frombuffer(parts[0], np.uint8), cv2.IMREAD_COLOR)
    _, [raw] = mjpeg_parts(fed, "source=door&kind=device", 1)
    device = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert project.shape == device.shape == (240, 320, 3)
    box_colour = label_colour("person")
    assert colour_mask(project[70:170, 76:84], box_colour).any(axis=1).all(), "no box edge at x = 0.25 * 320"
    assert not colour_mask(device, box_colour).any(), "the device stream must be the raw frame"
    assert parts[1] == parts[0], "without a new frame the last one is repeated (keep-alive)"


def test_new_frames_reach_a_connected_client(fed):
    client = MjpegClient(fed, "source=door&kind=device")
    assert client.image().mean() < 100
    start = time.monotonic()
    fed.state.update_frame("door", np.full((240, 320, 3), 250, np.uint8), [], MODEL)
    newer = client.image()
    waited = time.monotonic() - start
    client.close()
    assert newer.mean() > 240 and waited < 0.5, f"the new frame came after {waited:.2f} s"


def test_unknown_source_and_bad_kind_are_clear_errors(fed):
    status, _, body = fetch(fed, "/stream.mjpg?source=garage&kind=project")
    assert status == 404 and "unknown source 'garage'" in body and "door" in body
    status, _, body = fetch(fed, "/stream.mjpg?source=door&kind=thermal")
    assert status == 400 and "thermal" in body
    assert fetch(fed, "/nothing-here")[0] == 404


def test_healthz_is_503_while_a_source_is_degraded(fed):
    status, _, body = fetch(fed, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    degraded = dict(OK_STATS, state="degraded", last_error="cannot open stream")
    fed.state.set_stats({"sources": {"door": dict(OK_STATS), "yard": degraded}})
    status, _, body = fetch(fed, "/healthz")
    assert status == 503 and json.loads(body)["degraded"] == ["yard"], body
    fed.state.set_stats({"sources": {"door": dict(OK_STATS, state="ended")}})
    assert fetch(fed, "/healthz")[0] == 200, "a finished replay is not a fault"


SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|[+-]Inf)$"
)
COMMENT = re.compile(
    r"^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
    r"(counter|gauge|summary|histogram|untyped))$"
)


def test_metrics_are_prometheus_text(fed):
    status, content_type, text = fetch(fed, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    lines = text.rstrip("\n").split("\n")
    bad = [line for line in lines if not (SAMPLE.match(line) or COMMENT.match(line))]
    assert not bad, f"not Prometheus text: {bad}"
    for sample in [
        'lensops_source_fps{source="door"} 24.5',
        'lensops_source_frames_total{source="door"} 10',
        'lensops_source_drops_total{source="door"} 1',
        'lensops_source_reconnects_total{source="door"} 0',
        'lensops_source_state{source="door",state="ok"} 1',
        "lensops_outbox_depth 3",
        'lensops_inference_latency_seconds_count{source="door"} 1',
        'lensops_model_info{source="door",name="shapes-detector",version="7",variant="onnx-fp32"} 1',
    ]:
        assert sample in lines, f"{sample!r} not in:\n{text}"


def test_drawing_happens_only_for_watching_clients(fed, monkeypatch):
    drawn = []
    monkeypatch.setattr(edge.stream, "annotate", lambda *args: drawn.append(1) or annotate(*args))
    for _ in range(50):
        fed.state.update_frame("door", frame(), [Prediction(label="person", score=0.9, box=BOX)], MODEL)
    assert not drawn, "frames were drawn with nobody watching"
    mjpeg_parts(fed, "source=door&kind=project", 1)
    mjpeg_parts(fed, "source=door&kind=project", 1)
    assert len(drawn) == 1, "the same frame is drawn once for every client"


def test_classification_label_is_drawn_in_the_corner():
    out = annotate(frame(), [Prediction(label="cat", score=0.93), Prediction(label="dog", score=0.05)])
    assert colour_mask(out[:40, :80], label_colour("cat"), 10).mean() > 0.1
    assert not colour_mask(out[60:], label_colour("cat"), 10).any()


def test_port_in_use_is_a_clear_error(server):
    with pytest.raises(OSError, match=f"127.0.0.1:{server.port}"):
        StreamServer(StreamConfig(port=server.port, host="127.0.0.1"), StreamState()).start()


def test_config_names_unknown_keys():
    with pytest.raises(ValueError, match="colour"):
        StreamConfig.model_validate({"port": 8080, "colour": "red"})
    assert StreamConfig(port=8080).host == "0.0.0.0"


# -- the page in a real browser -----------------------------------------------------------------


def regions(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x, y, w, h) of the connected regions of a mask, largest first."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    boxes = [tuple(int(v) for v in stats[i][:4]) for i in range(1, n)]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def test_headless_chromium_shows_the_annotated_stream(fed, tmp_path):
    shot = tmp_path / "page.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--screenshot={shot}",
        "--window-size=1280,800",
        "--virtual-time-budget=3000",
        f"--user-data-dir={tmp_path / 'profile'}",
        fed.url,
    ]
    browser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, stderr = browser.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        _, stderr = browser.communicate()
        pytest.fail(f"chromium did not finish: {stderr.decode()[-2000:]}")
    assert shot.is_file(), f"no screenshot; chromium said: {stderr.decode()[-2000:]}"
    page = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert page.shape[:2] == (800, 1280) and page.std() > 10, "the screenshot is blank"
    # the two streams are the two largest areas of the frame's background colour: project left, device right
    streams = sorted(regions(colour_mask(page, BACKGROUND, 12))[:2])
    assert len(streams) == 2 and all(w > 200 for _, _, w, _ in streams), f"streams not shown: {streams}"
    (px, py, pw, ph), (dx, dy, dw, dh) = streams
    box = colour_mask(page, label_colour("person"))
    x0, y0, x1, y1 = px + BOX[0] * pw, py + BOX[1] * ph, px + BOX[2] * pw, py + BOX[3] * ph
    left_edge = box[int(y0) + 10 : int(y1) - 10, int(x0) - 4 : int(x0) + 6]
    bottom_edge = box[int(y1) - 6 : int(y1) + 4, int(x0) + 10 : int(x1) - 10]
    assert left_edge.any(axis=1).mean() > 0.9, "the box's left edge is not where the detection is"
    assert bottom_edge.any(axis=0).mean() > 0.9, "the box's bottom edge is not where the detection is"
    assert not box[int(y0) + 8 : int(y1) - 8, int(x0) + 8 : int(x1) - 8].any(), "colour inside the box"
    assert not box[dy : dy + dh, dx : dx + dw].any(), "the raw device stream shows a box"


def test_page_shows_the_device_row_the_fleet_status_shows(server):
    # given the stats the runner hands the page (Runner.stream_stats): two sources, one over the budget
    door = {**OK_STATS, "model": MODEL, "latency_ms": {"p50": 2.5, "p99": 4.25, "n": 200}}
    shelf = {**OK_STATS, "fps": 3.0, "drops": 7, "model": {**MODEL, "version": "8"}}
    shelf["latency_ms"] = {"p50": 40.0, "p99": 80.5, "n": 12}
    error = "source shelf: cannot open <rtsp://x> " + "again " * 20
    server.state.set_stats(
        {
            "device": "cam-01",
            "fleet": "lobby",
            "sources": {"door": door, "shelf": shelf},
            "outbox_depth": 4,
            "state": "degraded",
            "last_error": error,
            "latency_budget_ms": 50.0,
        }
    )
    # when the page is fetched over HTTP
    status, _, page = fetch(server, "/")
    assert status == 200
    table = page[page.index('<table class="row" id="device-row">') : page.index("</table>") + len("</table>")]
    # then it holds the device's row: the same figures (and formatting) as `lensops fleet status`
    cells = [re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", line) for line in table.split("</tr>")[:-1]]
    assert cells[0] == [
        "DEVICE", "FLEET", "STATE", "SOURCE", "MODEL", "VERSION", "VARIANT", "FPS", "DROPS", "P99 MS",
        "OUTBOX", "LAST ERROR",
    ]  # fmt: skip
    short = " ".join(error.split())[:57] + "..."
    assert cells[1] == [
        "cam-01", "lobby", "degraded", "door", "shapes-detector", "7", "onnx-fp32", "24.5", "1", "4.2", "4",
        short.replace("<", "&lt;").replace(">", "&gt;"),
    ]  # fmt: skip
    assert cells[2] == ["", "", "", "shelf", "shapes-detector", "8", "onnx-fp32", "3.0", "7", "80.5 OVER", "", ""]
    # and the script keeps it live from /status.json, which carries the same figures
    assert 'data-row="shelf" data-field="p99"' in table and 'data-device-field="outbox_depth"' in table
    device = json.loads(fetch(server, "/status.json")[2])["device"]
    assert device["outbox_depth"] == 4 and device["latency_budget_ms"] == 50.0
