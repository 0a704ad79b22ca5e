"""A file or folder that cannot be decoded fails after a bounded number of tries with the decoder's
reason; `edge check` decodes a frame of every file source; `edge run --exit-when-done` exits non-zero
when a source failed or messages could not be delivered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.sources import DECODE_TRIES, Source, parse_source
from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import registry_template, video  # noqa: F401 (fixtures)
from tests.edge.runner_setup import copy_registry, device_yaml, inference, wait_until
from tests.edge.test_config import MINIMAL, write_video

ROOT = Path(__file__).resolve().parents[2]


def cut_off(video: Path, out: Path) -> Path:
    """The first half of an MP4: a recording cut off before its moov index was written."""
    data = video.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize("kind", ["cut-off mp4", "folder of broken images"])
def test_an_undecodable_file_or_folder_fails_after_a_few_tries_naming_the_reason(tmp_path, kind):
    # given a source that is there but holds nothing a decoder can read
    if kind == "cut-off mp4":
        uri = cut_off(write_video(tmp_path / "full.mp4", frames=30), tmp_path / "cut.mp4")
        reason = "moov index"
    else:
        uri = tmp_path / "shelf"
        uri.mkdir()
        for name in ("a.jpg", "b.png"):
            (uri / name).write_bytes(b"not an image at all")
        reason = "a.jpg, b.png"
    source = Source.from_config(parse_source(dict(id="cut", uri=str(uri), reconnect_backoff_max_s=0.1))).start()
    try:
        # when it is tried, then it ends as failed with the reason, instead of being retried forever
        assert wait_until(lambda: source.failed, 20), source.stats()
        stats = source.stats()
        assert stats["state"] == "failed" and source.ended and stats["frames"] == 0, stats
        assert reason in stats["last_error"] and str(uri) in stats["last_error"], stats["last_error"]
        assert stats["reconnects"] == DECODE_TRIES - 1, stats
    finally:
        source.stop()


def test_edge_check_decodes_a_frame_of_every_file_source(tmp_path, capsys):
    # given a device whose video is cut off (it exists, so the config itself is valid)
    (tmp_path / "mlflow.db").touch()
    (tmp_path / "data/demo").mkdir(parents=True)
    cut_off(write_video(tmp_path / "full.mp4", frames=30), tmp_path / "data/demo/video.mp4")
    (tmp_path / "device.yaml").write_text(MINIMAL)
    # when it is checked, then it is one error naming the source, the file and the reason; exit 2
    assert main(["check", "--config", str(tmp_path / "device.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sources[0].uri" in err[0] and "video.mp4" in err[0] and "moov" in err[0], err


def run_to_the_end(config: Path, log: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lensops.cli",
            "edge",
            "run",
            "--config",
            str(config),
            "--exit-when-done",
            "--max-seconds",
            "120",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_exit_when_done_exits_1_naming_a_failed_source_while_the_good_one_published_every_frame(
    registry_template, tiny_packages, video, mosquitto, collectors, tmp_path
):
    # given a device with a good video and one cut off
    registry = copy_registry(registry_template, tmp_path / "registry")
    registry.promote("v1")
    collector = collectors(mosquitto.port, ["lensops/#"])
    cut = cut_off(video, tmp_path / "cut.mp4")
    config = device_yaml(
        tmp_path / "device.yaml",
        registry,
        mosquitto.url,
        [{"id": "door", "uri": str(video), "fps": 60}, {"id": "gate", "uri": str(cut), "reconnect_backoff_max_s": 0.2}],
        tiny_packages.public_key,
    )
    # when it runs to the end
    result = run_to_the_end(config, tmp_path / "runner.log")
    # then it exits 1 naming the failed source and the reason, and the good source published every frame
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: source gate failed" in result.stderr and "moov" in result.stderr, result.stderr[-2000:]
    assert collector.wait_for(lambda ms: len({r["seq"] for r in inference(ms)}) == 120, 10), len(
        inference(collector.messages)
    )


@pytest.mark.slow
def test_exit_when_done_exits_1_when_the_broker_refuses_the_credentials(
    registry_template, tiny_packages, video, make_mosquitto, tmp_path
):
    # given a broker that requires a user and password, and a device that has the wrong password
    broker = make_mosquitto()
    broker.stop()
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "cam", "right"], check=True, capture_output=True)
    os.chmod(passwords, 0o600)
    broker.config.write_text(
        broker.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
        + f"password_file {passwords}\n"
    )
    broker.start()
    registry = copy_registry(registry_template, tmp_path / "registry")
    registry.promote("v1")
    config = device_yaml(
        tmp_path / "device.yaml",
        registry,
        broker.url,
        [{"id": "door", "uri": str(video), "fps": 60}],
        tiny_packages.public_key,
        mqtt={"username": "cam", "password_env": "CAM_PASSWORD"},
    )
    # when it runs to the end
    result = run_to_the_end(config, tmp_path / "runner.log", env={"CAM_PASSWORD": "wrong"})
    # then it exits 1 saying how many messages were not delivered (they stay in the outbox)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "message(s) not delivered" in result.stderr and "outbox" in result.stderr, result.stderr[-2000:]
