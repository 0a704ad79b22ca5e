"""Image preprocessing and augmentation. Every random choice comes from an explicit Generator,
so a (seed, epoch, index) triple always produces the same sample, whichever worker builds it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.config import IMAGENET_MEAN, IMAGENET_STD
from training.errors import DatasetError

_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32) * 255.0
_STD = np.array(IMAGENET_STD, dtype=np.float32) * 255.0


def read_bgr(path: Path) -> np.ndarray:
    """Decode an image file to a BGR uint8 array (OpenCV's order); one clear error naming the file otherwise."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise DatasetError(f"{path}: {'not found' if data is None else 'not a readable image'}")
    return image


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (the models' input order); an error naming the file otherwise."""
    return cv2.cvtColor(read_bgr(path), cv2.COLOR_BGR2RGB)


def to_tensor(image: np.ndarray) -> np.ndarray:
    """RGB uint8 HWC -> normalised float32 CHW (ImageNet mean/std); the contract in model.json.

    Per channel on a C-ordered CHW copy: broadcasting the (3,) mean over HWC runs numpy's inner
    loop three elements at a time (the same numbers, ~10x slower)."""
    out = image.transpose(2, 0, 1).astype(np.float32, order="C")
    out -= _MEAN[:, None, None]
    out /= _STD[:, None, None]
    return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """Brightness, contrast and saturation changes, as a camera's auto-exposure would make."""
    img = image.astype(np.float32)
    img = img * rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    # saturation, channel by channel: grey = the mean of the three channels (summed in channel order,
    # as img.mean(axis=2) does, so the same numbers), without numpy's slow length-3 inner loops
    saturation = rng.uniform(1 - strength, 1 + strength)
    grey = (img[:, :, 0] + img[:, :, 1] + img[:, :, 2]) / 3
    out = np.empty(img.shape, np.uint8)
    for c in range(img.shape[2]):
        channel = (img[:, :, c] - grey) * saturation + grey
        out[:, :, c] = np.minimum(np.maximum(channel, 0, out=channel), 255, out=channel)  # np.clip, minus its overhead
    return out


def augment_classification(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Random resized crop (70-100% of the area), flip, 90-degree turns and colour jitter."""
    h, w = image.shape[:2]
    area = rng.uniform(0.7, 1.0) * h * w
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(min(w, round(np.sqrt(area * aspect))))
    ch = int(min(h, round(np.sqrt(area / aspect))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    image = image[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = np.rot90(image, int(rng.integers(0, 4)))
    return colour_jitter(resize(np.ascontiguousarray(image), size), rng)


def augment_detection(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SSD-style: colour jitter, zoom-out (expand), crop keeping box centres, horizontal flip.

    `labels` ((N,) or (N, k): per-object values such as class and difficult) keep their boxes' order
    and are dropped with them by the crop.
    """
    image = colour_jitter(image, rng)
    h, w = image.shape[:2]
    boxes = boxes.astype(np.float32).copy()
    if rng.random() < 0.4:  # expand: the objects get smaller, as far from the camera
        ratio = rng.uniform(1.0, 1.8)
        ew, eh = int(w * ratio), int(h * ratio)
        ox, oy = int(rng.integers(0, ew - w + 1)), int(rng.integers(0, eh - h + 1))
        canvas = np.empty((eh, ew, 3), dtype=np.uint8)
        canvas[:] = _MEAN.astype(np.uint8)
        canvas[oy : oy + h, ox : ox + w] = image
        image, boxes = canvas, boxes + np.array([ox, oy, ox, oy], dtype=np.float32)
        h, w = eh, ew
    if rng.random() < 0.4 and len(boxes):
        for _ in range(10):
            scale = rng.uniform(0.6, 1.0)
            cw, ch = int(w * scale), int(h * rng.uniform(max(0.6, scale * 0.8), min(1.0, scale * 1.25)))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            keep = (centres[:, 0] > x0) & (centres[:, 0] < x0 + cw) & (centres[:, 1] > y0) & (centres[:, 1] < y0 + ch)
            if keep.any():
                image = image[y0 : y0 + ch, x0 : x0 + cw]
                boxes = boxes[keep] - np.array([x0, y0, x0, y0], dtype=np.float32)
                boxes = np.clip(boxes, 0, [cw, ch, cw, ch]).astype(np.float32)
                labels = labels[keep]
                h, w = ch, cw
                break
    if rng.random() < 0.5:
        image = image[:, ::-1]
        boxes = boxes.copy()
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    return np.ascontiguousarray(image), boxes, labels


def scale_boxes(boxes: np.ndarray, from_hw: tuple[int, int], size: int) -> np.ndarray:
    h, w = from_hw
    return (boxes * np.array([size / w, size / h, size / w, size / h], dtype=np.float32)).astype(np.float32)
