"""The demo end to end: the issue's minimal device.yaml, `lensops edge run` on the demo video against the
promoted demo detector, results compared with the video's ground truth frame by frame.

Needs the demo assets that `make demo` builds (data/demo/video.mp4 + video_gt.json, and either
`shapes-detector@production` in ./mlflow.db or a trained models/detector to package here); skipped
without them. A detector good enough for the counts cannot be trained within a CI test's time.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.ground_truth import all_listed, counts_within
from tests.edge.runner_setup import inference
from tests.edge.test_config import MINIMAL  # the minimal device.yaml, as written

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VIDEO, TRUTH = ROOT / "data/demo/video.mp4", ROOT / "data/demo/video_gt.json"
MODEL = "shapes-detector"
MIN_MATCHING = 0.90



def demo_registry(folder: Path) -> Path:
    """./mlflow.db when it holds the promoted demo detector; else models/detector packaged and promoted here."""
    from edge.registry import MlflowRegistry, RegistryError

    try:
        MlflowRegistry(f"sqlite:///{ROOT / 'mlflow.db'}").resolve(MODEL, "production")
        shutil.copyfile(ROOT / "mlflow.db", folder / "mlflow.db")  # artifact URIs are absolute: a copy works
        return folder / "mlflow.db"
    except RegistryError:
        pass
    if not (ROOT / "models/detector/model.json").is_file() or not (ROOT / "data/prepared/detection").is_dir():
        pytest.skip("no promoted shapes-detector in ./mlflow.db and no models/detector to package: run `make demo`")
    from pipelines.registry import MlflowRegistryWriter
    from tests.pipelines.packaged import package_model

    _, archive, manifest, sha = package_model(ROOT / "models/detector", ROOT / "data/prepared/detection",
                                              folder / "package")
    writer = MlflowRegistryWriter(f"sqlite:///{folder / 'mlflow.db'}")
    writer.set_alias(MODEL, "production", writer.register(archive, manifest, sha, {}).version)
    return folder / "mlflow.db"


@pytest.mark.skipif(not (VIDEO.is_file() and TRUTH.is_file()), reason="demo video missing: run `make demo`")
def test_demo_video_counts_match_the_ground_truth(mosquitto, collectors, tmp_path):
    # given the minimal config, next to the demo data and registry (only the ports differ here)
    demo = tmp_path / "demo"
    (demo / "data/demo").mkdir(parents=True)
    (demo / "data/demo/video.mp4").symlink_to(VIDEO)
    demo_registry(demo)
    (demo / "device.yaml").write_text(MINIMAL.replace("127.0.0.1:1883", f"127.0.0.1:{mosquitto.port}")
                                      .replace("port: 8080", "port: 0"))
    collector = collectors(mosquitto.port, ["lensops/#"])
    truth = json.loads(TRUTH.read_text())["frames"]
    # when `lensops edge run` plays the video to its end
    done = subprocess.run([sys.executable, "-m", "lensops.cli", "edge", "run", "--config", str(demo / "device.yaml"),
                           "--exit-when-done", "--print-messages", "3"], cwd=demo, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # then it printed the page's address and three messages the broker delivered back
    assert "page at http://127.0.0.1:" in done.stdout, done.stdout
    printed = [line for line in done.stdout.splitlines() if line.startswith("lensops/cam-01/door/inference ")]
    assert len(printed) == 3 and json.loads(printed[0].split(" ", 1)[1])["seq"] == 0, done.stdout
    # and every frame was published in order, and the counts match the ground truth on >= 90% of frames
    assert collector.wait_for(lambda ms: len(inference(ms)) >= len(truth), 10)
    results = inference(collector.messages)
    assert [r["seq"] for r in results] == list(range(len(truth)))
    # "match" as in VOC: an object mostly out of the frame (`difficult`, < 50% in view) may be counted or not
    matching = [counts_within(r["counts"], frame["objects"]) for r, frame in zip(results, truth)]
    share = sum(matching) / len(truth)
    strict = sum({k: n for k, n in r["counts"].items() if n} == all_listed(frame["objects"])
                 for r, frame in zip(results, truth)) / len(truth)
    print(f"counts match the ground truth on {share:.1%} of {len(truth)} frames ({strict:.1%} counting every listed "
          f"object, however little of it is in view) (model {results[0]['model']['name']} version "
          f"{results[0]['model']['version']} {results[0]['model']['variant']})")
    assert share >= MIN_MATCHING, f"counts match on {share:.1%} of frames, below {MIN_MATCHING:.0%}"
