"""Fixtures shared by the runner test modules (imported by name, like tests/edge/packages.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge.config import load_config
from edge.runner import Runner
from tests.edge.runner_setup import make_registry_template


@pytest.fixture(scope="module")
def registry_template(tiny_packages, tmp_path_factory):
    """tiny-detector versions v1, v2, tampered, nan in an MLflow SQLite registry (copied per test)."""
    return make_registry_template(tiny_packages, tmp_path_factory.mktemp("runner-registry"))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 120-frame synthetic video (320x240, 15 fps) with moving shapes."""
    from training.datasets.video import synth_video

    return synth_video(tmp_path_factory.mktemp("video") / "clip", 120, seed=11)


class Running:
    """A runner built from a YAML file, serving in a thread like `lensops edge run` does."""

    def __init__(self, config_path: Path, exit_when_done: bool = False):
        self.runner = Runner.from_config(load_config(config_path))
        self.runner.start()
        self.thread = threading.Thread(
            target=self.runner.run, kwargs={"exit_when_done": exit_when_done}, name="test-runner", daemon=True
        )
        self.thread.start()

    def wait(self, timeout_s: float) -> bool:
        """True once the runner stopped by itself (exit_when_done)."""
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def stop(self) -> None:
        self.runner.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the runner did not stop within 60 s"


@pytest.fixture
def run_device():
    """`run_device(config_path, exit_when_done=False)` starts a runner; all are stopped after the test."""
    made: list[Running] = []

    def start(config_path: Path, exit_when_done: bool = False) -> Running:
        made.append(Running(config_path, exit_when_done))
        return made[-1]

    yield start
    for running in made:
        running.stop()
