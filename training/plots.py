"""Plots of a run, as PNG (MLflow) and CSV (DVC plots)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_curves(history: list[dict], out: Path, primary: str) -> None:
    """history: one dict per epoch with 'epoch', 'train_loss', primary metric and val loss if any."""
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for row in history for k in row})
    with open(out / "curves.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    plt = _pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [r["epoch"] for r in history]
    ax[0].plot(epochs, [r.get("train_loss") for r in history], label="train loss")
    if any("val_loss" in r for r in history):
        ax[0].plot(epochs, [r.get("val_loss", np.nan) for r in history], label="val loss")
    ax[0].set_xlabel("epoch"), ax[0].legend(), ax[0].set_title("loss")
    ax[1].plot(epochs, [r.get(primary) for r in history], color="tab:green")
    ax[1].set_xlabel("epoch"), ax[1].set_title(primary)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=80)
    plt.close(fig)


def write_confusion(matrix: np.ndarray, classes: list[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "confusion.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "predicted"])
        for i, j in zip(*np.nonzero(matrix)):
            writer.writerows([[classes[i], classes[j]]] * int(matrix[i, j]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45), ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted"), ax.set_ylabel("actual"), ax.set_title("confusion (test)")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=80)
    plt.close(fig)


def write_pr_curves(curves: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pr.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "recall", "precision"])
        for name, (rec, prec) in curves.items():
            step = max(1, len(rec) // 200)  # keep the file small
            for r, p in zip(rec[::step], prec[::step]):
                writer.writerow([name, f"{r:.4f}", f"{p:.4f}"])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, (rec, prec) in curves.items():
        if len(rec):
            ax.plot(rec, prec, label=name)
    ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_title("PR curves (test, IoU 0.5)")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.02), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pr.png", dpi=80)
    plt.close(fig)
