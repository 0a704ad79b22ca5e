"""Shadow mode end to end: a real runner with `shadow:` on, real packaged classifiers in an MLflow registry, a real
Mosquitto; then `lensops fleet report` over the reports it published.

Versions (one registered model, tiny-classifier): 1 champion; 2 the same network (a twin); 3 the same network with
its labels rotated by one (golden samples relabelled too, so it passes staging): its top-1 label always differs;
4 a package whose model file is garbage (fails staging).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from pipelines.fleet.cli import main as fleet_main
from tests.edge.packages import garble, relabel, rewrite, tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import run_device  # noqa: F401 (fixture)
from tests.edge.runner_setup import CLASSIFIER, DEVICE, wait_until

SOURCE = "shelf"
SHADOW_TOPIC = f"lensops/{DEVICE}/{SOURCE}/shadow"
INFERENCE_TOPIC = f"lensops/{DEVICE}/{SOURCE}/inference"


@dataclass(frozen=True)
class Registry:
    db: Path
    versions: dict  # role -> version


@pytest.fixture(scope="module")
def registry_template(tiny_packages, tmp_path_factory) -> Registry:  # noqa: F811
    from edge.registry import MlflowRegistryWriter

    root = tmp_path_factory.mktemp("shadow-registry")
    key = tiny_packages.private_key
    roles = {
        "champion": tiny_packages.classifier,
        "twin": tiny_packages.classifier_b,
        "relabelled": relabel(tiny_packages.classifier, root / "relabelled", key),
        "broken": rewrite(tiny_packages.classifier, root / "broken", "onnx-fp32", garble, key=key),
    }
    writer = MlflowRegistryWriter(f"sqlite:///{root / 'mlflow.db'}")
    versions = {}
    for role, package in roles.items():
        versions[role] = writer.register(package.archive, package.manifest, package.sha256, {}).version
    writer.set_alias(CLASSIFIER, "production", versions["champion"])
    return Registry(root / "mlflow.db", versions)


@pytest.fixture(scope="module")
def shelf(tiny_cls, tmp_path_factory) -> Path:
    """A dozen real test images of the tiny classification data set."""
    folder = tmp_path_factory.mktemp("shelf")
    for i, image in enumerate(sorted(tiny_cls.glob("test/*/*.jpg"))[:12]):
        shutil.copyfile(image, folder / f"{i:03d}.jpg")
    return folder


def device(tmp_path: Path, template: Registry, candidate: str, mqtt_url: str, shelf: Path, key: Path) -> Path:
    """A device serving production with `shadow:` on, its candidate alias set to version role `candidate`."""
    from edge.registry import MlflowRegistryWriter

    shutil.copyfile(template.db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowRegistryWriter(uri).set_alias(CLASSIFIER, "candidate", template.versions[candidate])
    config = {
        "device_id": DEVICE,
        "registry": {
            "type": "mlflow",
            "uri": uri,
            "model": CLASSIFIER,
            "public_key": str(key),
            "poll_s": 3600,
            "prefer_variant": "onnx-fp32",
        },
        "sources": [{"id": SOURCE, "uri": str(shelf), "loop": True, "fps": 30}],
        "mqtt": {"url": mqtt_url, "reconnect_max_s": 1.0},
        "shadow": {"rate": 0.5, "report_s": 0.3, "queue": 8},
        "status_interval_s": 0.3,
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def reports(collector) -> list[dict]:
    return [m.json() for m in collector.on(SHADOW_TOPIC)]


def compared(collector, candidate: str, frames: int):
    """The latest report whose total compared at least `frames` frames against `candidate`."""
    found = [r for r in reports(collector) if (r["candidate"] or {}).get("version") == candidate]
    return found[-1] if found and found[-1]["total"]["frames"] >= frames else None


def republish_retained(port: int, payloads: list[dict]) -> None:
    """Put real reports back on the broker, retained, so `lensops fleet report` (which listens) reads them at once."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for payload in payloads:
        client.publish(SHADOW_TOPIC, json.dumps(payload), 1, True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def fleet_report(port: int, *options: str) -> int:
    args = ["report", "--mqtt-url", f"mqtt://127.0.0.1:{port}", "--model", CLASSIFIER, "--listen-s", "1"]
    return fleet_main([*args, *options])


def test_twin_candidate_agrees_fully_and_only_the_champion_is_published(
    registry_template,
    tiny_packages,
    shelf,
    mosquitto,
    collectors,
    run_device,
    tmp_path,
    capsys,  # noqa: F811
):
    versions = registry_template.versions
    collector = collectors(mosquitto.port, ["lensops/#"])
    config = device(tmp_path, registry_template, "twin", mosquitto.url, shelf, tiny_packages.public_key)
    running = run_device(config)
    assert collector.wait_for(lambda _: compared(collector, versions["twin"], 10), 60), reports(collector)[-3:]
    status = wait_until(lambda: running.runner.status()["sources"][SOURCE]["shadow"]["frames"] >= 10, 10)
    assert status, running.runner.status()
    running.stop()

    report = compared(collector, versions["twin"], 10)
    assert report["schema"] == "lensops.shadow/1" and report["model"] == CLASSIFIER
    assert report["champion"]["version"] == versions["champion"] and report["task"] == "classification"
    assert report["total"]["agreement"] == 1.0 and report["rate"] == 0.5
    assert sum(report["total"]["scores"]["champion"]) == report["total"]["frames"]
    assert report["total"]["scores"]["champion"] == report["total"]["scores"]["candidate"]
    assert report["total"]["latency_ms"]["candidate"]["p99"] > 0
    # the inference topic carries the champion's results only
    served = {m.json()["model"]["version"] for m in collector.on(INFERENCE_TOPIC)}
    assert served == {versions["champion"]}
    # the candidate's deployment never shows up as the device's deployment
    deployed = {m.json()["version"] for m in collector.on(f"lensops/{DEVICE}/deployment")}
    assert deployed == {versions["champion"]}
    # the candidate's package cache is its own
    state = tmp_path / "state"
    assert (state / "shadow-models" / CLASSIFIER / versions["twin"]).is_dir()
    assert not (state / "models" / CLASSIFIER / versions["twin"]).exists()

    # the fleet report over the device's reports: the gate is met
    republish_retained(mosquitto.port, [report])
    out = tmp_path / "out"
    code = fleet_report(
        mosquitto.port, "--min-devices", "1", "--min-frames", "10", "--min-agreement", "0.99", "--out", str(out)
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "met: agreement >= 0.99 (have 1.0000)" in printed
    written = json.loads((out / "shadow-report.json").read_text())
    assert written["pairs"][0]["champion"] == versions["champion"] and written["agreement"] == 1.0
    assert (out / "shadow-report.md").read_text().startswith(f"# Shadow report: {CLASSIFIER}")


def test_relabelled_candidate_disagrees_and_misses_the_gate(
    registry_template,
    tiny_packages,
    shelf,
    mosquitto,
    collectors,
    run_device,
    tmp_path,
    capsys,  # noqa: F811
):
    versions = registry_template.versions
    collector = collectors(mosquitto.port, ["lensops/#"])
    config = device(tmp_path, registry_template, "relabelled", mosquitto.url, shelf, tiny_packages.public_key)
    running = run_device(config)
    assert collector.wait_for(lambda _: compared(collector, versions["relabelled"], 10), 60), reports(collector)[-3:]
    running.stop()
    report = compared(collector, versions["relabelled"], 10)
    assert report["total"]["agreement"] == 0.0, report["total"]
    assert {m.json()["model"]["version"] for m in collector.on(INFERENCE_TOPIC)} == {versions["champion"]}

    republish_retained(mosquitto.port, [report])
    code = fleet_report(mosquitto.port, "--candidate", versions["relabelled"], "--min-agreement", "0.9")
    captured = capsys.readouterr()
    assert code == 1, captured
    assert "MISSED: agreement >= 0.9 (have 0.0000)" in captured.out
    assert "agreement 0.0000 is below the 0.9 required" in captured.err


def test_candidate_that_fails_staging_does_not_disturb_serving(
    registry_template,
    tiny_packages,
    shelf,
    mosquitto,
    collectors,
    run_device,
    tmp_path,  # noqa: F811
):
    versions = registry_template.versions
    collector = collectors(mosquitto.port, ["lensops/#"])
    config = device(tmp_path, registry_template, "broken", mosquitto.url, shelf, tiny_packages.public_key)
    running = run_device(config)

    def failing_reports(_):
        found = [r for r in reports(collector) if r["candidate"] is None and r["total"]["failed"] >= 5]
        return found and f"version {versions['broken']} rejected" in (found[-1]["error"] or "")

    assert collector.wait_for(failing_reports, 60), reports(collector)[-3:]
    assert collector.wait_for(lambda _: len(collector.on(INFERENCE_TOPIC)) >= 20, 30)
    status = running.runner.status()
    assert status["state"] == "online" and status["sources"][SOURCE]["state"] == "ok", status
    assert versions["broken"] in status["shadow"][CLASSIFIER]["bad"], status["shadow"]
    running.stop()
    results = [m.json() for m in collector.on(INFERENCE_TOPIC)]
    assert {r["model"]["version"] for r in results} == {versions["champion"]}
    assert [r["seq"] for r in results] == list(range(len(results)))
    assert not [m for m in collector.on(f"lensops/{DEVICE}/deployment") if m.json()["state"] == "rejected"]
