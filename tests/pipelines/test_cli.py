"""Pipeline commands as a user types them: clear one-line errors and non-zero exits for bad input."""

from __future__ import annotations

import json

import pytest

from lensops.cli import main as lensops
from tests.edge.conftest import Collector, Mosquitto
from tests.pipelines.mlflow_server import free_port

pytestmark = pytest.mark.slow


def _params(tmp_path, colour_models, **pipeline) -> str:
    params = {
        "models": {"m": {"name": "colours", "model_dir": str(colour_models.strong), "data": str(colour_models.data)}},
        "pipeline": {
            "variants": ["onnx-fp32"],
            "latency_runs": 3,
            "golden_samples": 1,
            "registry": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            **pipeline,
        },
    }
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(params))
    return str(path)


def test_unknown_params_key_is_named(tmp_path, colour_models, capsys):
    params = _params(tmp_path, colour_models, colour="red")
    assert lensops(["optimize", "--params", params, "--model", "m"]) == 2
    assert "pipeline.colour" in capsys.readouterr().err


def test_missing_metrics_file_is_named(tmp_path, colour_models, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, colour_models)
    assert lensops(["optimize", "--params", params, "--model", "m"]) == 0
    assert lensops(["package", "build", "--params", params, "--model", "m"]) == 2
    assert "reports/evaluate/m/metrics.json: missing metrics file" in capsys.readouterr().err
    assert not (tmp_path / "packages").exists(), "nothing half-written"


def test_full_chain_publishes_the_retained_fleet_notice(tmp_path, colour_models, capsys, monkeypatch):
    # given a real broker configured for promotion
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        monkeypatch.chdir(tmp_path)
        params = _params(
            tmp_path, colour_models, promote={"mqtt_url": broker.url, "fleet": "lobby", "latency_budget_ms": 1000}
        )
        for command in (["evaluate"], ["optimize"], ["package", "build"], ["register"], ["promote"]):
            assert lensops([*command, "--params", params, "--model", "m"]) == 0, capsys.readouterr().err
        assert "PROMOTE (moved)" in capsys.readouterr().out
        # then a device subscribing later still gets the notice (retained) with version and sha256
        collector = Collector(broker.port, ["lensops/fleets/lobby/deployment"])
        assert collector.wait_for(lambda got: len(got) >= 1, timeout_s=10)
        collector.close()
        assert collector.messages[0].retain
        notice = collector.messages[0].json()
        record = json.loads((tmp_path / "reports" / "register" / "m.json").read_text())
        assert (notice["model"], notice["alias"], notice["version"], notice["sha256"]) == (
            "colours",
            "production",
            record["version"],
            record["sha256"],
        )
        # and a second register + promote is idempotent (no new version, no move)
        assert lensops(["register", "--params", params, "--model", "m"]) == 0
        assert lensops(["promote", "--params", params, "--model", "m"]) == 0
        out = capsys.readouterr().out
        assert "already registered" in out and "already holds" in out
    finally:
        broker.stop()


def test_unreachable_registry_is_a_clear_error(tmp_path, colour_models, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    params = _params(tmp_path, colour_models)
    for command in (["evaluate"], ["optimize"], ["package", "build"]):
        assert lensops([*command, "--params", params, "--model", "m"]) == 0
    bad = _params(tmp_path, colour_models, registry={"uri": f"http://127.0.0.1:{free_port()}"})
    assert lensops(["register", "--params", bad, "--model", "m"]) == 2
    assert "unreachable" in capsys.readouterr().err
    assert not (tmp_path / "reports" / "register").exists()
