"""Builders for runner tests: an MLflow registry holding tiny detector versions, a video, a device YAML.

The registry template is filled once per module (what `lensops register` does) and copied per
test, so each test moves its own aliases. Versions: `v1` and `v2` (good, differ only in their
manifest), `tampered` (its stored archive swapped for another package), `nan` (loads, but warm-up
outputs NaN).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlparse

import numpy as np
import paho.mqtt.client as mqtt
import yaml

from edge.mqtt.payloads import FLEET_DEPLOYMENT, utc_timestamp
from edge.registry import MlflowRegistry
from tests.edge.packages import BuiltPackage, TinyPackages, rewrite

MODEL = "tiny-detector"
CLASSIFIER = "tiny-classifier"
DEVICE = "cam-01"
FLEET = "test"


def nan_weights(path: Path) -> None:
    """A valid ONNX model whose float weights are NaN: it loads, and every output is NaN."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for i, init in enumerate(model.graph.initializer):
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 8:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full_like(array, np.nan), init.name))
    onnx.save(model, str(path))


@dataclass(frozen=True)
class RegistryTemplate:
    db: Path
    versions: dict[str, str]  # role -> registry version
    models: dict[str, str]  # role -> model name


def make_registry_template(packages: TinyPackages, root: Path) -> RegistryTemplate:
    from edge.registry import MlflowRegistryWriter

    det, key = packages.detector, packages.private_key
    roles: dict[str, BuiltPackage] = {
        "v1": det,
        "v2": rewrite(det, root / "v2", "onnx-fp32", lambda _: None, key=key, evaluation={"map": 0.6}),
        "tampered": rewrite(det, root / "tampered", "onnx-fp32", lambda _: None, key=key, evaluation={"map": 0.7}),
        "nan": rewrite(det, root / "nan", "onnx-fp32", nan_weights, key=key, evaluation={"map": 0.8}),
        "cls": packages.classifier,
    }
    writer = MlflowRegistryWriter(f"sqlite:///{root / 'mlflow.db'}")
    versions = {}
    for role, package in roles.items():
        registered = writer.register(package.archive, package.manifest, package.sha256, {})
        versions[role] = registered.version
        if role == "tampered":  # the stored archive is replaced by another valid package after registration
            shutil.copyfile(roles["v2"].archive, Path(unquote(urlparse(registered.uri).path)))
    return RegistryTemplate(root / "mlflow.db", versions, {r: p.manifest.name for r, p in roles.items()})


@dataclass
class DeviceRegistry:
    uri: str
    versions: dict[str, str]
    models: dict[str, str]

    def promote(self, role: str) -> str:
        from edge.registry import MlflowRegistryWriter

        MlflowRegistryWriter(self.uri).set_alias(self.models[role], "production", self.versions[role])
        return self.versions[role]

    def fleet_notice(self, port: int, fleet: str = FLEET, prefix: str = "lensops") -> dict:
        """Publish the retained fleet deployment notice for what production names now (as `promote` does)."""
        resolved = MlflowRegistry(self.uri).resolve(MODEL, "production")
        notice = {
            "schema": FLEET_DEPLOYMENT,
            "fleet": fleet,
            "model": MODEL,
            "alias": "production",
            "version": resolved.version,
            "package_uri": resolved.uri,
            "sha256": resolved.sha256,
            "ts": utc_timestamp(),
        }
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.publish(f"{prefix}/fleets/{fleet}/deployment", json.dumps(notice), 1, True).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        return notice


def copy_registry(template: RegistryTemplate, folder: Path) -> DeviceRegistry:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template.db, folder / "mlflow.db")
    return DeviceRegistry(f"sqlite:///{folder / 'mlflow.db'}", dict(template.versions), dict(template.models))


def device_yaml(
    path: Path, registry: DeviceRegistry, mqtt_url: str, sources: list[dict], public_key: Path, **overrides: Any
) -> Path:
    """A device config as a user writes it (fast status and reconnects for tests), written to `path`."""
    mqtt_section = {
        "url": mqtt_url,
        "topic_prefix": "lensops",
        "qos": 1,
        "reconnect_max_s": 1.0,
        **overrides.pop("mqtt", {}),
    }
    config = {
        "device_id": DEVICE,
        "fleet": FLEET,
        "registry": {
            "type": "mlflow",
            "uri": registry.uri,
            "model": MODEL,
            "alias": "production",
            "public_key": str(public_key),
            "poll_s": 3600,
        },
        "sources": sources,
        "mqtt": mqtt_section,
        "status_interval_s": 0.5,
        "state_dir": str(path.parent / "state"),
        **overrides,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_until(condition: Callable[[], Any], timeout_s: float, every_s: float = 0.05) -> Optional[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    return None


def inference(messages, source: str = "door") -> list[dict]:
    topic = f"lensops/{DEVICE}/{source}/inference"
    return [m.json() for m in messages if m.topic == topic]


def of_topic(messages, suffix: str) -> list[dict]:
    return [m.json() for m in messages if m.topic == f"lensops/{DEVICE}/{suffix}"]
