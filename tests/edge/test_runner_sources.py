"""Several sources on one runner: one vanishes and is retried, shown degraded, while the other publishes;
the device page in headless Chromium shows the annotated stream and the model version."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import registry_template, run_device, video  # noqa: F401 (fixtures)
from tests.edge.runner_setup import CLASSIFIER, MODEL, copy_registry, device_yaml, inference, of_topic, wait_until
from tests.edge.test_stream import CHROMIUM, colour_mask, regions

pytestmark = pytest.mark.slow  # the packages come from a real (tiny) training run

BACKGROUND = (90, 40, 30)  # BGR: the colour the test finds the two streams by on the screenshot
CAPTION = (40, 40, 40)  # annotate(): the model caption's box in the corner of the project stream


def image_folder(folder, count: int = 5):
    folder.mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((240, 320, 3), BACKGROUND, np.uint8))
    return folder


def healthz(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + "healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_vanished_source_is_retried_and_degraded_while_the_other_keeps_publishing(
    registry_template, tiny_packages, video, mosquitto, collectors, run_device, tmp_path
):
    # given a device with a looping video (the detector) and a looping image folder (its own model, a classifier)
    registry = copy_registry(registry_template, tmp_path / "registry")
    registry.promote("v1")
    classifier = registry.promote("cls")
    shelf = image_folder(tmp_path / "shelf")
    collector = collectors(mosquitto.port, ["lensops/#"])
    config = device_yaml(
        tmp_path / "device.yaml",
        registry,
        mosquitto.url,
        [
            {"id": "door", "uri": str(video), "loop": True, "fps": 20},
            {
                "id": "shelf",
                "uri": str(shelf),
                "loop": True,
                "fps": 10,
                "reconnect_backoff_max_s": 1,
                "model": CLASSIFIER,
            },
        ],
        tiny_packages.public_key,
        stream={"port": 0, "host": "127.0.0.1"},
    )
    running = run_device(config)
    assert collector.wait_for(lambda ms: inference(ms, "door") and inference(ms, "shelf"), 60), "not both publishing"
    models = {
        source: {(r["model"]["name"], r["model"]["version"]) for r in inference(collector.messages, source)}
        for source in ("door", "shelf")
    }
    assert models["shelf"] == {(CLASSIFIER, classifier)} and {m for m, _ in models["door"]} == {MODEL}, models
    # when the image folder disappears
    shutil.move(shelf, tmp_path / "elsewhere")

    def degraded():
        return [
            s
            for s in of_topic(collector.messages, "status")
            if s["sources"]["shelf"]["state"] == "degraded" and s["sources"]["shelf"]["reconnects"] >= 2
        ]

    # then it is retried and the retained status (and /healthz) show it degraded, naming the error
    status = wait_until(degraded, 20)
    assert status, of_topic(collector.messages, "status")[-1]
    assert status[-1]["state"] == "degraded" and status[-1]["sources"]["door"]["state"] == "ok", status[-1]
    assert "shelf" in status[-1]["sources"]["shelf"]["last_error"], status[-1]["sources"]["shelf"]
    code, body = healthz(running.runner.stream.url)
    assert code == 503 and "shelf" in body, (code, body)
    # while the other source keeps publishing, without a gap
    door = len(inference(collector.messages, "door"))
    shelf_count = len(inference(collector.messages, "shelf"))
    assert collector.wait_for(lambda ms: len(inference(ms, "door")) >= door + 20, 10), "door stopped publishing"
    assert len(inference(collector.messages, "shelf")) == shelf_count, "a vanished folder published"
    # and when the folder is back, it recovers by itself and seq goes on
    shutil.move(tmp_path / "elsewhere", shelf)
    assert collector.wait_for(lambda ms: len(inference(ms, "shelf")) > shelf_count + 3, 20), "shelf did not recover"
    assert wait_until(lambda: of_topic(collector.messages, "status")[-1]["state"] == "online", 10)
    for source in ("door", "shelf"):
        results = [r["seq"] for r in inference(collector.messages, source)]
        assert results == list(range(len(results))), f"{source}: seq gap"


def test_page_in_headless_chromium_shows_the_annotated_stream_and_the_model_version(
    registry_template, tiny_packages, mosquitto, run_device, tmp_path
):
    # given a device that served a few plain frames and holds the last one
    registry = copy_registry(registry_template, tmp_path / "registry")
    v1 = registry.promote("v1")
    frames = image_folder(tmp_path / "frames")
    config = device_yaml(
        tmp_path / "device.yaml",
        registry,
        mosquitto.url,
        [{"id": "door", "uri": str(frames)}],
        tiny_packages.public_key,
        stream={"port": 0, "host": "127.0.0.1"},
    )
    running = run_device(config)
    assert wait_until(lambda: running.runner.done, 60), "the folder was not served"
    url = running.runner.stream.url
    # when the page is opened in headless Chromium
    shot = tmp_path / "page.png"
    common = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,800",
        "--virtual-time-budget=3000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = browse(common + ["--dump-dom", url])
    browse(common + [f"--screenshot={shot}", url])
    # then it names the model and its registry version ...
    variant = running.runner.managers[MODEL].current().variant
    assert f"{MODEL} version {v1} ({variant})" in dom, dom[:2000]
    # ... and shows the two streams: the project stream annotated (the model caption), the device stream raw
    page = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert page is not None and page.std() > 10, "the screenshot is blank"
    streams = sorted(regions(colour_mask(page, BACKGROUND, 12))[:2])
    assert len(streams) == 2 and all(w > 200 for _, _, w, _ in streams), f"streams not shown: {streams}"
    (px, py, pw, ph), (dx, dy, dw, dh) = streams
    corner = (slice(py + ph * 3 // 4, py + ph), slice(px, px + pw // 2))
    caption = colour_mask(page, CAPTION, 12)
    assert caption[corner].sum() > 200, "no model caption on the project stream"
    assert caption[dy : dy + dh, dx : dx + dw].sum() < 20, "the raw device stream is annotated"
    # and its own row (from the status the runner hands the page) shows the figures `lensops fleet status` shows
    stats = wait_until(lambda: page_status(url)["sources"]["door"]["stats"].get("latency_ms") and page_status(url), 10)
    assert stats, "the page never got the latency figures"
    door, device = stats["sources"]["door"]["stats"], stats["device"]
    with urllib.request.urlopen(url, timeout=5) as response:
        html = response.read().decode()
    row = html[html.index('id="device-row"') : html.index("</table>")].split("</tr>")[1]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells[:10] == [
        "cam-01", "test", device["state"], "door", MODEL, v1, variant, f"{door['fps']:.1f}", str(door["drops"]),
        f"{door['latency_ms']['p99']:.1f}",
    ], cells  # fmt: skip
    assert cells[10] == str(device["outbox_depth"]) and door["latency_ms"]["n"] == 5, (cells, door)


def page_status(url: str) -> dict:
    with urllib.request.urlopen(url + "status.json", timeout=5) as response:
        return json.loads(response.read())


def browse(command: list[str]) -> str:
    browser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = browser.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        out, err = browser.communicate()
        pytest.fail(f"chromium did not finish: {err.decode()[-2000:]}")
    return out.decode()
