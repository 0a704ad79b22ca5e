"""Shared fixtures: tiny generated data sets (seconds to make) and an isolated MLflow store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.pipelines.mlflow_server import free_port
from training.datasets import synth


@pytest.fixture(scope="session")
def tiny_cls(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "cls"
    synth.synth_classification(root, n=150, seed=3, size=32)
    return root


@pytest.fixture(scope="session")
def tiny_det(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "det"
    synth.synth_detection(root, n=60, seed=3, size=96)
    return root


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="module")
def moto_url():
    """moto in server mode: a real HTTP endpoint on 127.0.0.1 (reset per test by the fixtures that use it)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
