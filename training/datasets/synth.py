"""Deterministic synthetic shapes data for the demo: classification and detection (the video: datasets.video).

Five classes (CLASSES) of filled shapes, each in a random colour so that shape, not colour,
is what a model must learn (a linear model on colour statistics or raw pixels stays near
chance). The colour is drawn until it differs from the background it covers in both hue
and brightness, so the outline is always visible. Every object is randomly rotated and
mildly stretched (width to height 0.85..1.17; distractor ellipses are flatter than 0.55).

Object size: an object's box covers about 8% to 50% of the frame area (uniform in
classification; log-uniform in detection, where the upper bound shrinks to 90%/k when k
objects share a frame) and may be cut by the frame edge (up to 10% of the box in
classification; in detection each object draws its own limit up to 60%, and one with less than
LABEL_MIN_VISIBLE of its area in view is drawn but not labelled; one with less than REQUIRED_VISIBLE
of its area visible, cut or covered, is labelled `difficult`, as VOC and the video's ground truth mark it).

Difficulty: varied, textured backgrounds (gradients, low-frequency noise, soft blobs,
stripes, checkerboards, flat colours, mixes of two); distractors that are not classes
(lines, eccentric ellipses, arcs, small many-vertex polygons); partial occlusion of some
objects by a distractor (up to ~30% of their box); then per image a lighting change
(illumination ramp, brightness, contrast, gamma), occasional blur and gaussian noise.

Frames: classification images are square; detection stills are `size` pixels high and square, 4:3
or 16:9 (CAMERA_ASPECTS), as cameras frame a scene, so a detector learns the shapes as its square
input sees them squeezed. Their background texture keeps 50% to 100% of its contrast (drawn per
image; classification and the video keep 50%), so that strong patterns are seen as background
(docs/training-from-scratch.md, "The detector on camera frames", has the measurements).

Boxes are the tight box of the drawn shape, clipped to the frame, in continuous pixel
coordinates [x_min, y_min, x_max, y_max] (a box around pixel columns 3..9 is [3, .., 10, ..]);
occlusion does not shrink a box (the VOC convention). In VOC xml they are written 1-based
inclusive (xmin = x_min + 1, xmax = x_max), as formats.voc_xml writes and formats.read_voc reads them.
Detection objects overlap each other by at most 25% of the smaller box.

Same seed, same bytes: every image draws from its own generator seeded by (seed, image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from common.files import atomic_dir
from training.datasets.drawing import (
    CLASSES,
    Camera,
    Fill,
    contrasting_colour,
    draw_background,
    draw_clutter,
    occlude,
    paint,
    pose,
    shape_mask,
    tight_box,
    unit_shape,
)
from training.datasets.formats import VocObject, voc_xml
from training.datasets.records import SPLITS, DatasetIndex, DetectionRecord, ImageRecord
from training.errors import ConfigError

SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
AREA_RANGE = (0.08, 0.50)  # object box area / frame area
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]
CAMERA_ASPECTS = (1.0, 4 / 3, 16 / 9)  # frame width / height of the detection stills: square, 4:3, 16:9
EMPTY = "empty"  # synth_classification's class without a shape: background and distractors only
LABEL_MIN_VISIBLE = 0.4  # detection stills label an object with at least this share of its area in the frame ...
# ... and mark it `difficult` (VOC's flag: the metric ignores it, training uses it) when less than this share
# of its area is visible in the image, out of the frame or covered by what is drawn over it: the video's
# ground truth applies the same rule (datasets.video.VIDEO_REQUIRED_VISIBLE)
REQUIRED_VISIBLE = 0.5
_STREAM_CLS, _STREAM_DET, _STREAM_SIL = 1, 2, 4  # independent generators (the video's is 3: datasets.video)


def _io_min(a: tuple, b: tuple) -> float:
    """Intersection over the smaller of two boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1e-6)


