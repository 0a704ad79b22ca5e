"""`lensops fleet status` against a real Mosquitto: real device publishers (one stopped, one killed so its
last will stands), a garbage and an invalid retained status; the table, --json, --fleet, the console
entry point, and the errors. Plus `fleet_rows` on its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.mqtt import Publisher
from edge.mqtt.payloads import utc_timestamp
from pipelines.fleet import mqtt
from pipelines.fleet.cli import main
from pipelines.fleet.status import DeviceRow, age_text, fleet_rows
from tests.edge.conftest import collectors, free_port, mosquitto  # noqa: F401 (fixtures)
from tests.edge.mqtt.helpers import config
from tests.edge.mqtt.test_kill import Child

ROOT = Path(__file__).resolve().parents[3]
LONG_ERROR = "source yard: cannot open rtsp://cam-b.local/stream: " + "connection refused " * 6


def source(version: str, variant: str, fps: float, drops: int, p50: float, p99: float, **more) -> dict:
    """One source as the runner puts it in its status."""
    return {
        "state": "ok",
        "model": {"name": "shapes-detector", "version": version, "variant": variant},
        "fps": fps,
        "frames": 500,
        "drops": drops,
        "inferred": 497,
        "latency_ms": {"p50": p50, "p99": p99, "n": 200},
        "frame_age_ms": {"p50": p50 + 10, "p99": p99 + 20, "n": 200},
        "last_error": None,
        **more,
    }


STATUSES = {
    "cam-a": {
        "state": "online",
        "fleet": "lobby",
        "sources": {"door": source("7", "onnx-int8", 14.9, 3, 2.5, 4.25)},
        "last_error": None,
        "latency_budget_ms": 50.0,
    },
    "cam-b": {
        "state": "degraded",
        "fleet": "lobby",
        "sources": {
            "door": source("8", "onnx-fp32", 9.5, 0, 40.0, 80.5),
            "yard": {**source("8", "onnx-fp32", 0.0, 12, 41.0, 45.0), "state": "degraded", "last_error": LONG_ERROR},
        },
        "last_error": LONG_ERROR,
        "latency_budget_ms": 50.0,
    },
    "cam-c": {
        "state": "online",
        "fleet": "yard",
        "sources": {"gate": source("7", "openvino-fp32", 5.0, 1, 9.0, 11.0)},
        "last_error": None,
        "latency_budget_ms": None,
    },
}


def publish_garbage(url: str) -> None:
    client = mqtt.connect(url, "test-garbage")
    try:
        mqtt.publish(client, "lensops/cam-x/status", b"\x00not json{", retain=True)
        invalid = {"schema": "lensops.status/1", "device": "cam-y", "state": "nap"}
        mqtt.publish(client, "lensops/cam-y/status", invalid, retain=True)
    finally:
        mqtt.close(client)


@pytest.fixture
def fleet(mosquitto, collectors, tmp_path):
    """The broker holding: cam-a online, cam-b degraded (both lobby), cam-c stopped (yard, its full status
    says offline), cam-01 killed (its last will), cam-x garbage, cam-y invalid."""
    watcher = collectors(mosquitto.port, ["lensops/+/status"])
    publishers = {}
    for device, status in STATUSES.items():
        publisher = Publisher.from_config(config(mosquitto.url), device, tmp_path / device)
        publisher.publish_status(status)
        publishers[device] = publisher.start()
    killed = Child(mosquitto.url, tmp_path / "cam-01")  # tests/edge/mqtt/publisher_child.py: device cam-01
    killed.read_until("CONNECTED")
    publish_garbage(mosquitto.url)

    def last(device: str):
        got = watcher.on(f"lensops/{device}/status")
        return got[-1].payload if got else None

    assert watcher.wait_for(lambda _: all(last(d) for d in (*STATUSES, "cam-01", "cam-x", "cam-y")), 10)
    publishers.pop("cam-c").stop()
    killed.kill()
    assert watcher.wait_for(lambda _: json.loads(last("cam-c"))["state"] == "offline", 10)
    assert watcher.wait_for(lambda _: json.loads(last("cam-01")) == will("cam-01"), 10)
    yield mosquitto
    for publisher in publishers.values():
        publisher.stop(drain_timeout_s=0.5)


def will(device: str) -> dict:
    return {"schema": "lensops.status/1", "device": device, "state": "offline"}


def table(capsys) -> list[str]:
    out = capsys.readouterr().out
    return out.rstrip("\n").split("\n")


def test_table_shows_one_row_per_device_with_its_figures(fleet, capsys):
    # when the operator asks for the fleet's status
    assert main(["status", "--mqtt-url", fleet.url, "--settle-s", "0.3"]) == 0
    lines = table(capsys)
    # then a header and one row per device (cam-b's second source on the line below), sorted by device
    assert lines[0].split() == [
        "DEVICE", "FLEET", "STATE", "SOURCE", "MODEL", "VERSION", "VARIANT", "FPS", "DROPS", "P99", "MS",
        "OUTBOX", "LAST", "SEEN", "LAST", "ERROR",
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith(" ")}
    assert list(rows) == ["cam-01", "cam-a", "cam-b", "cam-c", "cam-x", "cam-y"]
    assert rows["cam-a"].split()[:11] == [
        "cam-a", "lobby", "online", "door", "shapes-detector", "7", "onnx-int8", "14.9", "3", "4.2", "0",
    ]  # fmt: skip
    assert re.fullmatch(r"[0-9]+s ago", " ".join(rows["cam-a"].split()[11:13])), rows["cam-a"]
    assert rows["cam-b"].split()[:12] == [
        "cam-b", "lobby", "degraded", "door", "shapes-detector", "8", "onnx-fp32", "9.5", "0", "80.5", "OVER", "0",
    ]  # fmt: skip
    assert rows["cam-b"].endswith("  " + LONG_ERROR[:57] + "..."), "the error, shortened to 60 characters"
    below = lines[lines.index(rows["cam-b"]) + 1].split()
    assert below == ["yard", "shapes-detector", "8", "onnx-fp32", "0.0", "12", "45.0"]
    assert rows["cam-c"].split()[:4] == ["cam-c", "yard", "offline", "gate"], "stopped: its full status, offline"
    assert rows["cam-01"].split() == ["cam-01", "-", "offline", *["-"] * 9], "the last will: no figures"
    assert rows["cam-x"].split()[:3] == ["cam-x", "-", "invalid"] and "not JSON" in rows["cam-x"]
    assert rows["cam-y"].split()[:3] == ["cam-y", "-", "invalid"]
    assert "not a valid lensops.status/1: state: Input should be" in rows["cam-y"]


def test_json_round_trips_and_fleet_filters(fleet, capsys):
    # when the rows are asked for as JSON, for fleet lobby
    assert main(["status", "--mqtt-url", fleet.url, "--settle-s", "0.3", "--fleet", "lobby", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    # then lobby's devices and those whose fleet is unknown (the will, the unreadable ones); not yard's cam-c
    assert [r["device"] for r in listed] == ["cam-01", "cam-a", "cam-b", "cam-x", "cam-y"]
    rows = [DeviceRow.from_dict(r) for r in listed]
    assert [r.to_dict() for r in rows] == listed, "the JSON rows read back into the same rows"
    b = rows[2]
    assert (b.state, b.outbox_depth, b.latency_budget_ms, b.last_error, b.problem) == (
        "degraded", 0, 50.0, LONG_ERROR, None
    )  # fmt: skip
    door, yard = b.sources
    assert (door.source, door.version, door.variant, door.fps, door.drops) == ("door", "8", "onnx-fp32", 9.5, 0)
    assert (door.latency_p50_ms, door.latency_p99_ms, door.latency_frames, door.frame_age_p99_ms) == (
        40.0, 80.5, 200, 100.5
    )  # fmt: skip
    assert door.over_budget is True and yard.over_budget is False and yard.last_error == LONG_ERROR
    assert 0 <= b.age_s < 60 and not b.stale and b.ts.endswith("Z")
    assert rows[0].state == "offline" and rows[0].sources == [] and rows[0].age_s is None
    assert rows[3].state == "invalid" and rows[3].problem.startswith("not JSON")
    # and the same rows come from fleet_rows over what read_retained returns (what a controller would call)
    direct = fleet_rows(mqtt.read_retained(fleet.url, "lensops/+/status", 0.3), fleet="lobby")
    strip = lambda r: {**r.to_dict(), "age_s": None}  # noqa: E731 - read at another moment
    assert [strip(r) for r in direct] == [strip(r) for r in rows]


def test_the_lensops_console_entry_point_runs_it(fleet):
    lensops = Path(sys.executable).with_name("lensops")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LENSOPS_MQTT_URL": fleet.url}  # the URL from the environment
    done = subprocess.run(
        [str(lensops), "fleet", "status", "--fleet", "yard", "--settle-s", "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    devices = [line.split()[0] for line in done.stdout.splitlines()[1:]]
    assert devices == ["cam-01", "cam-c", "cam-x", "cam-y"], done.stdout


def test_no_devices_is_said_and_exits_0(mosquitto, capsys):
    assert main(["status", "--mqtt-url", mosquitto.url, "--settle-s", "0.2", "--prefix", "elsewhere"]) == 0
    assert capsys.readouterr().out.strip() == f"no device status found under elsewhere/+/status on {mosquitto.url}"


def test_unreachable_broker_bad_url_and_no_url_are_one_error_each(capsys, monkeypatch):
    monkeypatch.delenv("LENSOPS_MQTT_URL", raising=False)
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    cases = {
        url: f"error: MQTT broker {url} unreachable",
        "http://user:secret@host/": "error: --mqtt-url: 'http://*:*@host/' is not an mqtt:// or mqtts:// URL",
    }
    for given, expected in cases.items():
        assert main(["status", "--mqtt-url", given]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(expected), err
    assert main(["status"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --mqtt-url: no broker given (pass --mqtt-url or set LENSOPS_MQTT_URL)"
    )


# -- fleet_rows on its own ---------------------------------------------------------------------------


def test_fleet_rows_flags_stale_statuses_and_never_raises():
    now = time.time()
    old = utc_timestamp(now - 120)
    statuses = {
        "lensops/cam-a/status": {"schema": "lensops.status/1", "device": "cam-a", "state": "online", "ts": old},
        "lensops/cam-b/status": json.dumps(
            {"schema": "lensops.status/1", "device": "cam-b", "state": "offline", "ts": old}
        ).encode(),
        "lensops/cam-c/status": b"[1, 2]",
        "lensops/cam-d/status": {"schema": "lensops.status/2", "device": "cam-d", "state": "online"},
        "lensops/cam-e/status": {
            "schema": "lensops.status/1",
            "device": "cam-e",
            "state": "online",
            "sources": {"s": {"fps": "fast", "latency_ms": [1, 2], "model": None}},
        },
    }
    rows = {r.device: r for r in fleet_rows(statuses, now, stale_s=60)}
    assert rows["cam-a"].stale and 119 < rows["cam-a"].age_s < 121 and age_text(rows["cam-a"].age_s) == "2m ago"
    assert not rows["cam-b"].stale, "an offline device is expected to be old"
    assert rows["cam-c"].problem == "not a JSON object: [1, 2]"
    assert rows["cam-d"].problem.startswith("not a valid lensops.status/1: schema:")
    assert rows["cam-e"].problem.startswith("not a valid lensops.status/1: sources.s.fps:")
    assert not fleet_rows(statuses, now, stale_s=300)[0].stale
    assert [age_text(s) for s in (None, -3, 4.7, 3600 * 5, 86400 * 2)] == ["-", "0s ago", "4s ago", "5h ago", "2d ago"]
