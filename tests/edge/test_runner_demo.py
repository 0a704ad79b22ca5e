"""The demo end to end, at a size CI affords: the issue's minimal device.yaml, `lensops edge run` on a video
from the demo generator (seed 7, as `make demo`'s params) against a detector promoted in a registry of the
test's own, results compared with the video's ground truth frame by frame.

It builds everything it needs (the session's tiny detector, a 60-frame video), so it runs the same in CI,
on a fresh clone and right after `make demo`. It checks the demo's promises that do not depend on how good
a training run happened to be: every frame is published in order with contiguous `seq`, the three printed
messages, `counts` agree with the published boxes, and the ground-truth comparison runs. How often the
counts match the ground truth is a model-quality figure: `python -m benchmarks --only counts` measures it
for the promoted demo detector on the demo video and on unseen scenes, and prints it against the goals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from benchmarks.ground_truth import counts_within
from tests.edge.packages import tiny_packages  # noqa: F401  (session fixture)
from tests.edge.runner_fixtures import registry_template  # noqa: F401  (module fixture)
from tests.edge.runner_setup import MODEL, copy_registry, inference
from tests.edge.test_config import MINIMAL  # the minimal device.yaml, as written

pytestmark = pytest.mark.slow

DEMO_SEED = 7  # params.yaml data.seed: the demo video's generator seed
FRAMES = 60


def test_demo_config_publishes_every_frame_of_a_demo_video(
    mosquitto,
    collectors,
    registry_template,  # noqa: F811
    tmp_path,
):
    from training.datasets.video import synth_video

    # given the minimal config, next to a demo-generator video and a registry whose production
    # alias names a trained detector (only the ports and the model's name differ from device.yaml)
    demo = tmp_path / "demo"
    clip = synth_video(demo / "data/demo", FRAMES, seed=DEMO_SEED)
    registry = copy_registry(registry_template, demo)
    registry.promote("v1")
    (demo / "device.yaml").write_text(
        MINIMAL.replace("127.0.0.1:1883", f"127.0.0.1:{mosquitto.port}")
        .replace("port: 8080", "port: 0")
        .replace("shapes-detector", MODEL)
    )
    collector = collectors(mosquitto.port, ["lensops/#"])
    truth = json.loads((clip.parent / "video_gt.json").read_text())["frames"]
    assert len(truth) == FRAMES, f"the generator wrote {len(truth)} ground-truth frames, not {FRAMES}"
    # when `lensops edge run` plays the video to its end
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lensops.cli",
            "edge",
            "run",
            "--config",
            str(demo / "device.yaml"),
            "--exit-when-done",
            "--print-messages",
            "3",
        ],
        cwd=demo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # then it printed the page's address and three messages the broker delivered back
    assert "page at http://127.0.0.1:" in done.stdout, done.stdout
    printed = [line for line in done.stdout.splitlines() if line.startswith("lensops/cam-01/door/inference ")]
    assert len(printed) == 3 and json.loads(printed[0].split(" ", 1)[1])["seq"] == 0, done.stdout
    # and every frame was published in order, by the promoted version
    assert collector.wait_for(lambda ms: len(inference(ms)) >= FRAMES, 10), "not every frame arrived"
    results = inference(collector.messages)
    assert [r["seq"] for r in results] == list(range(FRAMES)), "seq is not contiguous from 0"
    assert {(r["model"]["name"], r["model"]["version"]) for r in results} == {(MODEL, registry.versions["v1"])}
    # and each message's counts are the published boxes per label
    for r in results:
        published = Counter(p["label"] for p in r["predictions"])
        assert {k: n for k, n in r["counts"].items() if n} == dict(published), f"seq {r['seq']}: {r}"
    # and the comparison with the ground truth runs on every frame (its figure is the benchmark's to judge)
    matching = [counts_within(r["counts"], frame["objects"]) for r, frame in zip(results, truth)]
    assert len(matching) == FRAMES, f"{len(matching)} frames compared, not {FRAMES}"
    print(
        f"tiny test detector: counts match the demo video's ground truth on {sum(matching)} of {FRAMES} frames "
        f"(the promoted demo detector's figure: python -m benchmarks --only counts)"
    )
