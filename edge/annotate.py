"""Predictions drawn onto a copy of a frame: boxes with label and score, or the top class."""

from __future__ import annotations

import zlib
from typing import Optional

import cv2
import numpy as np

from edge.messages import Prediction

# Saturated BGR colours that stay distinct from each other and from most scenes.
PALETTE = (
    (0, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
    (0, 128, 255),
    (255, 255, 0),
    (128, 0, 255),
    (0, 0, 255),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_colour(label: str) -> tuple[int, int, int]:
    """The BGR colour of a label; the same on every device and every run."""
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def _scale(image: np.ndarray) -> float:
    return max(image.shape[0], image.shape[1]) / 640


def _text(image: np.ndarray, text: str, origin: tuple[int, int], colour, scale: float) -> None:
    """Text on a filled box of `colour`, black or white letters for contrast, kept inside the image."""
    thickness = max(1, round(scale * 1.5))
    (w, h), base = cv2.getTextSize(text, FONT, scale * 0.5, thickness)
    x = min(max(origin[0], 0), max(image.shape[1] - w - 4, 0))
    y = min(max(origin[1], h + base + 4), image.shape[0])
    cv2.rectangle(image, (x, y - h - base - 4), (x + w + 4, y), colour, cv2.FILLED)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 2, y - base - 2), FONT, scale * 0.5, ink, thickness, cv2.LINE_AA)


def annotate(image: np.ndarray, predictions: list[Prediction], model_info: Optional[dict] = None) -> np.ndarray:
    """A copy of `image` (BGR) with detection boxes (normalized [x0, y0, x1, y1]) or the top class drawn on it."""
    out = image.copy()
    height, width = out.shape[:2]
    scale = max(_scale(out), 0.5)
    thickness = max(2, round(2 * scale))
    boxes = [p for p in predictions if p.box is not None]
    for p in sorted(boxes, key=lambda p: p.score):  # best drawn last, on top
        x0, y0, x1, y1 = p.box
        top_left = (round(x0 * width), round(y0 * height))
        bottom_right = (round(x1 * width) - 1, round(y1 * height) - 1)
        colour = label_colour(p.label)
        cv2.rectangle(out, top_left, bottom_right, colour, thickness)
        _text(out, f"{p.label} {p.score:.2f}", (top_left[0], top_left[1]), colour, scale)
    if predictions and not boxes:  # classification: the top class in the corner
        top = max(predictions, key=lambda p: p.score)
        _text(out, f"{top.label} {top.score:.2f}", (0, 0), label_colour(top.label), scale * 1.5)
    if model_info:
        name = f"{model_info.get('name', '?')} v{model_info.get('version', '?')} {model_info.get('variant', '')}"
        _text(out, name.strip(), (0, height), (40, 40, 40), scale)
    return out
