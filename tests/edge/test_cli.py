"""`lensops edge`: bad configs give one clear error line and exit 2; `check` says what a config resolves to."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from tests.edge.test_config import MINIMAL, write_video

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path) -> Path:
    write_video(tmp_path / "data/demo/video.mp4")
    (tmp_path / "mlflow.db").touch()
    return tmp_path


def config(folder: Path, text: str) -> Path:
    (folder / "device.yaml").write_text(text)
    return folder / "device.yaml"


@pytest.mark.parametrize(
    "case, old, new, named",
    [
        ("unknown key", "stream: {port: 8080}", "stream: {port: 8080, colour: red}", "stream.colour: unknown key"),
        ("wrong type", "qos: 1}", "qos: high}", "mqtt.qos: Input should be 0 or 1"),
        (
            "missing file",
            "data/demo/video.mp4",
            "data/demo/gone.mp4",
            "sources[0].uri: video file or image folder not found",
        ),
        ("bad URL", "mqtt://127.0.0.1:1883", "tcp://127.0.0.1:1883", "mqtt.url: scheme 'tcp'"),
    ],
)
def test_bad_config_is_one_error_line_and_exit_2(project, capsys, case, old, new, named):
    path = config(project, MINIMAL.replace(old, new))
    code = main(["run", "--config", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, case
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and named in err[0], err


def test_missing_config_file_and_usage_errors_exit_2(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["run"]) == 2, "--config is required"
    assert main(["fly"]) == 2


def test_check_prints_what_the_config_resolves_to(project, capsys):
    assert main(["check", "--config", str(config(project, MINIMAL))]) == 0
    out = capsys.readouterr().out
    assert f"sqlite:///{project / 'mlflow.db'}" in out and "door (file " in out and "-> shapes-detector" in out, out


def test_a_taken_stream_port_exits_1_and_leaves_signal_handlers_alone(project, capsys):
    before = signal.getsignal(signal.SIGTERM)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = MINIMAL.replace("stream: {port: 8080}", f"stream: {{port: {port}, host: 127.0.0.1}}")
        code = main(["run", "--config", str(config(project, text)), "--max-seconds", "1"])
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_installed_command_exits_2_on_a_bad_config(project):
    path = config(project, MINIMAL.replace("fleet: demo", "fleet: demo\nfleets: [a]"))
    done = subprocess.run(
        [sys.executable, "-m", "lensops.cli", "edge", "run", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert (
        done.stderr.strip() == f"error: {path}: fleets: unknown key (did you mean 'fleet'?); expected one of: "
        "device_id, fleet, registry, sources, mqtt, stream, capture, shadow, state_dir, threads, runtimes, "
        "latency_budget_ms, batch, capture_nice, switch_interval_ms, status_interval_s, exit_when_done"
    ), done.stderr
