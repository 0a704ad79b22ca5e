"""Sources that share a model are inferred in batches by the real runner, and each source still sees what it
saw alone: every frame once, in order, with contiguous seq; a hot swap between two of its frames; its own
figures in the status."""

from __future__ import annotations

import pytest

from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import registry_template, run_device, video  # noqa: F401 (fixtures)
from tests.edge.runner_setup import DEVICE, copy_registry, device_yaml, inference, of_topic

pytestmark = pytest.mark.slow  # the packages come from a real (tiny) training run

SOURCES = ("door", "hall", "yard")
FRAMES = 120  # the replayed video's


def test_batched_sources_keep_their_order_seq_and_figures_across_a_hot_swap(
    registry_template, tiny_packages, video, mosquitto, collectors, run_device, tmp_path
):
    # given v1 in production and three sources replaying the same video, batched: a batch waits up to
    # 200 ms for the other sources' frames (every source waiting ends the wait), so batches of three are the rule
    registry = copy_registry(registry_template, tmp_path / "registry")
    v1 = registry.promote("v1")
    collector = collectors(mosquitto.port, [f"lensops/{DEVICE}/#"])
    config = device_yaml(
        tmp_path / "device.yaml",
        registry,
        mosquitto.url,
        # 15 fps: 8 s of video, so the swap has as long to land as in test_runner's hot-swap test
        [{"id": name, "uri": str(video), "fps": 15} for name in SOURCES],
        tiny_packages.public_key,
        batch={"max_size": 3, "deadline_ms": 200},
        latency_budget_ms=60000,
    )
    running = run_device(config, exit_when_done=True)
    seen: dict[str, list[int]] = {name: [] for name in SOURCES}
    for worker in running.runner.workers:
        worker.sinks.append(("record", lambda inferred, got=seen[worker.id]: got.append(inferred.frame.index)))
    assert collector.wait_for(lambda ms: all(len(inference(ms, s)) >= 10 for s in SOURCES), 60), "v1 never served"
    # when v2 is promoted and the fleet notice says so
    v2 = registry.promote("v2")
    registry.fleet_notice(mosquitto.port)
    assert running.wait(120), "the runner did not finish the three replays"
    # then each source got every frame once, in order, seq 0..119, v1 then v2 switching between two frames
    assert collector.wait_for(lambda ms: all(len(inference(ms, s)) >= FRAMES for s in SOURCES), 10)
    for name in SOURCES:
        results = inference(collector.messages, name)
        assert [r["seq"] for r in results] == list(range(FRAMES)), f"{name}: seq gap or reordering"
        assert seen[name] == list(range(FRAMES)), f"{name}: frames lost or repeated"
        versions = [r["model"]["version"] for r in results]
        assert v2 in versions, f"{name}: never served by v2"
        switch = versions.index(v2)
        assert versions == [v1] * switch + [v2] * (FRAMES - switch), f"{name}: {versions}"
    # and frames of different sources did share batches
    stats = running.runner.batchers[next(iter(running.runner.batchers))].stats()
    assert stats["frames"] == len(SOURCES) * FRAMES and stats["mean"] > 1, stats
    # and each source's status carries its own latency and frame age
    online = [s for s in of_topic(collector.messages, "status") if s["state"] == "online"]
    last = online[-1]["sources"]
    for name in SOURCES:
        assert last[name]["latency_ms"]["n"] >= 1 and last[name]["frame_age_ms"]["p99"] > 0, last[name]
