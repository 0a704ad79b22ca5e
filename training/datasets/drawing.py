"""Drawing for the synthetic demo data: shape outlines, fills, textured backgrounds,
distractors, occlusion and the camera's lighting and noise. `synth` composes these into
scenes and writes the data sets; every function draws only from the generator it is given."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

CLASSES = ["circle", "square", "triangle", "star", "cross"]


def unit_shape(label: int, rng: np.random.Generator) -> np.ndarray:
    """Vertices (K, 2) of one shape of the class, roughly inside the unit circle."""
    name = CLASSES[label]
    if name == "circle":
        t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    if name == "triangle":
        t = np.deg2rad([-90.0, 30.0, 150.0]) + rng.uniform(-0.12, 0.12, 3)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "star":
        t = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.46))
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    a = rng.uniform(0.28, 0.38)  # cross: half the arm width
    return np.array(
        [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]],
        np.float64,
    )


def pose(unit: np.ndarray, area: float, aspect: float, angle: float, still: bool = True) -> np.ndarray:
    """Stretch, rotate and scale a unit shape so that its box has `area` px.

    A still shape is centred on its rotated box. A moving one (still=False) keeps its size
    and turns about its own centre as `angle` changes.
    """
    stretched = unit * (aspect, 1.0 / aspect)
    c, s = np.cos(angle), np.sin(angle)
    rotated = stretched @ np.array([[c, s], [-s, c]])
    ref = rotated if still else stretched
    span = ref.max(0) - ref.min(0)
    pts = rotated * np.sqrt(area / (span[0] * span[1]))
    return pts - (pts.max(0) + pts.min(0)) / 2 if still else pts


def shape_mask(pts: np.ndarray, w: int, h: int) -> tuple[np.ndarray, int, int] | None:
    """Anti-aliased mask of a polygon cropped to its in-frame box: (mask, x0, y0)."""
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 1, (w, h))
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # cv2 puts pixel centres on integers; our coordinates put them on .5
    fixed = np.round((pts - (x0 + 0.5, y0 + 0.5)) * 16).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 255, cv2.LINE_AA, shift=4)
    return mask, int(x0), int(y0)


def tight_box(mask: np.ndarray, x0: int, y0: int) -> tuple[int, int, int, int] | None:
    on = mask >= 128
    cols, rows = np.flatnonzero(on.any(0)), np.flatnonzero(on.any(1))
    if cols.size == 0:
        return None
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    return yy, xx


def _ramp(h: int, w: int, angle: float) -> np.ndarray:
    """A linear ramp from -1 to 1 across an h x w area in the direction `angle`."""
    yy, xx = _grid(h, w)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    lo, hi = float(t.min()), float(t.max())
    return (t - lo) * (2.0 / max(hi - lo, 1e-6)) - 1.0


_LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # images are BGR


def contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour that differs in hue and brightness from (nearly) all the pixels `under` (M, 3)."""
    under = under.reshape(-1, 3).astype(np.float32)
    if len(under) > 200:
        under = under[rng.choice(len(under), 200, replace=False)]
    candidates = rng.uniform(0, 255, (20, 3)).astype(np.float32)
    if not len(under):
        return candidates[0]
    k = len(under) // 10  # score each candidate by its 10th-percentile distance
    diff = under[None, :, :] - candidates[:, None, :]
    colour_distance = np.partition(np.linalg.norm(diff, axis=2), k, axis=1)[:, k] / 90
    luma_distance = np.partition(np.abs(diff @ _LUMA), k, axis=1)[:, k] / 50
    score = np.minimum(colour_distance, luma_distance)
    good = np.flatnonzero(score >= 1)
    return candidates[good[0] if good.size else int(np.argmax(score))]