def _place(
    rng: np.random.Generator,
    w: int,
    h: int,
    labels: list[int],
    max_cut: float,
    log_area: bool = True,
    spread_cut: bool = False,
) -> list[tuple[int, np.ndarray]]:
    """Sizes, poses and positions for objects that overlap each other by at most 25% of the smaller box.

    An object's box may lie outside the frame by up to `max_cut` of its width (height); with
    `spread_cut` each object draws its own limit in 0..max_cut, so lightly cut objects are common
    and heavily cut ones rarer, as in a camera's view of things coming and going.
    """
    area_max = min(AREA_RANGE[1], 0.9 / max(len(labels), 1))
    placed: list[tuple[int, np.ndarray]] = []
    boxes: list[tuple] = []
    for label in labels:
        for attempt in range(30):
            if log_area:
                frac = np.exp(rng.uniform(np.log(AREA_RANGE[0]), np.log(area_max)))
            else:
                frac = rng.uniform(AREA_RANGE[0], area_max)
            frac *= 0.8 ** (attempt // 10)
            pts = pose(
                unit_shape(label, rng), frac * w * h, np.exp(rng.uniform(-0.08, 0.08)), rng.uniform(0, 2 * np.pi)
            )
            half = pts.max(0)
            cut = rng.uniform(0, max_cut) if spread_cut else max_cut
            lo, hi = half * (1 - 2 * cut), (w, h) - half * (1 - 2 * cut)
            centre = np.where(lo < hi, rng.uniform(lo, np.maximum(lo, hi)), (w / 2, h / 2))
            box = (*np.maximum(centre - half, 0), *np.minimum(centre + half, (w, h)))
            if all(_io_min(box, other) <= 0.25 for other in boxes):
                placed.append((label, pts + centre))
                boxes.append(box)
                break
    return placed


def polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def _visible(mask: np.ndarray, pts: np.ndarray) -> float:
    """Share of a polygon's area inside the frame, from its in-frame mask."""
    return float(min(mask.sum() / 255.0 / max(polygon_area(pts), 1e-6), 1.0))


@dataclass(frozen=True)
class _SceneStyle:
    """How busy a still image is."""

    max_cut: float  # fraction of an object's box that may lie outside the frame
    clutter: tuple[int, int]  # distractors drawn, from..to (exclusive)
    occlude_p: float  # chance that an object is partly covered
    log_area: bool  # object area log-uniform (many small objects) or uniform
    # background texture scaled about its mean colour by a factor drawn per image from this range (1 = as drawn)
    background_contrast: tuple[float, float] = (1.0, 1.0)
    shaded_fills: bool = True  # objects may be shaded/textured; False paints them flat
    spread_cut: bool = False  # each object draws its own cut limit in 0..max_cut
    min_visible: float = 0.0  # an object with less of its area in the frame is drawn but not labelled
    required_visible: float = 0.0  # a labelled object with less of its area visible is `difficult`


_CLASSIFICATION_STYLE = _SceneStyle(
    max_cut=0.1, clutter=(0, 2), occlude_p=0.15, log_area=False, background_contrast=(0.5, 0.5), shaded_fills=False
)
# Detection objects may be up to 60% out of the frame; one less than LABEL_MIN_VISIBLE in view is
# drawn but not labelled, so a detector learns where "in view" ends; one less than REQUIRED_VISIBLE
# visible (cut or covered) is labelled `difficult`, as the video's ground truth marks it.
DETECTION_STYLE = _SceneStyle(
    max_cut=0.6,
    clutter=(1, 4),
    occlude_p=0.25,
    log_area=True,
    background_contrast=(0.5, 1.0),
    shaded_fills=False,
    spread_cut=True,
    min_visible=LABEL_MIN_VISIBLE,
    required_visible=REQUIRED_VISIBLE,
)


def _render_still(
    rng: np.random.Generator, w: int, h: int, labels: list[int], style: _SceneStyle
) -> tuple[np.ndarray, list[int], list[tuple[int, int, int, int]], list[bool]]:
    """One image with the given objects; returns the image, and the labels, tight boxes and `difficult`
    flags of the objects labelled. An object's visible share counts its pixels that nothing drawn later
    (another object, an occluding blob) covers, over its whole area, as datasets.video counts it."""
    bg = draw_background(rng, h, w)
    low, high = style.background_contrast
    contrast = low if low == high else rng.uniform(low, high)
    if contrast != 1.0:
        mean = bg.mean((0, 1), keepdims=True)
        bg = mean + (bg - mean) * contrast
    img = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    draw_clutter(img, rng, int(rng.integers(*style.clutter)))
    drawn_labels, boxes, areas, owners = [], [], [], []
    owner = np.full((h, w), -1, np.int32)  # which object each pixel shows (-1: none)
    for label, pts in _place(rng, w, h, labels, style.max_cut, style.log_area, style.spread_cut):
        cropped = shape_mask(pts, w, h)
        box = tight_box(*cropped) if cropped else None
        if box is None:
            continue
        labelled = _visible(cropped[0], pts) >= style.min_visible
        mask, x0, y0 = cropped
        owner[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask >= 128] = len(owners)
        owners.append(len(drawn_labels) if labelled else -1)
        under = img[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask >= 128]
        fill = Fill.sample(rng, contrasting_colour(rng, under))
        if not style.shaded_fills:
            fill = Fill(fill.colour, "flat", fill.amount, fill.angle)
        paint(img, mask, x0, y0, fill.pixels(*mask.shape, rng))
        if labelled:
            drawn_labels.append(label)
            boxes.append(box)
            areas.append(polygon_area(pts))
    covered = np.zeros((h, w), np.uint8)
    for box in boxes:
        if rng.random() < style.occlude_p:
            occlude(img, rng, box, covered)
    shown = np.bincount(owner[(owner >= 0) & (covered < 128)].ravel(), minlength=len(owners))
    shown = shown[[k for k, index in enumerate(owners) if index >= 0]]
    difficult = [bool(n / max(area, 1e-6) < style.required_visible) for n, area in zip(shown, areas)]
    return Camera.sample(rng).apply(img, rng), drawn_labels, boxes, difficult


# ---------------------------------------------------------------- writing


def _write_jpeg(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img, _JPEG):
        raise OSError(f"could not write {path}")


def _split_counts(n: int) -> dict[str, int]:
    n_val = max(1, round(n * SPLIT_FRACTIONS["val"]))
    n_test = max(1, round(n * SPLIT_FRACTIONS["test"]))
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def _write_labels(root: Path, classes: Sequence[str] = tuple(CLASSES)) -> None:
    (root / "labels.txt").write_text("".join(f"{name}\n" for name in classes))


def _assign_splits(split_of: np.ndarray, order: np.ndarray) -> None:
    """The first 70% of `order` go to train, the next 15% to val, the rest to test."""
    counts = _split_counts(len(order))
    end_train = counts["train"]
    end_val = end_train + counts["val"]
    split_of[order[:end_train]] = "train"
    split_of[order[end_train:end_val]] = "val"
    split_of[order[end_val:]] = "test"


def _digits(n: int) -> int:
    return max(5, len(str(n - 1)))


def _render_silhouette(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """One white shape on black, centred, randomly rotated: the curriculum's first lesson."""
    frac = rng.uniform(*AREA_RANGE)
    pts = (
        pose(unit_shape(label, rng), frac * size * size, np.exp(rng.uniform(-0.08, 0.08)), rng.uniform(0, 2 * np.pi))
        + size / 2
    )
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)


def synth_classification(
    out: Path, n: int, seed: int, size: int = 64, silhouettes: bool = False, classes: Sequence[str] = tuple(CLASSES)
) -> DatasetIndex:
    """Write an ImageFolder `out/{train,val,test}/<class>/<NNNNN>.jpg` plus `out/labels.txt`.

    Classes are balanced and split 70/15/15 per class, so every class is in every split.
    With `silhouettes` every image is one white shape on black, centred (same classes, sizes and
    rotations, none of the scenes' nuisances): the first lesson of the demo classifier's
    curriculum (docs/training-from-scratch.md explains why a network from scratch needs it).
    `classes` picks and orders the classes: any of CLASSES and EMPTY (a scene with no shape), e.g. a
    changed class list to fine-tune onto; the default (CLASSES) writes the demo's data.
    Errors: ConfigError naming `n` or an unknown class.
    """
    classes = list(classes)
    unknown = [c for c in classes if c not in CLASSES and c != EMPTY]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ConfigError(
            f"classes={classes}: each must be one of {CLASSES + [EMPTY]}, once"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    if silhouettes and EMPTY in classes:
        raise ConfigError(f"classes={classes}: silhouettes have no {EMPTY!r} class")
    if n < 3 * len(classes):
        raise ConfigError(
            f"n={n} is too small: synth_classification needs n >= {3 * len(classes)} "
            "so that every class is in every split"
        )
    out = Path(out)
    stream = _STREAM_SIL if silhouettes else _STREAM_CLS
    layout = np.random.default_rng([seed, stream])
    labels = layout.permutation(np.arange(n) % len(classes))
    split_of = np.empty(n, dtype=object)
    for label in range(len(classes)):
        _assign_splits(split_of, layout.permutation(np.flatnonzero(labels == label)))
    digits = _digits(n)
    relpaths = []
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            for name in classes:
                (tmp / split / name).mkdir(parents=True)
        for i in range(n):
            rng = np.random.default_rng([seed, stream, i + 1])
            name = classes[labels[i]]
            shapes = [] if name == EMPTY else [CLASSES.index(name)]
            if silhouettes:
                img = _render_silhouette(rng, size, shapes[0])
            else:
                img = _render_still(rng, size, size, shapes, _CLASSIFICATION_STYLE)[0]
            rel = Path(split_of[i], name, f"{i:0{digits}d}.jpg")
            _write_jpeg(tmp / rel, img)
            relpaths.append(rel)
        _write_labels(tmp, classes)
    splits = {
        s: [ImageRecord(out / rel, int(labels[i])) for i, rel in enumerate(relpaths) if split_of[i] == s]
        for s in SPLITS
    }
    return DatasetIndex("classification", out, classes, splits)


def synth_detection(
    out: Path, n: int, seed: int, size: int = 160, aspects: tuple[float, ...] = CAMERA_ASPECTS
) -> DatasetIndex:
    """Write a Pascal VOC folder: JPEGImages/, Annotations/, ImageSets/Main/{train,val,test}.txt, labels.txt.

    Images hold 1-4 objects (about 2% hold none, a few more only objects too far out of view to be labelled).
    Each image is `size` pixels high and `size * a` wide, `a` drawn evenly from `aspects` (width / height):
    by default the frames cameras send (1:1, 4:3, 16:9), which a detector sees squeezed to its square input.
    """
    aspects = tuple(float(a) for a in aspects)
    if not aspects or any(not 1 / 4 <= a <= 4 for a in aspects):
        raise ConfigError(f"aspects={aspects}: each width / height must be between 1/4 and 4")
    if size < 8:
        raise ConfigError(f"size={size} is too small: synth_detection needs images at least 8 pixels high")
    if n < 3:
        raise ConfigError(f"n={n} is too small: synth_detection needs n >= 3 so that every split has an image")
    out = Path(out)
    layout = np.random.default_rng([seed, _STREAM_DET])
    split_of = np.empty(n, dtype=object)
    _assign_splits(split_of, layout.permutation(n))
    digits = _digits(n)
    records = []
    with atomic_dir(out) as tmp:
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (tmp / sub).mkdir(parents=True)
        for i in range(n):
            rng = np.random.default_rng([seed, _STREAM_DET, i + 1])
            k = int(rng.choice(5, p=[0.02, 0.33, 0.29, 0.2, 0.16]))
            labels = [int(x) for x in rng.integers(0, len(CLASSES), k)]
            width = round(size * aspects[int(rng.integers(len(aspects)))])
            img, labels, boxes, difficult = _render_still(rng, width, size, labels, DETECTION_STYLE)
            stem = f"{i:0{digits}d}"
            _write_jpeg(tmp / "JPEGImages" / f"{stem}.jpg", img)
            objects = [VocObject(CLASSES[label], box, hard) for label, box, hard in zip(labels, boxes, difficult)]
            (tmp / "Annotations" / f"{stem}.xml").write_text(
                voc_xml(f"{stem}.jpg", width, size, objects, "LensOps synthetic shapes")
            )
            records.append(
                DetectionRecord(
                    out / "JPEGImages" / f"{stem}.jpg",
                    width,
                    size,
                    np.array(boxes, np.float32).reshape(-1, 4),
                    np.array(labels, np.int32),
                    np.array(difficult, bool),
                )
            )
        for split in SPLITS:
            ids = [f"{i:0{digits}d}\n" for i in range(n) if split_of[i] == split]
            (tmp / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(ids))
        _write_labels(tmp)
    splits = {s: [r for i, r in enumerate(records) if split_of[i] == s] for s in SPLITS}
    return DatasetIndex("detection", out, list(CLASSES), splits)
