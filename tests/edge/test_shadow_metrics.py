"""Shadow agreement figures on hand-computed cases (edge/shadow_metrics.py)."""

from __future__ import annotations

import pytest

from edge.messages import Prediction
from edge.package.codec import box_iou as iou
from edge.shadow_metrics import Figures, agreement, box_f1, box_matches, histogram, sampled, top1_agreement


def cls(*pairs):
    return [Prediction(label=label, score=score) for label, score in pairs]


def box(label, score, x0, y0, x1, y1):
    return Prediction(label=label, score=score, box=[x0, y0, x1, y1])


def test_top1_agreement_compares_the_highest_scoring_labels():
    assert top1_agreement(cls(("cat", 0.7), ("dog", 0.3)), cls(("dog", 0.2), ("cat", 0.8))) == 1.0
    assert top1_agreement(cls(("cat", 0.51), ("dog", 0.49)), cls(("cat", 0.49), ("dog", 0.51))) == 0.0
    assert top1_agreement([], []) == 1.0
    assert top1_agreement(cls(("cat", 0.9)), []) == 0.0


def test_iou_of_simple_boxes():
    assert iou([0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]) == pytest.approx(1.0)
    assert iou([0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5]) == 0.0  # touching, no overlap
    assert iou([0, 0, 0.4, 0.4], [0.2, 0, 0.6, 0.4]) == pytest.approx(0.08 / 0.24)


def test_box_f1_matches_at_iou_one_half():
    champion = [box("car", 0.9, 0.0, 0.0, 0.4, 0.4)]
    # shifted right by s: IoU = (0.4 - s) / (0.4 + s); 0.5 at s = 0.4 / 3
    above = [box("car", 0.8, 0.13, 0.0, 0.53, 0.4)]  # IoU 0.27/0.53 = 0.509
    below = [box("car", 0.8, 0.14, 0.0, 0.54, 0.4)]  # IoU 0.26/0.54 = 0.481
    assert iou(champion[0].box, above[0].box) > 0.5 > iou(champion[0].box, below[0].box)
    assert box_f1(champion, above) == 1.0
    assert box_f1(champion, below) == 0.0


def test_box_f1_class_mismatch_empty_frames_and_counts():
    car = box("car", 0.9, 0.1, 0.1, 0.3, 0.3)
    assert box_f1([car], [box("bus", 0.9, 0.1, 0.1, 0.3, 0.3)]) == 0.0  # same place, other class
    assert box_f1([], []) == 1.0  # neither found anything: agreement
    assert box_f1([car], []) == 0.0
    # champion 2 boxes, candidate 3 (one duplicate and one elsewhere): 1 + 1 matches -> 2*2/5
    person = box("person", 0.8, 0.5, 0.5, 0.9, 0.9)
    candidate = [
        box("car", 0.95, 0.1, 0.1, 0.3, 0.3),
        box("car", 0.6, 0.1, 0.1, 0.31, 0.3),  # duplicate of the same car: the champion's car is taken
        box("person", 0.7, 0.5, 0.5, 0.9, 0.88),
    ]
    assert box_matches([car, person], candidate) == 2
    assert box_f1([car, person], candidate) == pytest.approx(4 / 5)


def test_greedy_matching_takes_candidates_by_score():
    # two champion cars; the high-score candidate overlaps both and takes the better one (VOC order)
    a, b = box("car", 0.9, 0.0, 0.0, 0.4, 0.4), box("car", 0.9, 0.1, 0.0, 0.5, 0.4)
    strong = box("car", 0.9, 0.05, 0.0, 0.45, 0.4)
    weak = box("car", 0.3, 0.0, 0.0, 0.4, 0.4)
    assert box_matches([a, b], [weak, strong]) == 2


def test_agreement_by_task():
    assert agreement("classification", cls(("a", 0.6)), cls(("a", 0.9))) == 1.0
    assert agreement("detection", [], []) == 1.0


def test_sampling_meets_the_rate_exactly():
    for rate in (0.1, 0.25, 1 / 3, 0.5, 0.7, 1.0):
        for n in (10, 100, 1000):
            assert sum(sampled(i, rate) for i in range(n)) == int(n * rate + 1e-9), (rate, n)
    picks = [i for i in range(30) if sampled(i, 0.1)]
    assert picks == [9, 19, 29]  # evenly spread, the same on every run


def test_figures_window_summary():
    figures = Figures()
    assert figures.summary()["agreement"] is None and figures.empty
    figures.add("classification", cls(("a", 0.95)), cls(("a", 0.55)), 2.0, 4.0)
    figures.add("classification", cls(("a", 0.95)), cls(("b", 0.05)), 4.0, 8.0)
    figures.skipped += 1
    summary = figures.summary()
    assert summary["frames"] == 2 and summary["skipped"] == 1 and summary["agreement"] == 0.5
    assert summary["latency_ms"]["champion"]["p50"] == 3.0 and summary["latency_ms"]["candidate"]["p50"] == 6.0
    assert summary["scores"]["champion"] == [0] * 9 + [2]
    assert summary["scores"]["candidate"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert list(histogram([1.0, 0.0])) == [1] + [0] * 8 + [1]