@dataclass(frozen=True)
class Fill:
    """How an object is painted: flat, shaded (a brightness ramp) or textured."""

    colour: np.ndarray
    kind: str
    amount: float
    angle: float

    @classmethod
    def sample(cls, rng: np.random.Generator, colour: np.ndarray, textured: bool = True) -> "Fill":
        r = rng.random()
        kind = "flat" if r < 0.5 else "shaded" if (r < 0.8 or not textured) else "textured"
        return cls(colour, kind, float(rng.uniform(0.15, 0.4)), float(rng.uniform(0, 2 * np.pi)))

    def pixels(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "flat":
            return self.colour
        if self.kind == "shaded":
            return np.clip(self.colour * (1.0 + self.amount * _ramp(h, w, self.angle))[..., None], 0, 255)
        noise = rng.uniform(-1, 1, (int(rng.integers(2, 5)), int(rng.integers(2, 5)), 3)).astype(np.float32)
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(self.colour + noise * (self.amount * 120), 0, 255)


def paint(img: np.ndarray, mask: np.ndarray, x0: int, y0: int, fill: np.ndarray) -> None:
    roi = img[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
    alpha = mask.astype(np.float32)[..., None] * (1.0 / 255)
    roi[...] = (roi + (fill - roi) * alpha + 0.5).astype(np.uint8)


def draw_background(rng: np.random.Generator, h: int, w: int, mix: bool = True) -> np.ndarray:
    """A float32 (h, w, 3) background: gradient, low-frequency noise, stripes, checkerboard, flat or blobs."""
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    c2 = np.clip(c1 + rng.normal(0, 40, 3), 0, 255).astype(np.float32)  # patterns stay below object contrast
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = _grid(h, w)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    kind = rng.integers(6)
    if kind == 0:  # smooth gradient between two unrelated colours
        c2 = rng.uniform(0, 255, 3).astype(np.float32)
        t = (_ramp(h, w, angle) + 1) / 2
    elif kind == 1:  # low-frequency colour noise
        coarse = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.float32)
        return _mixed(rng, np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255), mix)
    elif kind == 2:  # stripes, soft or hard
        t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 12) * u + rng.uniform(0, 2 * np.pi))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == 3:  # checkerboard at any angle
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        cells = rng.uniform(3, 12)
        t = (np.floor(u * cells) + np.floor(v * cells)) % 2
    elif kind == 4:
        t = np.zeros((h, w), np.float32)
    else:  # blurred random blobs
        bg = np.empty((h, w, 3), np.float32)
        bg[...] = c1
        for _ in range(int(rng.integers(4, 13))):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.uniform(0.1, 0.4) * w), int(rng.uniform(0.1, 0.4) * h))
            colour = tuple(float(c) for c in np.clip(c1 + rng.normal(0, 80, 3), 0, 255))
            cv2.ellipse(bg, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        return _mixed(rng, cv2.GaussianBlur(bg, (0, 0), max(h, w) / 15), mix)  # soft: no edges like a shape
    return _mixed(rng, c1 + (c2 - c1) * t[..., None], mix)


def _mixed(rng: np.random.Generator, bg: np.ndarray, mix: bool) -> np.ndarray:
    if mix and rng.random() < 0.3:
        return (bg + draw_background(rng, bg.shape[0], bg.shape[1], mix=False)) * 0.5
    return bg


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(0, 255, 3))


