"""Plots of a run: figures (shown by notebooks) written as PNG (MLflow) next to their CSV (DVC plots)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common.files import atomic_path


def _figure(figsize: tuple[float, float]):
    """A figure outside pyplot (matplotlib's object API): written to a file without a GUI backend and
    without changing the backend of the process (a notebook's inline plots keep working)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def curves_figure(history: list[dict], primary: str):
    """Loss (train, val) and the primary validation metric per epoch. `history`: one dict per epoch
    with 'epoch', 'train_loss', `primary` and 'val_loss' when measured (RunResult rows)."""
    fig = _figure((9, 3.5))
    ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    ax[0].plot(epochs, [r.get("train_loss") for r in history], marker=".", label="train loss")
    if any("val_loss" in r for r in history):
        ax[0].plot(epochs, [r.get("val_loss", np.nan) for r in history], marker=".", label="val loss")
    ax[0].set_xlabel("epoch"), ax[0].legend(), ax[0].set_title("loss")
    ax[1].plot(epochs, [r.get(primary) for r in history], marker=".", color="tab:green")
    ax[1].set_xlabel("epoch"), ax[1].set_title(primary)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, classes: list[str], title: str = "confusion (test)"):
    """Counts per (actual row, predicted column); `matrix` int (C, C) in `classes` order."""
    fig = _figure((4.5, 4))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45), ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted"), ax.set_ylabel("actual"), ax.set_title(title)
    fig.tight_layout()
    return fig


def pr_figure(curves: dict, title: str = "PR curves (test, IoU 0.5)"):
    """Precision against recall per class; `curves`: {class: (recall (K,), precision (K,))}."""
    fig = _figure((4.5, 4))
    ax = fig.subplots()
    for name, (rec, prec) in curves.items():
        if len(rec):
            ax.plot(rec, prec, label=name)
    ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_title(title)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.02), ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_curves(history: list[dict], out: Path, primary: str) -> None:
    """curves.csv and curves.png (curves_figure) under `out`."""
    keys = sorted({k for row in history for k in row})
    with atomic_path(out / "curves.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    with atomic_path(out / "curves.png") as tmp:
        curves_figure(history, primary).savefig(tmp, dpi=80, format="png")


def write_confusion(matrix: np.ndarray, classes: list[str], out: Path) -> None:
    """confusion.csv (one row per test image: actual, predicted) and confusion.png under `out`."""
    with atomic_path(out / "confusion.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "predicted"])
        for i, j in zip(*np.nonzero(matrix)):
            writer.writerows([[classes[i], classes[j]]] * int(matrix[i, j]))
    with atomic_path(out / "confusion.png") as tmp:
        confusion_figure(matrix, classes).savefig(tmp, dpi=80, format="png")


def write_pr_curves(curves: dict, out: Path) -> None:
    """pr.csv (class, recall, precision; at most ~200 points per class) and pr.png under `out`."""
    with atomic_path(out / "pr.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "recall", "precision"])
        for name, (rec, prec) in curves.items():
            step = max(1, len(rec) // 200)  # keep the file small
            for r, p in zip(rec[::step], prec[::step]):
                writer.writerow([name, f"{r:.4f}", f"{p:.4f}"])
    with atomic_path(out / "pr.png") as tmp:
        pr_figure(curves).savefig(tmp, dpi=80, format="png")
