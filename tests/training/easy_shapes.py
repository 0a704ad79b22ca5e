"""A deliberately easy ImageFolder (big flat shapes on flat backgrounds) for tests that need a
model which learns within seconds, such as fine-tuning. The demo data lives in training.datasets.synth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _draw(img: np.ndarray, name: str, centre: np.ndarray, r: int, colour: tuple) -> None:
    cx, cy = (int(v) for v in centre)
    if name == "circle":
        cv2.circle(img, (cx, cy), r, colour, -1)
    elif name == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    elif name == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    else:  # cross
        t = max(1, r // 3)
        cv2.rectangle(img, (cx - r, cy - t), (cx + r, cy + t), colour, -1)
        cv2.rectangle(img, (cx - t, cy - r), (cx + t, cy + r), colour, -1)


def easy_shapes(root: Path, classes: list[str], per_class: int, seed: int, size: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    counts = {"train": per_class, "val": max(4, per_class // 4), "test": max(4, per_class // 4)}
    for split, n in counts.items():
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.empty((size, size, 3), np.uint8)
                img[:] = rng.integers(0, 256, 3)
                colour = tuple(int(255 - c) for c in img[0, 0])  # always contrasting
                r = int(rng.integers(size // 5, size // 3))
                _draw(img, name, rng.integers(r, size - r, 2), r, colour)
                cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    (root / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
    return root