def _blob(rng: np.random.Generator, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """A random polygon with many vertices around `centre`, as fixed-point points for cv2."""
    k = int(rng.integers(9, 15))  # many, evenly spread vertices: never a clean triangle or square
    t = (np.arange(k) + rng.uniform(-0.3, 0.3, k)) * (2 * np.pi / k)
    r = rng.uniform(0.5, 1.0, k)[:, None]
    pts = centre + r * np.stack([np.cos(t), np.sin(t)], 1) * radii
    return np.round(pts * 16).astype(np.int32)


def draw_clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Distractors that are not classes: lines, eccentric ellipses, arcs, small many-vertex polygons."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(count):
        centre = rng.uniform(0, 1, 2) * (w, h)
        kind = rng.integers(4)
        if kind == 0:
            p1, p2 = (rng.uniform(-0.1, 1.1, (2, 2)) * (w, h)).astype(int)
            cv2.line(
                img,
                tuple(map(int, p1)),
                tuple(map(int, p2)),
                _colour(rng),
                int(rng.integers(1, max(2, side // 40) + 2)),
                cv2.LINE_AA,
            )
        elif kind in (1, 2):
            a = rng.uniform(0.06, 0.25) * side
            ratio = rng.uniform(0.25, 0.55) if kind == 1 else rng.uniform(0.5, 1.0)
            start = rng.uniform(0, 360)
            span = 360 if kind == 1 else rng.uniform(60, 270)
            thickness = -1 if kind == 1 and rng.random() < 0.5 else int(rng.integers(1, 4))
            cv2.ellipse(
                img,
                tuple(map(int, centre)),
                (max(int(a), 1), max(int(a * ratio), 1)),
                float(rng.uniform(0, 180)),
                start,
                start + span,
                _colour(rng),
                thickness,
                cv2.LINE_AA,
            )
        else:
            cv2.fillPoly(
                img,
                [_blob(rng, centre, np.full(2, rng.uniform(0.03, 0.08) * side))],
                _colour(rng),
                cv2.LINE_AA,
                shift=4,
            )


def occlude(
    img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int], covered: Optional[np.ndarray] = None
) -> None:
    """Cover part of a box (at most ~30% of it) with a blob entering from one of its sides; the blob's
    pixels are also set to 255 in `covered` (uint8, the image's height and width) when given."""
    x0, y0, x1, y1 = box
    depth = rng.uniform(0.2, 0.5)  # how far into the box, as a fraction of the box
    across = rng.uniform(0.3, min(1.0, 0.38 / depth))  # half an ellipse covers pi/4 * depth * across
    if rng.random() < 0.5:  # enter from the left or right side
        cx = x0 if rng.random() < 0.5 else x1
        cy = rng.uniform(y0, y1)
        radii = np.array([depth * (x1 - x0), across * (y1 - y0) / 2])
    else:
        cx = rng.uniform(x0, x1)
        cy = y0 if rng.random() < 0.5 else y1
        radii = np.array([across * (x1 - x0) / 2, depth * (y1 - y0)])
    radii[np.argmin(radii)] = min(radii.min(), 0.55 * radii.max())  # eccentric, so never a circle
    targets = [img] if covered is None else [img, covered]
    if rng.random() < 0.5:
        centre, axes = (int(round(cx * 16)), int(round(cy * 16))), tuple(int(round(r * 16)) for r in radii)
        colour = _colour(rng)
        for target, value in zip(targets, (colour, 255)):
            cv2.ellipse(target, centre, axes, 0, 0, 360, value, -1, cv2.LINE_AA, shift=4)
    else:
        blob, colour = _blob(rng, np.array([cx, cy]), radii), _colour(rng)
        for target, value in zip(targets, (colour, 255)):
            cv2.fillPoly(target, [blob], value, cv2.LINE_AA, shift=4)


@dataclass(frozen=True)
class Camera:
    """Lighting and sensor: illumination ramp, contrast, brightness, gamma, blur, noise."""

    ramp: float
    ramp_angle: float
    contrast: float
    brightness: float
    gamma: float
    blur: float
    noise: float

    @classmethod
    def sample(cls, rng: np.random.Generator, blur_p: float = 0.1) -> "Camera":
        return cls(
            ramp=float(rng.uniform(0.1, 0.35)) if rng.random() < 0.5 else 0.0,
            ramp_angle=float(rng.uniform(0, 2 * np.pi)),
            contrast=float(rng.uniform(0.75, 1.35)),
            brightness=float(rng.uniform(-35, 35)),
            gamma=float(np.exp(rng.uniform(np.log(0.7), np.log(1.5)))),
            blur=float(rng.uniform(0.5, 1.0)) if rng.random() < blur_p else 0.0,
            noise=float(rng.uniform(0, 8)),
        )

    def apply(self, img: np.ndarray, rng: np.random.Generator, flicker: float = 0.0) -> np.ndarray:
        h, w = img.shape[:2]
        x = img.astype(np.float32)
        if self.ramp:
            x *= (1.0 + self.ramp * _ramp(h, w, self.ramp_angle))[..., None]
        x = (x - 128.0) * self.contrast + (128.0 + self.brightness + flicker)
        lut = np.round((np.arange(256) / 255.0) ** self.gamma * 255).astype(np.uint8)
        out = cv2.LUT(np.clip(x, 0, 255).astype(np.uint8), lut)
        if self.blur:
            out = cv2.GaussianBlur(out, (0, 0), self.blur)
        if self.noise > 1:
            noisy = out + rng.standard_normal(out.shape, dtype=np.float32) * self.noise
            out = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
        return out
