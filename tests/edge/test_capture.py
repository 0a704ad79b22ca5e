"""Capture for retraining: policy, bounded disk, crash leftovers, and the training data check reading the folder."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from edge.capture import Capture, CaptureConfig, confidence
from edge.messages import Prediction
from training.datasets.check import check_dataset  # a capture folder is a slice: its classes count once merged
from training.datasets.formats import load_dataset

W, H = 160, 120
DETECTOR_LABELS = ("circle", "square", "triangle")


def image(value: int = 100) -> np.ndarray:
    img = np.full((H, W, 3), value, np.uint8)
    cv2.circle(img, (60, 50), 20, (0, 0, 255), -1)
    return img


def box(label: str, score: float, xyxy=(0.2, 0.2, 0.6, 0.7)) -> Prediction:
    return Prediction(label=label, score=score, box=list(xyxy))


def top(label: str, score: float) -> Prediction:
    return Prediction(label=label, score=score)


def capture(tmp_path, task="detection", policy=None, **bounds) -> Capture:
    policy = policy or {"below_confidence": 0.6}
    bounds = bounds or {"max_files": 100}
    return Capture(CaptureConfig(dir=tmp_path / "captures", task=task, policy=policy, **bounds))


def on_disk(root, pattern: str) -> list:
    return sorted(p for p in root.rglob(pattern) if p.is_file())


# -- policy --------------------------------------------------------------------------------------


def test_confidence_is_top_score_or_weakest_box():
    assert confidence([box("circle", 0.9), box("square", 0.4)], "detection") == 0.4
    assert confidence([top("cat", 0.7), top("dog", 0.2)], "classification") == 0.7
    assert confidence([], "detection") is None


def test_below_confidence_picks_unsure_frames_only(tmp_path):
    cap = capture(tmp_path, policy={"below_confidence": 0.6})
    assert cap.wants([box("circle", 0.95), box("square", 0.55)]) == "below_confidence"
    assert cap.wants([box("circle", 0.95), box("square", 0.65)]) is None
    assert cap.wants([]) is None, "a frame without detections is not 'unsure'"
    assert cap.offer(image(), [box("circle", 0.9)], "door", DETECTOR_LABELS) is None
    saved = cap.offer(image(), [box("circle", 0.5)], "door", DETECTOR_LABELS)
    assert saved is not None and saved.is_file() and cap.stats()["captures"] == 1


def test_random_rate_keeps_about_that_fraction(tmp_path):
    cap = Capture(
        CaptureConfig(dir=tmp_path, task="detection", policy={"random_rate": 0.1}, max_files=10), rng=random.Random(7)
    )
    kept = sum(cap.wants([box("circle", 0.99)]) == "random" for _ in range(4000))
    assert 320 <= kept <= 480, f"{kept} of 4000 kept at rate 0.1"


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"policy": {}}, "below_confidence and/or random_rate"),
        ({"policy": {"random_rate": 1.5}}, "random_rate"),
        ({"policy": {"random_rate": 0.1}, "max_files": None}, "max_files and/or max_bytes"),
        ({"policy": {"random_rate": 0.1}, "keep": "all"}, "keep"),
        ({"policy": {"random_rate": 0.1}, "task": "segmentation"}, "task"),
    ],
)
def test_bad_config_names_the_field(tmp_path, fields, named):
    config = {"dir": str(tmp_path), "task": "detection", "max_files": 5, **fields}
    with pytest.raises(ValueError, match=named):
        CaptureConfig.model_validate({k: v for k, v in config.items() if v is not None})


# -- the layout the training data check accepts --------------------------------------------------


def test_detection_captures_are_a_voc_set_the_data_check_accepts(tmp_path):
    cap = capture(tmp_path, policy={"random_rate": 1.0})
    predictions = [box("circle", 0.9, (0.25, 0.2, 0.5, 0.6)), box("square", 0.55, (0.5, 0.5, 1.0, 1.0))]
    for i in range(6):
        cap.offer(image(40 * i), predictions if i else [], f"cam-{i % 2}", DETECTOR_LABELS, {"version": "7"})
    root = cap.root
    assert (root / "labels.txt").read_text().split() == list(DETECTOR_LABELS)
    index, report = check_dataset(load_dataset(root, "detection", "auto"), policy="fail", every_class_trained=False)
    assert report.ok and report.split_sizes["train"] == 4 and report.split_sizes["val"] == 2, report.summary()
    # the predicted boxes come back in pixels of the original frame
    record = next(r for r in index.split("train") + index.split("val") if len(r.boxes))
    assert (record.width, record.height) == (W, H)
    np.testing.assert_allclose(record.boxes, [[40, 24, 80, 72], [80, 60, 160, 120]], atol=1)
    assert [index.classes[i] for i in record.labels] == ["circle", "square"]
    assert len(on_disk(root, "*.json")) == 6 and not on_disk(root, ".*.tmp")


def test_classification_captures_are_an_image_folder_the_data_check_accepts(tmp_path):
    cap = capture(tmp_path, task="classification", policy={"below_confidence": 0.8})
    labels = ("cat", "dog", "bird")
    for i, (label, score) in enumerate([("cat", 0.6), ("dog", 0.7), ("dog", 0.9), ("bird", 0.5), ("cat", 0.3)]):
        cap.offer(image(30 * i), [top(label, score), top("dog", 0.05)], "door", labels)
    index, report = check_dataset(
        load_dataset(cap.root, "classification", "imagefolder"), policy="fail", every_class_trained=False
    )
    assert report.ok and sum(report.split_sizes.values()) == 4, report.summary()
    assert index.classes == ["cat", "dog", "bird"], "labels.txt keeps the model's class order"
    assert [p.parent.name for p in on_disk(cap.root, "*.jpg")].count("cat") == 2


def test_a_label_that_cannot_be_a_folder_is_not_saved(tmp_path):
    cap = capture(tmp_path, task="classification", policy={"random_rate": 1.0})
    assert cap.offer(image(), [top("../up", 0.4)], "door", ()) is None
    assert not on_disk(cap.root, "*.jpg")


# -- bounded disk and crashes ---------------------------------------------------------------------


def test_oldest_captures_go_beyond_max_files(tmp_path):
    cap = capture(tmp_path, policy={"random_rate": 1.0}, max_files=3)
    saved = [cap.offer(image(20 * i), [box("circle", 0.9)], "door", DETECTOR_LABELS) for i in range(10)]
    kept = on_disk(cap.root, "*.jpg")
    # the oldest go first, except the last val capture (kept so that the set stays checkable)
    assert len(kept) == 3 and set(saved[-2:]) <= set(kept) and saved[0] not in kept, (saved, kept)
    listed = {
        line
        for split in ("train", "val")
        for line in (cap.root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    }
    assert listed == {p.stem for p in kept}, "split lists name exactly the images on disk"
    assert len(on_disk(cap.root, "*.xml")) == len(on_disk(cap.root, "*.json")) == 3
    assert cap.stats()["deleted"] == 7
    check_dataset(load_dataset(cap.root, "detection"), policy="fail", every_class_trained=False)  # still train and val


def test_total_size_stays_within_max_bytes(tmp_path):
    rng = np.random.default_rng(0)
    cap = capture(tmp_path, policy={"random_rate": 1.0}, max_bytes=120_000)
    for _ in range(20):  # noisy frames: ~20-40 kB each
        cap.offer(rng.integers(0, 255, (H, W, 3), np.uint8), [box("circle", 0.9)], "door", DETECTOR_LABELS)
    files = on_disk(cap.root, "*.jpg") + on_disk(cap.root, "*.xml") + on_disk(cap.root, "*.json")
    total = sum(p.stat().st_size for p in files)
    assert total <= 120_000 and cap.stats()["bytes"] == total, (total, cap.stats())
    assert 2 <= len(on_disk(cap.root, "*.jpg")) < 20


def test_restart_removes_half_written_captures_and_keeps_the_rest(tmp_path):
    cap = capture(tmp_path, policy={"random_rate": 1.0}, max_files=4)
    for i in range(3):
        cap.offer(image(50 * i), [box("square", 0.8)], "door", DETECTOR_LABELS)
    # a crash: a temp file, and an image whose sidecar was never written
    (cap.root / "JPEGImages" / ".20260101T000000000000Z-door-000009.jpg.tmp").write_bytes(b"\xff\xd8half")
    orphan = cap.root / "JPEGImages" / "20260101T000000000000Z-door-000009.jpg"
    orphan.write_bytes(cv2.imencode(".jpg", image())[1].tobytes())
    restarted = capture(tmp_path, policy={"random_rate": 1.0}, max_files=4)
    assert not orphan.exists() and not on_disk(cap.root, ".*.tmp")
    assert restarted.stats()["captures"] == 3
    for i in range(3):
        restarted.offer(image(), [box("square", 0.8)], "door", DETECTOR_LABELS)
    assert len(on_disk(cap.root, "*.jpg")) == 4, "the bound counts captures from before the restart"
    check_dataset(load_dataset(cap.root, "detection"), policy="fail", every_class_trained=False)
