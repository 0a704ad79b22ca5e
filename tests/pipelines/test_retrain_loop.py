"""The loop closes: a device captures frames -> import -> fine-tune from production -> register ->
promote -> the same device swaps to the new version. Every step is the command the README gives, run
in a project folder of its own, against a real Mosquitto and an MLflow (SQLite) registry.

The decision does not depend on what accuracy the tiny training runs reach: promote's margin is set
below any possible difference (min_improvement -1), and the test asserts the reasons it gives.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from lensops.cli import main as lensops
from tests.edge.conftest import Collector, Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import run_device  # noqa: F401 (fixture)
from tests.edge.runner_setup import wait_until
from training.datasets import synth

pytestmark = pytest.mark.slow  # real (tiny) training runs

MODEL = "retrain-detector"
DEVICE = "cam-07"
INIT_FROM = f"models:/{MODEL}@production"  # the fine-tune starts from what the fleet runs (its mxnet-fp32 variant)
CAMERA_FRAMES = 20  # distinct frames the camera loops over
# Every frame is captured (random_rate 1.0), so once more than two loops' worth are in, every distinct frame
# is there and some came more than once: the import must keep at most CAMERA_FRAMES and drop exact copies.
CAPTURES_NEEDED = 2 * CAMERA_FRAMES + 1


def _params(project: Path, broker_url: str) -> tuple[dict, dict]:
    """(params.yaml, params-retrain.yaml) as the README splits them: the retrain file holds no `pipeline`."""
    train = {
        "task": "detection",
        "network": "ssd_96_mobilenet0.25",
        "model_name": MODEL,
        "input_size": 96,
        "epochs": 1,
        "batch_size": 8,
        "optimizer": "adam",
        "lr": 0.002,
        "warmup_epochs": 0.5,
        "num_workers": 0,
        "seed": 1,
        "progress": False,
        "tracking": "none",
    }
    retrain = {
        "retrain_detector": {
            **train,
            "data": "data/retrain",
            "init_from": INIT_FROM,
            "model_dir": "models/detector_retrained",
            "checkpoint_dir": "models/.ckpt/retrained",
        },
        "models": {
            "detector_retrained": {"name": MODEL, "model_dir": "models/detector_retrained", "data": "data/retrain"}
        },
    }
    return {
        "train_detector": {
            **train,
            "data": "data/base",
            "model_dir": "models/detector",
            "checkpoint_dir": "models/.ckpt/detector",
        },
        "models": {"detector": {"name": MODEL, "model_dir": "models/detector", "data": "data/base"}},
        "pipeline": {
            "registry": {"type": "mlflow", "uri": f"sqlite:///{project / 'mlflow.db'}"},
            # mxnet-fp32 makes a registered version trainable (init_from models:/...); onnx-fp32 serves
            "variants": ["mxnet-fp32", "onnx-fp32"],
            "latency_runs": 3,
            "golden_samples": 2,
            "calibration_images": 16,
            "score_threshold": 0.05,
            "parity": {"max_map_drop_pt": 100.0},
            "promote": {"min_improvement": -1.0, "latency_budget_ms": 10000.0, "mqtt_url": broker_url, "fleet": "test"},
        },
    }, retrain


def _pipeline(model_key: str, *models_from: str) -> None:
    for command in (["evaluate"], ["optimize"], ["package", "build"], ["register"], ["promote"]):
        assert lensops([*command, *models_from, "--model", model_key]) == 0, f"lensops {command[0]}"


def _device_yaml(project: Path, broker: Mosquitto, frames: Path) -> Path:
    config = {
        "device_id": DEVICE,
        "fleet": "test",
        "registry": {
            "type": "mlflow",
            "uri": f"sqlite:///{project / 'mlflow.db'}",
            "model": MODEL,
            "alias": "production",
            "poll_s": 3600,
            "prefer_variant": "onnx-fp32",
        },
        # 5 fps: enough captures in seconds, and the device leaves the two cores to training
        "sources": [{"id": "door", "uri": str(frames), "loop": True, "fps": 5}],
        "mqtt": {"url": broker.url, "topic_prefix": "lensops", "qos": 1, "reconnect_max_s": 1.0},
        "capture": {
            "dir": str(project / "capture"),
            "task": "detection",
            # every frame, whatever the model's scores (a one-epoch model may predict nothing,
            # and below_confidence never picks a frame without predictions)
            "policy": {"random_rate": 1.0, "seed": 0},
            "max_files": 500,
        },
        "status_interval_s": 0.5,
        "state_dir": str(project / "device-state"),
    }
    path = project / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_captured_frames_retrain_and_the_device_swaps_to_the_promoted_version(
    tiny_det, tmp_path, monkeypatch, capsys, run_device, mosquitto
):  # noqa: F811
    started = time.monotonic()
    broker = mosquitto
    collector = None
    try:
        # given a project whose production detector (v1) was trained on the base data
        project = tmp_path / "project"
        (project / "data").mkdir(parents=True)
        monkeypatch.chdir(project)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
        params, retrain = _params(project, broker.url)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (project / "params-retrain.yaml").write_text(yaml.safe_dump(retrain, sort_keys=False))
        (project / "data" / "base").symlink_to(tiny_det)
        assert lensops(["train", "--params", "params.yaml", "--section", "train_detector"]) == 0
        _pipeline("detector")
        assert "PROMOTE (moved)" in capsys.readouterr().out, "v1 becomes production"
        # and a device serving it on a camera that sees new scenes (an image folder, looped), capturing
        # every frame
        frames = synth.synth_detection(tmp_path / "camera", n=CAMERA_FRAMES, seed=21, size=96).root / "JPEGImages"
        collector = Collector(broker.port, [f"lensops/{DEVICE}/#"])
        running = run_device(_device_yaml(project, broker, frames))
        captured = project / "capture" / "predictions"
        n = wait_until(lambda: len(list(captured.glob("*.json"))) >= CAPTURES_NEEDED, 60)
        assert n, f"the device captured {len(list(captured.glob('*.json')))} of {CAPTURES_NEEDED} frames in 60 s"
        versions = {m.json()["model"]["version"] for m in collector.on(f"lensops/{DEVICE}/door/inference")}
        assert versions == {"1"}, versions

        # when the captures are imported into the base data (a snapshot of the folder, as a user copies it)
        shutil.copytree(project / "capture", project / "captures")  # the device keeps capturing meanwhile
        assert lensops(["data", "import-capture", "captures", "--out", "data/retrain", "--merge", "data/base"]) == 0
        record = json.loads((project / "data" / "retrain" / "captures.json").read_text())
        imported = record["frames"]
        # then the looped frames were captured more than once but imported once each
        assert 1 <= len(imported) <= CAMERA_FRAMES, f"{len(imported)} imported of {CAMERA_FRAMES} distinct frames"
        assert any(why["reason"] == "exact-duplicate" for why in record["dropped"].values()), record["dropped"]
        assert {f["model"]["version"] for f in imported.values()} == {"1"}, "provenance: the serving version"
        # when the detector is fine-tuned from production on it, and the candidate goes through the pipeline
        # (the README's commands: training from params-retrain.yaml, the pipeline with params.yaml's `pipeline`)
        assert lensops(["train", "--params", "params-retrain.yaml", "--section", "retrain_detector"]) == 0
        meta = json.loads((project / "models" / "detector_retrained" / "model.json").read_text())
        assert INIT_FROM in json.dumps(meta), "the model records where it started"
        _pipeline("detector_retrained", "--models-from", "params-retrain.yaml")
        # then promote decided by its rules, and says why
        report = json.loads((project / "reports" / "promote" / "detector_retrained" / "promotion.json").read_text())
        assert report["promote"] and report["action"] == "moved", report["reasons"]
        assert (report["challenger"]["version"], report["champion"]["version"]) == ("2", "1")
        assert any("vs champion v1" in r and "required > -1.0" in r for r in report["reasons"]), report["reasons"]
        # and the device, told by the retained fleet notice, swaps to version 2 and serves with it
        swapped = collector.wait_for(
            lambda ms: any(
                m.topic == f"lensops/{DEVICE}/deployment"
                and m.json().get("state") == "activated"
                and m.json().get("version") == "2"
                for m in ms
            ),
            60,
        )
        assert swapped, [m.json() for m in collector.on(f"lensops/{DEVICE}/deployment")]
        assert collector.wait_for(
            lambda ms: any(
                m.json()["model"]["version"] == "2" for m in ms if m.topic == f"lensops/{DEVICE}/door/inference"
            ),
            30,
        )
        running.stop()
    finally:
        if collector is not None:
            collector.close()
    print(f"capture -> import -> fine-tune -> promote -> swap in {time.monotonic() - started:.0f} s")
