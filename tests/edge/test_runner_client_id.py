"""Two runners started from one config (one device_id, so one MQTT client id): each says so, by name,
in its log, its retained status and /healthz; every payload carries a per-start instance id."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request

import pytest
import yaml

from tests.edge.conftest import free_port
from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import registry_template, video  # noqa: F401 (fixtures)
from tests.edge.runner_setup import DEVICE, copy_registry, device_yaml, inference, wait_until
from tests.edge.test_runner_faults import start_runner

pytestmark = pytest.mark.slow  # the packages come from a real (tiny) training run
CLIENT_ID = f"lensops-{DEVICE}"


def _healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_two_runners_with_one_client_id_each_name_the_conflict_and_their_payloads_differ_by_instance(
    registry_template, tiny_packages, video, mosquitto, collectors, tmp_path
):
    # given one device config, copied to two boxes (own state folder and page port each)
    registry = copy_registry(registry_template, tmp_path / "registry")
    registry.promote("v1")
    collector = collectors(mosquitto.port, ["lensops/#"])
    base = device_yaml(
        tmp_path / "device.yaml",
        registry,
        mosquitto.url,
        [{"id": "door", "uri": str(video), "loop": True, "fps": 10}],
        tiny_packages.public_key,
    )
    ports, runners, logs = [free_port(), free_port()], [], []
    for i, port in enumerate(ports):
        config = yaml.safe_load(base.read_text())
        config.update(state_dir=str(tmp_path / f"state-{i}"), stream={"port": port, "host": "127.0.0.1"})
        path = tmp_path / f"device-{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        logs.append(tmp_path / f"runner-{i}.log")
        runners.append(start_runner(path, logs[-1]))
    try:
        # when both run, then each logs an error naming the client id
        named = wait_until(
            lambda: (
                all("is in use by another client" in log.read_text(errors="replace") for log in logs if log.exists())
                and all(log.exists() for log in logs)
            ),
            60,
        )
        assert named, [log.read_text(errors="replace")[-1500:] for log in logs if log.exists()]
        assert all(f"client id '{CLIENT_ID}'" in log.read_text() for log in logs)

        # and /healthz says so on both boxes
        def unhealthy():
            health = [_healthz(port) for port in ports]
            return all(code == 503 and CLIENT_ID in body.get("client_id_conflict", "") for code, body in health)

        assert wait_until(unhealthy, 10), [
            _healthz(port) for port in ports
        ]  # the page's stats follow the status (0.5 s)
    finally:
        for runner in runners:
            runner.send_signal(signal.SIGTERM)
        for runner in runners:
            runner.wait(30)
    # and the retained status named it, and one topic carries both writers' frames, told apart by instance
    statuses = [m.json() for m in collector.messages if m.topic == f"lensops/{DEVICE}/status"]
    assert any(CLIENT_ID in (s.get("client_id_conflict") or "") for s in statuses), statuses[-2:]
    instances = {r.get("instance") for r in inference(collector.messages)}
    assert len(instances) == 2 and None not in instances, instances
