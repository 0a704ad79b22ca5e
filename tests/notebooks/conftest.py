"""A tiny project for the notebooks: what `make demo` leaves behind, at a size CI affords.

params.yaml (the project's), flat-colour classification data (a CIFAR ResNet-20 separates the colours
within a few epochs on any CPU: the notebooks' checks then hold whatever the run), the same data with a
changed class list, and a registry (SQLite, as the demo's mlflow.db) whose `colours` version 1, with
its mxnet-fp32 variant, is `production`; for the device's notebook, tiny detection data, a video from the
demo generator and a one-epoch detector `boxes`, production too (it may find nothing: the notebook
captures every frame in CI).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.config import PipelineConfig
from edge.registry import MlflowRegistryWriter
from tests.pipelines.models import colour_data
from tests.pipelines.packaged import package_model
from tests.training.helpers import quick_config
from training.datasets import synth
from training.datasets.video import synth_video
from training.runner import train
from training.sagemaker_env import RunEnvironment

ROOT = Path(__file__).resolve().parents[2]
MODEL = "colours"
DETECTOR = "boxes"
WITH_MXNET = PipelineConfig(variants=("mxnet-fp32", "onnx-fp32"), latency_runs=3, golden_samples=1,
                            calibration_images=8)


@dataclass(frozen=True)
class TinyProject:
    root: Path
    tracking_uri: str  # the project's sqlite:/// MLflow store and registry


def _changed_class_list(source: Path, out: Path) -> Path:
    """red and green from `source`, blue removed, white new (flat white with noise, as colour_data draws)."""
    rng = np.random.default_rng(5)
    for split in ("train", "val", "test"):
        for name in ("red", "green"):
            shutil.copytree(source / split / name, out / split / name)
        folder = out / split / "white"
        folder.mkdir(parents=True)
        for i in range(len(list((source / split / "red").iterdir()))):
            image = np.clip(225 + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i}.png"), image)
    return out


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> TinyProject:
    root = tmp_path_factory.mktemp("notebook-project")
    for name in ("params.yaml", "params-retrain.yaml"):
        shutil.copy(ROOT / name, root / name)
    data = colour_data(root / "data" / "colours")
    _changed_class_list(data, root / "data" / "changed")
    store = f"sqlite:///{root / 'mlflow.db'}"
    cfg = quick_config(data, root / "models" / "production", epochs=4, network="cifar_resnet20_v1", model_name=MODEL)
    model = train(cfg, RunEnvironment(), root).model_dir
    _, archive, manifest, sha = package_model(model, data, root / "package", cfg=WITH_MXNET)
    writer = MlflowRegistryWriter(store)
    version = writer.register(archive, manifest, sha, {}).version
    writer.set_alias(MODEL, "production", version)
    detection = synth.synth_detection(root / "data" / "detection", n=40, seed=1, size=96).root
    synth_video(root / "data" / "video", n_frames=20, seed=2, size=(160, 120))
    det_cfg = quick_config(detection, root / "models" / "detector", task="detection", epochs=1, batch_size=8,
                           input_size=96, model_name=DETECTOR)
    detector = train(det_cfg, RunEnvironment(), root).model_dir
    _, archive, manifest, sha = package_model(detector, detection, root / "detector-package", cfg=WITH_MXNET)
    writer.set_alias(DETECTOR, "production", writer.register(archive, manifest, sha, {}).version)
    return TinyProject(root, store)
