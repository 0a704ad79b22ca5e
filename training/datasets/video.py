"""The demo video: 1-4 shapes moving through a scene drawn in the detection stills' style (at their
lowest background contrast), with a per-frame ground truth (`video_gt.json`, schema VIDEO_GT_SCHEMA). Same seed,
same bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from training.datasets.drawing import (
    CLASSES,
    Camera,
    Fill,
    contrasting_colour,
    draw_background,
    draw_clutter,
    paint,
    pose,
    shape_mask,
    tight_box,
    unit_shape,
)
from common.files import atomic_dir
from training.datasets.synth import AREA_RANGE, DETECTION_STYLE, REQUIRED_VISIBLE, polygon_area
from training.errors import ConfigError

VIDEO_GT_SCHEMA = "lensops.video-gt/1"
_VIDEO_AREA_MAX = 0.3  # so that bouncing objects fit in the frame
VIDEO_LISTED_VISIBLE = 0.3  # the ground truth lists objects with at least this share in view ...
VIDEO_REQUIRED_VISIBLE = REQUIRED_VISIBLE  # ... and marks those below this share `difficult` (optional, as in VOC)
VIDEO_BACKGROUND_CONTRAST = 0.5  # background texture kept (the stills keep 0.5-1.0: synth.DETECTION_STYLE)
_STREAM_VIDEO = 3  # the stills use streams 1, 2 and 4 (datasets.synth): independent generators


@dataclass
class _Mover:
    """One object moving through the video in a straight line, bouncing off the walls or passing out."""

    label: int
    unit: np.ndarray
    area: float
    aspect: float
    angle: float
    spin: float
    centre: np.ndarray
    velocity: np.ndarray
    bounce: bool
    fill: Fill
    wait: int = 0  # frames before it appears

    @classmethod
    def spawn(cls, rng: np.random.Generator, background: np.ndarray, k: int, fps: float, inside: bool) -> "_Mover":
        h, w = background.shape[:2]
        label = int(rng.integers(len(CLASSES)))
        area = np.exp(rng.uniform(np.log(AREA_RANGE[0]), np.log(min(_VIDEO_AREA_MAX, 0.9 / k)))) * w * h
        speed = rng.uniform(0.15, 0.5) * min(w, h) / fps  # 0.15-0.5 of the short side per second
        heading = rng.uniform(0, 2 * np.pi)
        colour = contrasting_colour(rng, background)
        mover = cls(
            label,
            unit_shape(label, rng),
            area,
            float(np.exp(rng.uniform(-0.08, 0.08))),
            float(rng.uniform(0, 2 * np.pi)),
            float(rng.uniform(-3, 3) * np.pi / 180),
            rng.uniform(0.2, 0.8, 2) * (w, h),
            speed * np.array([np.cos(heading), np.sin(heading)]),
            bool(rng.random() < 0.4),
            Fill.sample(rng, colour, textured=False),
        )
        if not DETECTION_STYLE.shaded_fills:  # painted as the detection stills paint objects
            mover.fill = Fill(mover.fill.colour, "flat", mover.fill.amount, mover.fill.angle)
        if not inside:  # start just outside an edge, heading in
            r = mover.radius()
            edge = rng.integers(4)
            axis, outside = edge % 2, (-r if edge < 2 else (w, h)[edge % 2] + r)
            mover.centre[axis] = outside
            mover.velocity[axis] = abs(mover.velocity[axis]) * (1 if edge < 2 else -1)
            mover.wait = int(rng.integers(0, int(2 * fps) + 1))
        return mover

    def radius(self) -> float:
        """Distance from the centre to the farthest vertex, whatever the rotation."""
        return float(np.linalg.norm(pose(self.unit, self.area, self.aspect, 0.0, still=False), axis=1).max())

    def points(self) -> np.ndarray:
        return pose(self.unit, self.area, self.aspect, self.angle, still=False) + self.centre

    def gone(self, w: int, h: int) -> bool:
        r = self.radius()
        return bool(np.any(self.centre < -r) or self.centre[0] > w + r or self.centre[1] > h + r)

    def step(self, w: int, h: int) -> None:
        self.centre = self.centre + self.velocity
        self.angle += self.spin
        if self.bounce:
            half = np.abs(self.points() - self.centre).max(0)
            for axis, limit in enumerate((w, h)):
                if self.centre[axis] - half[axis] < 0:
                    self.velocity[axis] = abs(self.velocity[axis])
                elif self.centre[axis] + half[axis] > limit:
                    self.velocity[axis] = -abs(self.velocity[axis])


def _collide(movers: list[_Mover]) -> None:
    """Let movers that run into each other bounce apart (an elastic collision), so they rarely hide each other."""
    for i, a in enumerate(movers):
        for b in movers[i + 1 :]:
            gap = b.centre - a.centre
            distance = float(np.linalg.norm(gap))
            approaching = float(np.dot(b.velocity - a.velocity, gap)) < 0
            if approaching and 0 < distance < 0.75 * (a.radius() + b.radius()):
                normal = gap / distance
                exchange = np.dot(a.velocity - b.velocity, normal) * normal
                a.velocity, b.velocity = a.velocity - exchange, b.velocity + exchange


def _draw_movers(frame: np.ndarray, movers: list[_Mover], rng: np.random.Generator) -> list[dict]:
    """Paint the movers that are in play, later ones on top; return the ground truth of those at
    least 30% in view. In view = inside the frame and not hidden by a mover painted over it."""
    h, w = frame.shape[:2]
    owner = np.full((h, w), -1, np.int16)  # which mover each pixel shows
    drawn = []
    for mover in movers:
        if mover.wait > 0:
            mover.wait -= 1
            continue
        pts = mover.points()
        cropped = shape_mask(pts, w, h)
        box = tight_box(*cropped) if cropped else None
        if box is None:
            continue
        mask, x0, y0 = cropped
        paint(frame, mask, x0, y0, mover.fill.pixels(*mask.shape, rng))
        owner[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask >= 128] = len(drawn)
        drawn.append((mover, pts, box))
    shown = np.bincount(owner[owner >= 0].ravel(), minlength=len(drawn))
    objects = []
    for i, (mover, pts, box) in enumerate(drawn):
        visible = round(float(min(shown[i] / max(polygon_area(pts), 1e-6), 1.0)), 3)
        if visible >= VIDEO_LISTED_VISIBLE:
            # Like VOC's "difficult": an object mostly out of the frame or hidden may or may not be
            # detected (training labels objects from LABEL_MIN_VISIBLE in view); counts treat it as optional.
            objects.append(
                {
                    "label": CLASSES[mover.label],
                    "box": [round(box[0] / w, 5), round(box[1] / h, 5), round(box[2] / w, 5), round(box[3] / h, 5)],
                    "visible": visible,
                    "difficult": bool(visible < VIDEO_REQUIRED_VISIBLE),
                }
            )
    return objects


def synth_video(out: Path, n_frames: int, seed: int, size: tuple[int, int] = (320, 240), fps: float = 15) -> Path:
    """Write `out/video.mp4` (mp4v) with 1-4 moving shapes and `out/video_gt.json`; return the video path.

    Objects cover 8% to 30% of the frame. An object is listed in a frame's `objects` while at
    least 30% of its area is in view (inside the frame, not hidden behind another object), with its
    normalised box [x_min, y_min, x_max, y_max] (occlusion does not shrink it, as in VOC) and the
    share in view; below 50% in view it is `difficult` (optional, as in VOC). A frame's `counts`
    are its objects that are not difficult.
    """
    if n_frames < 1:
        raise ConfigError(f"n_frames={n_frames} must be at least 1")
    out = Path(out)
    w, h = size
    rng = np.random.default_rng([seed, _STREAM_VIDEO])
    background = draw_background(rng, h, w)
    contrast = VIDEO_BACKGROUND_CONTRAST
    mean = background.mean((0, 1), keepdims=True)
    background = np.clip(mean + (background - mean) * contrast + 0.5, 0, 255).astype(np.uint8)
    draw_clutter(background, rng, int(rng.integers(*DETECTION_STYLE.clutter)))
    camera = Camera.sample(rng, blur_p=0.0)
    k = int(rng.integers(2, 5))  # movers; 1-4 of them are in view at a time as they enter and leave
    movers: list[_Mover] = []
    for i in range(k):
        mover = _Mover.spawn(rng, background, k, fps, inside=(i == 0 or rng.random() < 0.6))
        for _ in range(20):  # start apart from the others already in view
            if mover.wait or all(
                np.linalg.norm(mover.centre - m.centre) >= 0.75 * (mover.radius() + m.radius())
                for m in movers
                if not m.wait
            ):
                break
            mover.centre = rng.uniform(0.2, 0.8, 2) * (w, h)
        movers.append(mover)
    frames_gt = []
    with atomic_dir(out) as tmp:
        writer = cv2.VideoWriter(str(tmp / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not writer.isOpened():
            raise OSError("OpenCV cannot write mp4v video here (no FFmpeg backend?)")
        try:
            for index in range(n_frames):
                frame = background.copy()
                objects = _draw_movers(frame, movers, rng)
                _collide([m for m in movers if m.wait == 0])
                for i, mover in enumerate(movers):
                    if mover.wait == 0:
                        mover.step(w, h)
                        if mover.gone(w, h):
                            movers[i] = _Mover.spawn(rng, background, k, fps, inside=False)
                writer.write(camera.apply(frame, rng, flicker=float(rng.normal(0, 2))))
                counts: dict[str, int] = {}
                for obj in objects:
                    if not obj["difficult"]:
                        counts[obj["label"]] = counts.get(obj["label"], 0) + 1
                frames_gt.append({"index": index, "objects": objects, "counts": counts})
        finally:
            writer.release()
        written = cv2.VideoCapture(str(tmp / "video.mp4"))
        frame_count = int(written.get(cv2.CAP_PROP_FRAME_COUNT))
        written.release()
        if frame_count != n_frames:
            raise OSError(f"wrote {n_frames} frames but the video holds {frame_count}")
        gt = {
            "schema": VIDEO_GT_SCHEMA,
            "fps": fps,
            "width": w,
            "height": h,
            "classes": list(CLASSES),
            "frames": frames_gt,
        }
        (tmp / "video_gt.json").write_text(json.dumps(gt, indent=1) + "\n")
    return out / "video.mp4"
