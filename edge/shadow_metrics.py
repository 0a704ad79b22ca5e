"""How much a candidate model agrees with the champion on one frame, and the figures kept over many frames.

Per frame (`agreement`):

- classification: top-1 agreement, 1.0 when both models' highest-scoring label is the same, else 0.0
  (0.0 too when only one of them predicted anything; 1.0 when neither did);
- detection: matched-box F1 at IoU 0.5. Boxes are matched the PASCAL VOC way (Everingham et al., "The PASCAL
  Visual Object Classes (VOC) Challenge", IJCV 88(2), 2010, section 4.2): the candidate's boxes, highest score
  first, each take the unmatched champion box of the same label with the highest IoU, if that IoU is >= 0.5;
  F1 = 2 * matches / (n_champion + n_candidate). The champion stands in for the ground truth. A frame where
  neither model found a box counts as full agreement (1.0): both said "nothing here", which is what a static
  camera says most of the time; leaving such frames out would make agreement swing with scene activity.

`Figures` accumulates the per-frame agreement, both models' latencies and score histograms.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Deque, Dict, Optional, Sequence

import numpy as np

from edge.messages import SCORE_BINS, Prediction
from edge.package.codec import box_iou

IOU_THRESHOLD = 0.5
LATENCY_SAMPLES = 10_000  # latencies kept for the percentiles of a long-running total (the newest)


def sampled(n: int, rate: float) -> bool:
    """Whether the n-th frame (0-based) of a source is sampled: exactly floor(N * rate) of the first N frames
    are, spread evenly (deterministic, so `rate` is met on average over any run of frames)."""
    return math.floor((n + 1) * rate + 1e-9) > math.floor(n * rate + 1e-9)


def top1(predictions: Sequence[Prediction]) -> Optional[Prediction]:
    return max(predictions, key=lambda p: p.score) if predictions else None


def top1_agreement(champion: Sequence[Prediction], candidate: Sequence[Prediction]) -> float:
    """1.0 when both top-1 labels are the same (or neither model predicted anything), else 0.0."""
    a, b = top1(champion), top1(candidate)
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    return 1.0 if a.label == b.label else 0.0


def box_matches(
    champion: Sequence[Prediction], candidate: Sequence[Prediction], threshold: float = IOU_THRESHOLD
) -> int:
    """Greedy VOC matching: candidate boxes by descending score, each to the free same-label champion box of
    highest IoU when that IoU >= `threshold`. Returns the number of matched pairs."""
    free = list(range(len(champion)))
    matches = 0
    for box in sorted(candidate, key=lambda p: -p.score):
        best, best_iou = None, threshold
        for i in free:
            if champion[i].label != box.label:
                continue
            overlap = box_iou(champion[i].box, box.box)
            if overlap >= best_iou:
                best, best_iou = i, overlap
        if best is not None:
            free.remove(best)
            matches += 1
    return matches


def box_f1(champion: Sequence[Prediction], candidate: Sequence[Prediction], threshold: float = IOU_THRESHOLD) -> float:
    """2 * matches / (n_champion + n_candidate); 1.0 when neither model found a box."""
    total = len(champion) + len(candidate)
    if total == 0:
        return 1.0
    return 2.0 * box_matches(champion, candidate, threshold) / total


def agreement(task: str, champion: Sequence[Prediction], candidate: Sequence[Prediction]) -> float:
    """The per-frame agreement for `task` (classification | detection), in [0, 1]."""
    if task == "detection":
        return box_f1(champion, candidate)
    return top1_agreement(champion, candidate)


def scores_of(task: str, predictions: Sequence[Prediction]) -> list:
    """The scores a histogram counts: a detector's every box, a classifier's top-1."""
    if task == "detection":
        return [p.score for p in predictions]
    best = top1(predictions)
    return [best.score] if best is not None else []


def histogram(scores: Sequence[float]) -> np.ndarray:
    """Counts in SCORE_BINS equal bins over [0, 1] (1.0 falls in the last)."""
    return np.histogram(np.clip(np.asarray(scores, dtype=float), 0, 1), bins=SCORE_BINS, range=(0.0, 1.0))[0]


def percentiles(values: Sequence[float]) -> Optional[Dict[str, float]]:
    if not values:
        return None
    p50, p99 = np.percentile(np.asarray(values, dtype=float), [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


class Figures:
    """Agreement, latency and score figures over a span of frames (not thread-safe: one shadow thread owns it)."""

    def __init__(self) -> None:
        self.frames = self.skipped = self.failed = 0
        self._agreement = 0.0
        self._latency: Dict[str, Deque[float]] = {
            side: deque(maxlen=LATENCY_SAMPLES) for side in ("champion", "candidate")
        }
        self._scores = {side: np.zeros(SCORE_BINS, dtype=np.int64) for side in ("champion", "candidate")}

    @property
    def empty(self) -> bool:
        return not (self.frames or self.skipped or self.failed)

    def add(
        self,
        task: str,
        champion: Sequence[Prediction],
        candidate: Sequence[Prediction],
        champion_ms: float,
        candidate_ms: float,
    ) -> float:
        """Count one compared frame; returns its agreement."""
        value = agreement(task, champion, candidate)
        self.frames += 1
        self._agreement += value
        self._latency["champion"].append(champion_ms)
        self._latency["candidate"].append(candidate_ms)
        self._scores["champion"] += histogram(scores_of(task, champion))
        self._scores["candidate"] += histogram(scores_of(task, candidate))
        return value

    @property
    def agreement(self) -> Optional[float]:
        return round(self._agreement / self.frames, 6) if self.frames else None

    def summary(self) -> dict:
        """The `lensops.shadow/1` figures (window or total) as a dict."""
        return {
            "frames": self.frames,
            "skipped": self.skipped,
            "failed": self.failed,
            "agreement": self.agreement,
            "latency_ms": {side: percentiles(list(values)) for side, values in self._latency.items()},
            "scores": {side: [int(c) for c in counts] for side, counts in self._scores.items()},
        }
