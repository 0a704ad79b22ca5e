"""The demo video: every frame decodes, the ground truth matches it, same seed gives the same files."""

from __future__ import annotations

import json

import cv2

from tests.training.datasets.test_synth import _files
from training.datasets.synth import CLASSES
from training.datasets.video import VIDEO_GT_SCHEMA, synth_video


def test_video_decodes_with_every_frame_and_matching_ground_truth(tmp_path):
    # given
    out = tmp_path / "video"
    # when
    video = synth_video(out, n_frames=24, seed=2)
    # then
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert video == out / "video.mp4" and len(frames) == 24, f"decoded {len(frames)} frames of 24"
    assert frames[0].shape == (240, 320, 3), f"frame shape {frames[0].shape}"
    gt = json.loads((out / "video_gt.json").read_text())
    assert gt["schema"] == VIDEO_GT_SCHEMA and gt["classes"] == CLASSES, "gt header"
    assert (gt["width"], gt["height"], gt["fps"]) == (320, 240, 15), "gt size and fps"
    assert [f["index"] for f in gt["frames"]] == list(range(24)), "one gt entry per frame, in order"
    seen = 0
    for entry in gt["frames"]:
        counts: dict[str, int] = {}
        for obj in entry["objects"]:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, f"frame {entry['index']}: box {obj['box']} not normalized"
            assert 0.3 <= obj["visible"] <= 1 and obj["difficult"] == (obj["visible"] < 0.5), (
                f"frame {entry['index']}: {obj}"
            )
            if not obj["difficult"]:  # mostly out of view: optional, not counted
                counts[obj["label"]] = counts.get(obj["label"], 0) + 1
        assert entry["counts"] == counts, f"frame {entry['index']}: counts {entry['counts']} != objects {counts}"
        seen += len(entry["objects"])
    assert seen >= 24, "at least one object per frame on average"


def test_video_same_seed_gives_same_files(tmp_path):
    # given / when
    synth_video(tmp_path / "a", n_frames=8, seed=3)
    synth_video(tmp_path / "b", n_frames=8, seed=3)
    # then
    assert _files(tmp_path / "a") == _files(tmp_path / "b"), "same seed must write the same video and gt"
