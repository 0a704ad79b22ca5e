"""Output decoding the device and the pipeline share: thresholds, per-class NMS, and the stream hold-over."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.package.codec import decode_detection, hold_over
from edge.package.manifest import OutputSpec
from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)

LABELS = ["circle", "square"]


def spec(**extra) -> OutputSpec:
    return OutputSpec(type="scores_boxes", names=("scores", "boxes"), score_threshold=0.5, **extra)


def outputs(rows: list[tuple[float, float, list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Anchors as (circle score, square score, box)."""
    scores = np.array([[c, s] for c, s, _ in rows], np.float32)
    boxes = np.array([b for _, _, b in rows], np.float32)
    return scores, boxes


def test_threshold_and_per_class_nms_keep_the_best_box_of_each_object():
    # given two overlapping circle boxes, a square on the same spot, and a weak box elsewhere
    scores, boxes = outputs(
        [
            (0.9, 0.1, [0.1, 0.1, 0.4, 0.4]),
            (0.8, 0.0, [0.12, 0.1, 0.42, 0.4]),
            (0.0, 0.7, [0.1, 0.1, 0.4, 0.4]),
            (0.3, 0.0, [0.6, 0.6, 0.9, 0.9]),
        ]
    )
    # when decoded at the manifest's threshold
    found = decode_detection(scores, boxes, LABELS, spec())
    # then one circle (the better box) and the square remain, best first; the weak box is dropped
    assert [(p["label"], round(p["score"], 2)) for p in found] == [("circle", 0.9), ("square", 0.7)]


def test_hold_over_keeps_a_weak_box_only_where_it_continues_the_last_frame():
    previous = [{"label": "circle", "score": 0.8, "box": [0.1, 0.1, 0.4, 0.4]}]
    candidates = [
        {"label": "circle", "score": 0.3, "box": [0.12, 0.1, 0.42, 0.4]},  # continues the circle
        {"label": "square", "score": 0.3, "box": [0.1, 0.1, 0.4, 0.4]},  # same place, other label
        {"label": "circle", "score": 0.3, "box": [0.6, 0.6, 0.9, 0.9]},  # new and weak
        {"label": "square", "score": 0.6, "box": [0.6, 0.1, 0.9, 0.4]},
    ]  # new and strong
    kept = hold_over(candidates, previous, 0.5)
    assert kept == [candidates[0], candidates[3]]
    assert hold_over(candidates, [], 0.5) == [candidates[3]], "without a previous frame only the threshold counts"


def test_hold_threshold_must_be_below_the_score_threshold():
    assert spec(hold_threshold=0.15).hold_threshold == 0.15
    with pytest.raises(ValidationError, match="hold_threshold 0.5 must be below score_threshold 0.5"):
        spec(hold_threshold=0.5)


def test_hold_threshold_is_for_detection_outputs_and_left_out_of_manifests_without_it(tiny_packages):
    with pytest.raises(ValidationError, match="detection outputs"):
        OutputSpec(type="probabilities", names=("probs",), hold_threshold=0.1)
    classifier = tiny_packages.classifier.manifest
    assert "hold_threshold" not in classifier.to_json(), "older devices refuse manifests with keys they do not know"
    held = tiny_packages.detector.manifest
    held = held.model_copy(update={"output": held.output.model_copy(update={"hold_threshold": 0.1})})
    assert '"hold_threshold": 0.1' in held.to_json()
