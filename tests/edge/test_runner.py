"""The runner end to end against a real Mosquitto and a real MLflow (SQLite) registry.

Every frame published with contiguous seq and valid payloads; a promotion hot-swaps between two
frames within 10 s; tampered and warm-up-failing versions are rejected while the old model serves.
"""

from __future__ import annotations

import time

import jsonschema
import pytest

from edge.mqtt.payloads import load_schema
from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import registry_template, run_device, video  # noqa: F401 (fixtures)
from tests.edge.runner_setup import DEVICE, MODEL, copy_registry, device_yaml, inference, of_topic, wait_until

pytestmark = pytest.mark.slow  # the packages come from a real (tiny) training run

VALIDATORS = {
    name: jsonschema.Draft202012Validator(load_schema(name)) for name in ("inference", "status", "deployment")
}


def validate_all(messages) -> None:
    for m in list(messages):  # a snapshot: a running device keeps adding
        kind = m.topic.rsplit("/", 1)[-1]
        if kind in VALIDATORS:
            VALIDATORS[kind].validate(m.json())


def test_every_frame_is_published_with_contiguous_seq_and_valid_payloads(
    registry_template, tiny_packages, video, mosquitto, collectors, run_device, tmp_path
):
    # given v1 in production and a device replaying a 120-frame video
    registry = copy_registry(registry_template, tmp_path / "registry")
    v1 = registry.promote("v1")
    collector = collectors(mosquitto.port, ["lensops/#"])
    capture = {
        "dir": str(tmp_path / "capture"),
        "task": "detection",
        "policy": {"random_rate": 1.0, "seed": 0},
        "max_files": 5,
    }
    config = device_yaml(
        tmp_path / "device.yaml",
        registry,
        mosquitto.url,
        [{"id": "door", "uri": str(video), "fps": 60}],
        tiny_packages.public_key,
        capture=capture,
        latency_budget_ms=60000,
    )
    # when the runner plays it to the end
    started = time.monotonic()
    running = run_device(config, exit_when_done=True)
    assert running.wait(120), "the runner did not finish the video within 120 s"
    elapsed = time.monotonic() - started
    # then every frame arrived once, in order, numbered 0..119, by v1, and every payload validates
    assert collector.wait_for(lambda ms: len(inference(ms)) >= 120, 10), len(inference(collector.messages))
    results = inference(collector.messages)
    assert [r["seq"] for r in results] == list(range(120)), [r["seq"] for r in results][:20]
    assert {(r["device"], r["source"]) for r in results} == {(DEVICE, "door")}
    assert {tuple(r["model"].values())[:2] for r in results} == {(MODEL, v1)}, "served by the registry's version"
    assert [r["frame_ts"] for r in results] == sorted(r["frame_ts"] for r in results), "frame_ts in capture order"
    for r in results:
        labels = [p["label"] for p in r["predictions"]]
        assert r["counts"] == {label: labels.count(label) for label in set(labels)}, r
    validate_all(collector.messages)
    # and the deployment steps and a status naming the model were published
    steps = [(e["state"], e["version"]) for e in of_topic(collector.messages, "deployment")]
    assert steps == [("downloading", v1), ("verifying", v1), ("activated", v1)], steps
    statuses = of_topic(collector.messages, "status")
    online = [s for s in statuses if s["state"] == "online" and (s["sources"]["door"]["model"] or {}).get("version")]
    assert online and online[-1]["sources"]["door"]["model"]["version"] == v1, statuses[-3:]
    # with the model's recent latency and frame age per source, and the device's budget to compare them with
    door = online[-1]["sources"]["door"]
    assert online[-1]["latency_budget_ms"] == 60000, online[-1]
    for figures in (door["latency_ms"], door["frame_age_ms"]):
        assert 0 < figures["p50"] <= figures["p99"] and 1 <= figures["n"] <= 120, door
    assert door["frame_age_ms"]["p99"] >= door["latency_ms"]["p50"], "a frame's age includes the model's time"
    assert statuses[-1]["state"] == "offline", "a clean stop leaves the retained status offline"
    # and frames were captured for retraining on the capture thread, within the bound
    captured = sorted((tmp_path / "capture/JPEGImages").glob("*.jpg"))
    assert 1 <= len(captured) <= 5 and (tmp_path / "capture/labels.txt").is_file(), captured
    print(f"120 frames published in {elapsed:.1f} s (incl. model download and staging)")


