"""`pip install .[edge]` into a fresh virtual environment: no training or cloud stack, and the runner works there.

A clean venv (no system site-packages) gets the project's sources (copied, so the build leaves nothing
in the checkout) installed with the `edge` extra from the configured package index. Takes a minute or
two; skipped only when pip cannot reach an index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "lensops", "edge", "training", "pipelines", "common")
FORBIDDEN = ("mxnet", "gluoncv", "sagemaker", "dvc")
OFFLINE = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Could not fetch URL",
    "connection timed out",
    "ProxyError",
)


def clean_env(venv: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("MLFLOW_")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edge-install")
    source = root / "lensops-src"
    source.mkdir()
    for name in SOURCES:
        target = ROOT / name
        if target.is_dir():
            shutil.copytree(target, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copyfile(target, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg, cfg
    done = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", f"{source}[edge]"],
        cwd=root,
        env=clean_env(venv),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        log = done.stdout[-3000:] + done.stderr[-3000:]
        if any(sign in log for sign in OFFLINE):
            pytest.skip(f"pip cannot reach a package index: {log[-500:]}")
        pytest.fail(f"pip install .[edge] failed:\n{log}")
    return venv


def run_in(venv: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean_env(venv), capture_output=True, text=True, timeout=timeout
    )


def test_the_edge_install_pulls_no_training_or_cloud_packages(edge_venv, tmp_path):
    listed = run_in(edge_venv, edge_venv / "bin/python", "-m", "pip", "list", "--format=json", cwd=tmp_path)
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "lensops" in names and "onnxruntime" in names and "paho-mqtt" in names, sorted(names)
    pulled = sorted(n for n in names if any(n == f or n.startswith(f + "-") for f in FORBIDDEN))
    assert not pulled, f"the device install pulled {pulled}"


def test_every_edge_module_imports_from_the_installed_package(edge_venv, tmp_path):
    script = (
        "import importlib, pkgutil, edge, edge.cli\n"
        "names = [m.name for m in pkgutil.walk_packages(edge.__path__, 'edge.')]\n"
        "[importlib.import_module(n) for n in names]\n"
        "print(edge.__file__, len(names))"
    )
    done = run_in(edge_venv, edge_venv / "bin/python", "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    where, count = done.stdout.split()
    assert str(edge_venv) in where and int(count) >= 20, done.stdout


def test_the_runner_works_in_the_edge_install(edge_venv, tiny_packages, mosquitto, collectors, tmp_path):
    from edge.registry import MlflowRegistryWriter
    from tests.edge.runner_setup import inference

    # given a registered, signed tiny classifier in production and a folder of five frames
    writer = MlflowRegistryWriter(f"sqlite:///{tmp_path / 'mlflow.db'}")
    package = tiny_packages.classifier
    version = writer.register(package.archive, package.manifest, package.sha256, {}).version
    writer.set_alias(package.manifest.name, "production", version)
    (tmp_path / "frames").mkdir()
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"frames/{i}.png"), np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8))
    shutil.copyfile(tiny_packages.public_key, tmp_path / "signing.pub")
    config = {
        "device_id": "cam-01",
        "registry": {
            "type": "mlflow",
            "uri": "sqlite:///mlflow.db",
            "model": package.manifest.name,
            "public_key": "signing.pub",
        },
        "sources": [{"id": "door", "uri": "frames"}],
        "mqtt": {"url": mosquitto.url},
    }
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    collector = collectors(mosquitto.port, ["lensops/cam-01/#"])
    # when the installed `lensops edge run` plays the folder
    done = run_in(
        edge_venv, edge_venv / "bin/lensops", "edge", "run", "--config", "device.yaml", "--exit-when-done", cwd=tmp_path
    )
    # then every frame was published by the registered version
    assert done.returncode == 0, done.stderr[-3000:]
    assert collector.wait_for(lambda ms: len(inference(ms)) >= 5, 10), done.stderr[-3000:]
    results = inference(collector.messages)
    assert [r["seq"] for r in results] == list(range(5))
    assert {r["model"]["version"] for r in results} == {version}
    # and a bad config is one error line and exit 2 there too
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "mqtt": {"url": "mqtt//nohost"}}))
    bad = run_in(edge_venv, edge_venv / "bin/lensops", "edge", "run", "--config", "bad.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: bad.yaml: mqtt.url:"), bad.stderr
