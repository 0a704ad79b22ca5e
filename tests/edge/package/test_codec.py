"""Output decoding the device and the pipeline share: thresholds, per-class NMS, and the stream hold-over."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.messages import Prediction
from edge.package.codec import counts, decode_classification, decode_detection, hold_over
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
    assert [(p.label, round(p.score, 2)) for p in found] == [("circle", 0.9), ("square", 0.7)]
    assert all(isinstance(p, Prediction) for p in found) and counts(found, "detection") == {"circle": 1, "square": 1}


def test_kept_boxes_are_clipped_to_the_frame_as_python_floats():
    # given boxes reaching outside [0, 1] (anchors at the border) and a score rounded above 1 in float32
    scores, boxes = outputs([(1.0000001, 0.0, [-0.02, 0.1, 0.5, 1.03]), (0.0, 0.8, [0.6, -0.1, 1.2, 0.4])])
    # when decoded
    found = decode_detection(scores, boxes, LABELS, spec())
    # then each kept box has the values of the former per-box np.minimum(np.maximum(box, 0), 1) + float()
    for p, row in zip(found, (boxes[0], boxes[1])):
        assert p.box == [float(v) for v in np.minimum(np.maximum(row, 0.0), 1.0)]
        assert all(type(v) is float for v in p.box) and type(p.score) is float
    assert [p.score for p in found] == [1.0, float(np.float32(0.8))]


def test_classification_predictions_have_no_box_on_the_wire():
    found = decode_classification(np.array([0.1, 0.7, 0.2], np.float32), ["a", "b", "c"], top_k=2)
    assert [p.label for p in found] == ["b", "c"] and all(p.box is None for p in found)
    assert found[0].to_dict() == {"label": "b", "score": float(np.float32(0.7))}
    assert counts(found, "classification") == {"b": 1}


def test_hold_over_keeps_a_weak_box_only_where_it_continues_the_last_frame():
    previous = [Prediction(label="circle", score=0.8, box=[0.1, 0.1, 0.4, 0.4])]
    candidates = [
        Prediction(label="circle", score=0.3, box=[0.12, 0.1, 0.42, 0.4]),  # continues the circle
        Prediction(label="square", score=0.3, box=[0.1, 0.1, 0.4, 0.4]),  # same place, other label
        Prediction(label="circle", score=0.3, box=[0.6, 0.6, 0.9, 0.9]),  # new and weak
        Prediction(label="square", score=0.6, box=[0.6, 0.1, 0.9, 0.4]),
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
