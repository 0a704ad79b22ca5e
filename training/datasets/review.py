"""Captures out for human review and the reviewed labels back, in formats labelling tools read and write.

The classes a reviewer may use are the data set's the captures go into: the merged data set's
(`--merge`), which may hold a class the serving model lacks, else the serving model's.

Detection: Pascal VOC (CVAT, Label Studio and most other tools import and export it):
`JPEGImages/<id>.jpg`, `Annotations/<id>.xml` with the serving model's boxes as pre-labels,
`ImageSets/Main/default.txt`, and `labels.txt` = the classes plus DROP_LABEL.
Classification: an ImageFolder `<label>/<id>.jpg` (move a file to the right folder to relabel it).

Reading back, the review replaces the pre-labels. A frame is dropped when the reviewer deleted it
(its annotation or image is gone) or marked it: a box labelled DROP_LABEL anywhere on it
(detection), or the file moved into the DROP_LABEL folder (classification). A file that cannot be
read, a label that is not a class, a box outside the image or a frame that is not among the
captures is an error naming the file (and the label or field).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from training.datasets.captures import CaptureFolder
from training.datasets.formats import IMAGE_SUFFIXES, VocObject, read_voc, voc_xml
from training.errors import DatasetError

DROP_LABEL = "drop-frame"
BOX_TOLERANCE_PX = 1.0  # as the data check: tools round boxes at the image border


# ---------------------------------------------------------------- VOC files


def read_checked_voc(
    path: Path, classes: list[str], extra_names: tuple[str, ...] = ()
) -> tuple[int, int, list[VocObject]]:
    """(width, height, objects) of one VOC annotation, boxes clipped to the image (continuous pixels);
    an unknown label, a box outside the image or a bad field is an error naming the file and the object."""
    annotation = read_voc(path)
    width, height = annotation.width, annotation.height
    objects = []
    for i, obj in enumerate(annotation.objects):
        where = f"object {i + 1}"
        if obj.name not in classes and obj.name not in extra_names:
            raise DatasetError(f"{path}: label '{obj.name}' ({where}) is not a class (classes: {', '.join(classes)})")
        x0, y0, x1, y1 = obj.box
        tol = BOX_TOLERANCE_PX
        if not (x1 > x0 and y1 > y0 and x0 >= -tol and y0 >= -tol and x1 <= width + tol and y1 <= height + tol):
            raise DatasetError(
                f"{path}: {where} ('{obj.name}') box [{x0 + 1:g}, {y0 + 1:g}, {x1:g}, {y1:g}] "
                f"(VOC, 1-based) is empty or outside the {width}x{height} image"
            )
        clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
        objects.append(VocObject(obj.name, clipped, obj.difficult))
    return width, height, objects


# ---------------------------------------------------------------- export


def export_review(folder: CaptureFolder, frame_ids: list[str], out: Path, classes: list[str]) -> dict:
    """Write the frames `frame_ids` of a capture folder for review into `out` (an empty temp folder);
    `classes` are the labels the reviewer may use (the data set's the captures go into)."""
    if DROP_LABEL in classes or DROP_LABEL in folder.labels:
        raise DatasetError(
            f"the class name '{DROP_LABEL}' is reserved for review; the classes are "
            f"{', '.join(classes)}, the device's ({folder.root / 'labels.txt'}) {', '.join(folder.labels)}"
        )
    by_id = {f.id: f for f in folder.frames}
    frames = [by_id[i] for i in frame_ids]
    if folder.task == "detection":
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        for f in frames:
            _, _, objects = read_checked_voc(f.annotation, folder.labels)
            shutil.copyfile(f.image, out / "JPEGImages" / f"{f.id}.jpg")
            (out / "Annotations" / f"{f.id}.xml").write_text(
                voc_xml(f"{f.id}.jpg", f.width, f.height, objects, "LensOps capture (pre-labels)"), encoding="utf-8"
            )
        (out / "ImageSets" / "Main" / "default.txt").write_text("".join(f"{f.id}\n" for f in frames))
    else:
        for name in [*classes, DROP_LABEL]:
            (out / name).mkdir(parents=True, exist_ok=True)
        for f in frames:
            (out / f.label).mkdir(exist_ok=True)  # a device label the data set lacks: the reviewer moves it
            shutil.copyfile(f.image, out / f.label / f"{f.id}.jpg")
    (out / "labels.txt").write_text("".join(f"{n}\n" for n in [*classes, DROP_LABEL]), encoding="utf-8")
    return {"task": folder.task, "frames": len(frames), "labels": list(classes), "drop_label": DROP_LABEL}


# ---------------------------------------------------------------- read back


@dataclass
class Review:
    """What the reviewer decided, per capture id."""

    boxes: dict[str, list[VocObject]] = field(default_factory=dict)  # detection
    labels: dict[str, str] = field(default_factory=dict)  # classification
    dropped: dict[str, str] = field(default_factory=dict)  # id -> "deleted" | "marked"

    def kept(self) -> set[str]:
        """Ids of the frames the reviewer kept (with their reviewed boxes or label)."""
        return set(self.boxes) | set(self.labels)


def _frame_id(path: Path, known: set[str], review_root: Path) -> str:
    if path.stem not in known:
        raise DatasetError(
            f"{path}: frame '{path.stem}' is not among the captures being imported "
            f"(was {review_root} exported from another capture folder?)"
        )
    return path.stem


def read_review(review_root: Path, folder: CaptureFolder, frame_ids: list[str], classes: list[str]) -> Review:
    """The reviewed labels of `frame_ids` from `review_root`, each one of `classes` (the data set's the
    captures go into); frames it does not hold count as deleted."""
    review_root = Path(review_root)
    if not review_root.is_dir():
        raise DatasetError(f"reviewed folder not found: {review_root}")
    known = set(frame_ids)
    by_id = {f.id: f for f in folder.frames}
    review = Review()
    if folder.task == "detection":
        annotations = review_root / "Annotations"
        if not annotations.is_dir():
            raise DatasetError(f"{review_root}: no Annotations/ folder (expected a Pascal VOC export)")
        images = review_root / "JPEGImages"
        for xml in sorted(p for p in annotations.glob("*.xml") if not p.name.startswith(".")):
            frame_id = _frame_id(xml, known, review_root)
            width, height, objects = read_checked_voc(xml, classes, (DROP_LABEL,))
            frame = by_id[frame_id]
            if (width, height) != (frame.width, frame.height):
                raise DatasetError(
                    f"{xml}: <size> is {width}x{height}, the captured frame is {frame.width}x{frame.height}"
                )
            if images.is_dir() and not any((images / f"{frame_id}{s}").is_file() for s in IMAGE_SUFFIXES):
                review.dropped[frame_id] = "deleted"
            elif any(o.name == DROP_LABEL for o in objects):
                review.dropped[frame_id] = "marked"
            else:
                review.boxes[frame_id] = objects
    else:
        for image in sorted(
            p
            for p in review_root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        ):
            frame_id = _frame_id(image, known, review_root)
            label = image.parent.name
            if image.parent.parent != review_root:
                raise DatasetError(f"{image}: not directly inside a class folder of {review_root}")
            if label != DROP_LABEL and label not in classes:
                raise DatasetError(
                    f"{image}: label '{label}' (its folder) is not a class (classes: {', '.join(classes)})"
                )
            if frame_id in review.labels or frame_id in review.dropped:
                raise DatasetError(f"{image}: frame '{frame_id}' is in two class folders")
            if label == DROP_LABEL:
                review.dropped[frame_id] = "marked"
            else:
                review.labels[frame_id] = label
    for frame_id in frame_ids:
        if frame_id not in review.kept() and frame_id not in review.dropped:
            review.dropped[frame_id] = "deleted"
    return review
