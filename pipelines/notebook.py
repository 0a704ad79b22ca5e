"""What the notebooks show of a trained model and of the optimize, register and promote stages: figures
and tables built from the stages' own predictions and reports (nothing here scores or decides)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from edge.messages import Prediction
from pipelines.evaluate import Split
from pipelines.evaluate_stage import predict_split
from training.classification import confusion_matrix
from training.datasets.records import DatasetIndex
from training.plots import _figure, confusion_figure

SHOWN_SCORE = 0.5  # detections drawn on images: at least this score (the metric keeps them from 0.01)


def predictions(model_dir: Path, data: Path, split: str = "val") -> tuple[Split, list[list[Prediction]]]:
    """(split, predictions) of a trained model folder on `data`, as `lensops evaluate` scores them."""
    return predict_split(Path(model_dir), Path(data), split)


def confusion(split: Split, preds: list[list[Prediction]]) -> np.ndarray:
    """Classification: int (C, C) counts, rows the actual class, columns the predicted one."""
    index = {c: i for i, c in enumerate(split.classes)}
    return confusion_matrix(
        np.array([r.label for r in split.records], int),
        np.array([index[top[0].label] for top in preds], int),
        len(split.classes),
    )


def confusion_plot(split: Split, preds: list[list[Prediction]], name: str = "val"):
    return confusion_figure(confusion(split, preds), split.classes, f"confusion ({name})")


def _right(split: Split, record, preds: list[Prediction]) -> bool:
    """Classification: the top-1 label is the class. Detection: per label, the shown boxes (score >=
    SHOWN_SCORE, the count a device would publish) number at least the image's objects that are not
    difficult and at most all of them (difficult ones are optional, as VOC and the counts benchmark take them)."""
    if split.task == "classification":
        return bool(preds) and preds[0].label == split.classes[record.label]
    shown = Counter(p.label for p in preds if p.score >= SHOWN_SCORE)
    required = Counter(split.classes[i] for i, hard in zip(record.labels, record.difficult) if not hard)
    listed = Counter(split.classes[i] for i in record.labels)
    return all(required[label] <= shown[label] <= listed[label] for label in set(shown) | set(listed))


def prediction_grid(
    split: Split, preds: list[list[Prediction]], which: Literal["right", "wrong"] = "wrong", n: int = 8, seed: int = 0
):
    """Up to `n` images the model gets right or wrong (see _right), drawn at random with `seed`:
    the predicted label and score in the caption (classification) or the predicted boxes in cyan over
    the labelled ones in yellow (detection). Returns (figure, how many images were `which`)."""
    from training.notebook import pick, sample_grid

    chosen = [i for i, (r, p) in enumerate(zip(split.records, preds)) if _right(split, r, p) == (which == "right")]
    if not chosen:
        fig = _figure((4, 1))
        fig.text(0.5, 0.5, f"no {which} predictions", ha="center", va="center")
        return fig, 0
    picks = [chosen[k] for k in pick(len(chosen), n, seed)]
    records = [split.records[i] for i in picks]
    index = DatasetIndex(split.task, Path("."), split.classes, {"shown": records})
    if split.task == "classification":
        captions = [
            f"{split.classes[split.records[i].label]} -> {preds[i][0].label} ({preds[i][0].score:.2f})" for i in picks
        ]
        return sample_grid(index, records=records, captions=captions), len(chosen)
    drawn = []
    for i in picks:
        record, shown = split.records[i], [p for p in preds[i] if p.score >= SHOWN_SCORE]
        scale = np.array([record.width, record.height] * 2, np.float32)
        boxes = np.array([p.box for p in shown], np.float32).reshape(-1, 4) * scale
        drawn.append((boxes, [f"{p['label']} {p['score']:.2f}" for p in shown]))
    captions = [f"{split.records[i].path.name}: {len(drawn[k][1])} found" for k, i in enumerate(picks)]
    return sample_grid(index, records=records, captions=captions, predicted=drawn), len(chosen)


def variants_plot(report: dict):
    """Validation metric against median latency (ms, batch 1) of each variant in an optimize report
    (reports/optimize/<model>/variants.json), the MXNet reference included; failed variants hollow."""
    key = "accuracy" if report["task"] == "classification" else "map"
    fig = _figure((6, 3.5))
    ax = fig.subplots()
    ref = report["reference"]
    ax.scatter([ref["latency"]["median_ms"]], [ref["metrics"][key]], color="black", marker="s")
    ax.annotate("mxnet (reference)", (ref["latency"]["median_ms"], ref["metrics"][key]), fontsize=7)
    for vid, row in report["variants"].items():
        latency = row.get("latency", {}).get("median_ms")
        value = row.get("parity", {}).get(key)
        if latency is None or value is None:
            continue
        ax.scatter([latency], [value], facecolors="tab:blue" if row["passed"] else "none", edgecolors="tab:blue")
        ax.annotate(vid, (latency, value), fontsize=7)
    ax.set_xlabel("median latency, batch 1 (ms)"), ax.set_ylabel(f"val {key}")
    ax.set_title(f"{report['model']}: accuracy against latency")
    fig.tight_layout()
    return fig


def results_plot(inference: dict[str, dict[int, dict]]):
    """What a runner published, per source over frame time (s from its first frame's `frame_ts`): the counts per
    label (stacked up to the frame's total) and the latency (ms: total and inference alone).
    `inference`: edge.mqtt.results.ResultCollector.inference()."""
    fig = _figure((9, 2.8 * max(1, len(inference))))
    axes = np.atleast_2d(fig.subplots(max(1, len(inference)), 2))
    for row, (source, by_seq) in zip(axes, sorted(inference.items())):
        payloads = [by_seq[k] for k in sorted(by_seq)]
        stamps = [datetime.fromisoformat(p["frame_ts"].replace("Z", "+00:00")).timestamp() for p in payloads]
        times = [t - stamps[0] for t in stamps]
        labels = sorted({label for p in payloads for label in p["counts"]})
        if labels:
            row[0].stackplot(
                times, [[p["counts"].get(label, 0) for p in payloads] for label in labels], labels=labels, step="post"
            )
            row[0].legend(fontsize=7, loc="upper right")
        row[0].set_title(f"{source}: objects counted"), row[0].set_xlabel("frame time (s)")
        row[1].plot(times, [p["latency_ms"]["total"] for p in payloads], label="total", linewidth=0.8)
        row[1].plot(times, [p["latency_ms"]["inference"] for p in payloads], label="inference", linewidth=0.8)
        row[1].set_title(f"{source}: latency (ms)"), row[1].set_xlabel("frame time (s)"), row[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
