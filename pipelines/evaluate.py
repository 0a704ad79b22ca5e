"""Score a model (any runtime, through edge.package.codec) on a split of a data set.

The same code scores the MXNet reference, every optimized variant, and champion vs challenger
at promotion, so their numbers are comparable by construction.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

import cv2
import numpy as np

from common.errors import UserError
from edge.messages import Prediction
from edge.package.codec import decode, preprocess
from edge.package.manifest import InputSpec, OutputSpec
from training.datasets.formats import load_dataset

Run = Callable[[np.ndarray], List[np.ndarray]]  # typing.List: evaluated at import, Python 3.8 too
EVAL_SCORE_THRESHOLD = 0.01  # detections kept for mAP (the device threshold is higher)


@dataclass
class Split:
    task: str
    classes: list[str]
    records: list

    def images(self, limit: int | None = None) -> list[np.ndarray]:
        return [_read(r.path) for r in self.records[:limit]]

    def sample(self, n: int, seed: int = 0) -> list[np.ndarray]:
        """`n` images drawn evenly at random (readers list records class by class, so the first n
        would often be one class: a skewed int8 calibration set and one-class golden samples)."""
        order = np.random.default_rng(seed).permutation(len(self.records))[:n]
        return [_read(self.records[i].path) for i in sorted(order)]


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: cannot read image")
    return image


def load_split(data: Path, task: str, split: str) -> Split:
    index = load_dataset(Path(data), task)
    records = index.split(split)
    if not records:
        raise UserError(f"{data}: split '{split}' is empty or missing")
    return Split(task, index.classes, records)


def predict(
    run: Run,
    split: Split,
    input_spec: InputSpec,
    output_spec: OutputSpec,
    batch_size: int = 16,
    threshold: float = EVAL_SCORE_THRESHOLD,
) -> list[list[Prediction]]:
    out: list[list[Prediction]] = []
    for start in range(0, len(split.records), batch_size):
        frames = [_read(r.path) for r in split.records[start : start + batch_size]]
        outputs = run(preprocess(frames, input_spec))
        out.extend(decode(outputs, split.classes, output_spec, threshold))
    return out


def score(split: Split, predictions: list[list[Prediction]]) -> dict[str, float]:
    """accuracy (classification) or VOC07 mAP@0.5 + per-class AP (detection).

    Difficult objects (VOC difficult, COCO crowd: DetectionRecord.difficult) are ignored, as the
    VOC devkit does: finding one is not a true positive, missing one is not a miss.
    """
    if split.task == "classification":
        hits = [bool(p) and p[0].label == split.classes[r.label] for r, p in zip(split.records, predictions)]
        return {"accuracy": float(np.mean(hits))}
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric

    metric = VOC07MApMetric(iou_thresh=0.5, class_names=split.classes)
    index = {c: i for i, c in enumerate(split.classes)}
    for record, preds in zip(split.records, predictions):
        scale = np.array([record.width, record.height] * 2, np.float32)
        boxes = np.array([p.box for p in preds], np.float32).reshape(-1, 4) * scale
        ids = np.array([index[p.label] for p in preds], np.float32).reshape(-1, 1)
        scores = np.array([p.score for p in preds], np.float32).reshape(-1, 1)
        metric.update(
            boxes[None],
            ids[None],
            scores[None],
            record.boxes[None].astype(np.float32),
            record.labels[None, :, None].astype(np.float32),
            record.difficult[None, :, None].astype(np.float32),
        )
    names, values = metric.get()
    result = {"map": float(values[-1])}
    result.update({f"ap_{n}": float(v) for n, v in zip(names[:-1], values[:-1])})
    return result


def top1_agreement(reference: list[list[Prediction]], other: list[list[Prediction]]) -> float:
    same = [bool(a) and bool(b) and a[0].label == b[0].label for a, b in zip(reference, other)]
    return float(np.mean(same))


def latency(run: Run, batch: np.ndarray, warmup: int = 5, runs: int = 30) -> dict[str, float]:
    """Median and p90 wall time of `run(batch)` in ms, after warm-up."""
    for _ in range(warmup):
        run(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 4),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 4),
        "runs": runs,
    }
