"""The one detection scorer (evaluate, the parity gates, promote) and the training loop's metric
follow VOC: objects marked difficult (VOC) or crowd (COCO) are ignored."""

from __future__ import annotations

from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest

from edge.messages import Prediction
from pipelines.evaluate import load_split, score
from training.datasets.formats import VocObject, voc_xml
from training.detection import DetectionTask
from training.loaders import DetectionSamples, make_loader

CLASSES = ["circle", "square"]
SIZE = 100
# per image: (class, box in pixels, difficult); a VOC2007-like share of difficult objects
SCENES = [
    [("circle", (10, 10, 40, 40), False), ("square", (50, 50, 90, 90), True)],
    [("square", (5, 5, 30, 35), False), ("circle", (60, 10, 95, 45), True), ("circle", (20, 60, 50, 95), False)],
    [("circle", (30, 30, 70, 70), True)],
    [("square", (10, 50, 45, 95), False), ("square", (55, 5, 95, 40), False)],
]


def _voc(root: Path) -> Path:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for i, objects in enumerate(SCENES):
        cv2.imwrite(str(root / "JPEGImages" / f"{i}.jpg"), np.full((SIZE, SIZE, 3), 90, np.uint8))
        (root / "Annotations" / f"{i}.xml").write_text(
            voc_xml(
                f"{i}.jpg", SIZE, SIZE, [VocObject(name, box, difficult) for name, box, difficult in objects], "test"
            )
        )
    ids = "".join(f"{i}\n" for i in range(len(SCENES)))
    for split in ("train", "val", "test"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(ids)
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _found(objects) -> list[tuple[str, tuple]]:
    """What a detector that finds every non-difficult object exactly, and nothing else, reports."""
    return [(name, box) for name, box, difficult in objects if not difficult]


def test_a_detector_that_finds_every_non_difficult_object_scores_map_1(tmp_path):
    # given a test split where some objects are marked <difficult>1</difficult>
    split = load_split(_voc(tmp_path / "voc"), "detection", "test")
    assert [r.difficult.tolist() for r in split.records] == [[d for _, _, d in s] for s in SCENES], (
        "the VOC reader carries <difficult> into the records"
    )
    # when the project's scorer scores exact detections of the other objects, score 1.0
    predictions = [
        [Prediction(label=name, score=1.0, box=[v / SIZE for v in box]) for name, box in _found(s)] for s in SCENES
    ]
    metrics = score(split, predictions)
    # then nothing is missed: difficult objects are neither misses nor, when found, false positives
    assert metrics["map"] == pytest.approx(1.0, abs=1e-9), metrics
    found_too = [[Prediction(label=name, score=1.0, box=[v / SIZE for v in box]) for name, box, _ in s] for s in SCENES]
    assert score(split, found_too)["map"] == pytest.approx(1.0, abs=1e-9), (
        "finding a difficult object is not a false positive"
    )


class _ExactDetector:
    """Stands in for the network only: returns, batch by batch, the non-difficult boxes of SCENES."""

    def __init__(self, scale: float):
        self.batches = iter([SCENES])
        self.scale = scale

    def _clear_cached_op(self):
        pass

    def __call__(self, data):
        scenes = next(self.batches)
        n = max(len(s) for s in scenes)
        ids, scores, boxes = (
            np.full((len(scenes), n, 1), -1.0),
            np.full((len(scenes), n, 1), -1.0),
            np.zeros((len(scenes), n, 4)),
        )
        for i, objects in enumerate(scenes):
            for j, (name, box) in enumerate(_found(objects)):
                ids[i, j], scores[i, j], boxes[i, j] = CLASSES.index(name), 1.0, np.array(box) * self.scale
        return mx.nd.array(ids), mx.nd.array(scores), mx.nd.array(boxes)


def test_the_training_loops_validation_map_ignores_difficult_objects(tmp_path):
    # given the same split through the training loop's validation loader (input 64 px)
    split = load_split(_voc(tmp_path / "voc"), "detection", "val")
    samples = DetectionSamples(split.records, 64, train=False, seed=0, max_objects=3)
    loader, _ = make_loader(samples, len(SCENES), shuffle=False, seed=0, num_workers=0, drop_last=False)
    task = DetectionTask(CLASSES, 64)
    # when the validation metric scores exact detections of the non-difficult objects
    metrics, _ = task.evaluate(_ExactDetector(64 / SIZE), loader)
    # then it is 1.0, as the scorer's
    assert metrics["val_map"] == pytest.approx(1.0, abs=1e-9), metrics
    # and difficult objects are marked in label column 5
    _, label = samples[0]
    assert label[:2, 5].tolist() == [0.0, 1.0] and (label[2:] == -1).all(), label
