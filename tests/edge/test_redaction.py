"""Camera passwords never leave the device: not in the log, the retained status, deployment events,
/healthz, the page, /metrics or `edge check`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.redact import redact, redact_all
from tests.edge.conftest import free_port
from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import registry_template, video  # noqa: F401 (fixtures)
from tests.edge.runner_setup import copy_registry, device_yaml, of_topic, wait_until
from tests.edge.test_runner_faults import start_runner

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Pa55-w0rd!x7Q"  # must appear in none of the captured output


@pytest.mark.parametrize(
    "text, expected",
    [
        ("rtsp://admin:Pa55@10.0.0.5:554/live", "rtsp://*:*@10.0.0.5:554/live"),
        ("cannot open 'rtsp://admin:p@ss@cam:554/x' (timeout)", "cannot open 'rtsp://*:*@cam:554/x' (timeout)"),
        ("https://ghp_TOKEN@example.com/repo", "https://*@example.com/repo"),
        ("http://cam/cgi?user=admin&password=Pa55&res=720", "http://cam/cgi?user=*&password=*&res=720"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA/x",
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=*&X-Amz-Credential=*",
        ),
        ("mqtt://127.0.0.1:1883 refused", "mqtt://127.0.0.1:1883 refused"),
        ("mail admin@example.com about /dev/video0", "mail admin@example.com about /dev/video0"),
    ],
)
def test_redact_hides_user_info_and_credential_parameters_and_nothing_else(text, expected):
    assert redact(text) == expected
    assert redact_all({"a": [text, 3, None], text: {"b": text}}) == {
        "a": [expected, 3, None],
        expected: {"b": expected},
    }


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except urllib.error.HTTPError as error:
        return error.read().decode()


@pytest.mark.slow
def test_a_failing_camera_url_shows_its_host_and_never_its_password(
    registry_template, tiny_packages, video, mosquitto, collectors, tmp_path
):
    # given a device whose second camera is an RTSP URL with a password, on a port where nothing listens
    registry = copy_registry(registry_template, tmp_path / "registry")
    registry.promote("v1")
    collector = collectors(mosquitto.port, ["lensops/#"])
    camera = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/live?user=admin&password={SECRET}"
    port = free_port()
    config = device_yaml(
        tmp_path / "device.yaml",
        registry,
        mosquitto.url,
        [
            {"id": "door", "uri": str(video), "loop": True, "fps": 10},
            {"id": "gate", "uri": camera, "reconnect_backoff_max_s": 1},
        ],
        tiny_packages.public_key,
        stream={"port": port, "host": "127.0.0.1"},
    )
    check = subprocess.run(
        [sys.executable, "-m", "lensops.cli", "edge", "check", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # when the runner tries it a few times
    log = tmp_path / "runner.log"
    runner = start_runner(config, log, "--log-level", "DEBUG")
    try:

        def failing():
            return [
                s
                for s in of_topic(collector.messages, "status")
                if s["sources"]["gate"]["state"] in ("degraded", "failed") and s["sources"]["gate"]["reconnects"] >= 2
            ]

        status = wait_until(failing, 60)
        page = {path: _get(f"http://127.0.0.1:{port}{path}") for path in ("/", "/healthz", "/status.json", "/metrics")}
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(30)
    # then the error is shown, naming the camera's host, and the password appears nowhere
    assert status, of_topic(collector.messages, "status")[-1:]
    shown = status[-1]["sources"]["gate"]["last_error"]
    assert "rtsp://*:*@127.0.0.1" in shown, shown
    assert "rtsp://*:*@127.0.0.1" in check.stdout, check.stdout
    outputs = {
        "edge check": check.stdout + check.stderr,
        "log": log.read_text(errors="replace"),
        **page,
        **{f"mqtt {m.topic}": m.payload.decode(errors="replace") for m in collector.messages},
    }
    leaks = [where for where, text in outputs.items() if SECRET in text]
    assert not leaks, f"the password leaked into {leaks}"
    assert "gate" in page["/healthz"] and json.loads(page["/status.json"]), page["/healthz"]