def test_promotion_swaps_between_frames_within_10_s_without_gap_or_lost_frame(
    registry_template, tiny_packages, video, mosquitto, collectors, run_device, tmp_path
):
    # given a device serving v1 on a 120-frame replay at 15 fps (8 s), polling the registry only hourly
    registry = copy_registry(registry_template, tmp_path / "registry")
    v1 = registry.promote("v1")
    collector = collectors(mosquitto.port, [f"lensops/{DEVICE}/#"])
    config = device_yaml(
        tmp_path / "device.yaml", registry, mosquitto.url, [{"id": "door", "uri": str(video)}], tiny_packages.public_key
    )
    running = run_device(config, exit_when_done=True)
    seen: list[int] = []
    running.runner.workers[0].sinks.append(("record", lambda inferred: seen.append(inferred.frame.index)))
    assert collector.wait_for(lambda ms: len(inference(ms)) >= 10, 60), "v1 never served"
    # when v2 is promoted and the retained fleet notice says so (what `lensops promote` does)
    v2 = registry.promote("v2")
    registry.fleet_notice(mosquitto.port)
    promoted = time.monotonic()
    # then the device switches within 10 s ...
    first_v2 = collector.wait_for(lambda ms: any(r["model"]["version"] == v2 for r in inference(ms)), 10)
    assert first_v2, f"no v2 result within 10 s: {of_topic(collector.messages, 'deployment')}"
    switched = next(
        m.at for m in collector.messages if m.topic.endswith("/inference") and m.json()["model"]["version"] == v2
    )
    assert running.wait(60), "the runner did not finish the video"
    # ... between two frames: all v1, then all v2, seq contiguous, every frame inferred exactly once
    results = inference(collector.messages)
    versions = [r["model"]["version"] for r in results]
    assert [r["seq"] for r in results] == list(range(120)), "seq gap or reordering around the swap"
    assert seen == list(range(120)), f"frames lost or repeated: {sorted(set(range(120)) - set(seen))}"
    assert versions == [v1] * versions.index(v2) + [v2] * (120 - versions.index(v2)), versions
    assert versions.index(v2) < 110, "the swap came too late to show anything"
    print(f"switched {switched - promoted:.2f} s after the fleet notice, at frame {versions.index(v2)}")


def test_tampered_and_warm_up_failing_versions_are_rejected_while_the_old_model_serves(
    registry_template, tiny_packages, video, mosquitto, collectors, run_device, tmp_path
):
    # given a device serving v1 on a looping replay
    registry = copy_registry(registry_template, tmp_path / "registry")
    v1 = registry.promote("v1")
    collector = collectors(mosquitto.port, [f"lensops/{DEVICE}/#"])
    config = device_yaml(
        tmp_path / "device.yaml",
        registry,
        mosquitto.url,
        [{"id": "door", "uri": str(video), "loop": True, "fps": 30}],
        tiny_packages.public_key,
    )
    running = run_device(config)  # noqa: F841 (the runner serves while the test holds it)
    assert collector.wait_for(lambda ms: len(inference(ms)) >= 10, 60), "v1 never served"
    rejected = {}
    for role, reason in (("tampered", "differs from the registry's"), ("nan", "NaN")):
        # when the alias moves to a bad package
        bad = registry.promote(role)
        registry.fleet_notice(mosquitto.port)
        # then it is rejected, saying why
        event = collector.wait_for(
            lambda ms: any(e["state"] == "rejected" and e["version"] == bad for e in of_topic(ms, "deployment")), 30
        )
        assert event, of_topic(collector.messages, "deployment")
        rejected[role] = next(
            e for e in of_topic(collector.messages, "deployment") if e["version"] == bad and e["state"] == "rejected"
        )
        assert reason in rejected[role]["reason"], rejected[role]
    # and v1 kept serving every frame throughout, without a gap
    count = len(inference(collector.messages))
    assert collector.wait_for(lambda ms: len(inference(ms)) >= count + 15, 10), "results stopped flowing"
    results = inference(collector.messages)
    assert {r["model"]["version"] for r in results} == {v1}
    assert [r["seq"] for r in results] == list(range(len(results)))
    assert not [
        e for e in of_topic(collector.messages, "deployment") if e["state"] == "activated" and e["version"] != v1
    ]
    # and the retained status names the bad versions and still says v1
    nan = registry.versions["nan"]
    status = wait_until(
        lambda: [
            s
            for s in of_topic(collector.messages, "status")
            if nan in s.get("models", {}).get(MODEL, {}).get("bad", [])
        ],
        5,
    )
    assert status and status[-1]["sources"]["door"]["model"]["version"] == v1, of_topic(collector.messages, "status")[
        -1
    ]
    validate_all(collector.messages)
