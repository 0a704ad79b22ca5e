"""Readers for users' data sets: ImageFolder (classification), Pascal VOC and COCO (detection).

Every reader returns a DatasetIndex. A file the reader cannot turn into a record (malformed
xml or json, a label name that is not a class, an image outside a class folder, a missing
split list) is not dropped silently: it becomes a DatasetIssue on `index.issues`, and
check.check_dataset reports it, then fails or skips by policy.

Boxes are pixel [x_min, y_min, x_max, y_max] in continuous coordinates (the right edge of
pixel column 9 is 10). VOC xml is 1-based inclusive, so x_min = xmin - 1 and x_max = xmax;
COCO [x, y, w, h] gives [x, y, x + w, y + h]. VOC objects marked difficult and COCO crowd regions
(iscrowd) are kept with DetectionRecord.difficult set: the metric ignores them, training uses them.
read_voc and voc_xml are the one VOC reader and writer (synth, review and capture import use them).
"""

from __future__ import annotations

import json
import mimetypes
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from common.images import IMAGE_SUFFIXES
from training.datasets.records import SPLITS, DatasetIndex, DatasetIssue, DetectionRecord, ImageRecord
from training.errors import ConfigError, DatasetError

# IMAGE_SUFFIXES: what OpenCV's imread decodes; a file with another suffix is used when cv2.haveImageReader
# recognises its content, else reported as an "unsupported file" naming it.
FORMAT_TASKS = {"imagefolder": "classification", "voc": "detection", "coco": "detection"}
REQUIRED_SPLITS = ("train", "val")  # an absent test split is only a warning


def _existing_dir(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data set folder not found: {root}")
    return root


def read_labels(path: Path) -> list[str] | None:
    """Class names from a labels.txt (one per line, blank lines ignored), or None when there is none."""
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path}: class names listed twice: {', '.join(duplicates)}")
    if not names:
        raise DatasetError(f"{path}: no class names in it")
    return names


def _missing_split(path: Path, split: str, what: str) -> list[DatasetIssue]:
    if split not in REQUIRED_SPLITS:
        return []
    return [DatasetIssue("empty split", path, f"{what} not found", split)]


# Image formats OpenCV does not read: reported by name, never silently left out
_OTHER_IMAGE_SUFFIXES = (
    ".gif",
    ".heic",
    ".heif",
    ".avif",
    ".jxl",
    ".svg",
    ".ico",
    ".tga",
    ".psd",
    ".dng",
    ".cr2",
    ".nef",
    ".arw",
    ".raw",
)


def _looks_like_an_image(path: Path) -> bool:
    kind = mimetypes.guess_type(path.name)[0] or ""
    return kind.startswith("image/") or path.suffix.lower() in _OTHER_IMAGE_SUFFIXES


def _sort_files(folder: Path, split: str, recursive: bool = True) -> tuple[list[Path], list[DatasetIssue]]:
    """Visible image files under `folder`, by suffix or, for OpenCV, by content (a .jfif, an image
    without a suffix); an image-like file OpenCV cannot read (.gif, .heic) is an "unsupported file"
    issue naming it. Other files (notes.txt) are not images and are left alone."""
    images, issues = [], []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES or cv2.haveImageReader(str(path)):
            images.append(path)
        elif _looks_like_an_image(path):
            issues.append(
                DatasetIssue(
                    "unsupported file",
                    path,
                    f"an image OpenCV cannot read ({path.suffix or 'no suffix'}); "
                    f"convert it to one of {', '.join(IMAGE_SUFFIXES[:7])}",
                    split,
                )
            )
    return images, issues


# ---------------------------------------------------------------- ImageFolder


def load_image_folder(root: Path) -> DatasetIndex:
    """Read `root/{train,val,test}/<class>/<images>` (any image OpenCV decodes); classes from labels.txt
    or the folder names. Files that are not images become "unsupported file" issues, never vanish."""
    root = _existing_dir(root)
    declared = read_labels(root / "labels.txt")
    class_dirs = {
        split: sorted(d for d in (root / split).iterdir() if d.is_dir() and not d.name.startswith("."))
        for split in SPLITS
        if (root / split).is_dir()
    }
    classes = declared if declared is not None else sorted({d.name for dirs in class_dirs.values() for d in dirs})
    label_of = {name: i for i, name in enumerate(classes)}
    splits: dict[str, list] = {}
    issues: list[DatasetIssue] = []
    for split in SPLITS:
        records: list = []
        folder = root / split
        if split not in class_dirs:
            issues += _missing_split(folder, split, "folder")
        else:
            strays, unsupported = _sort_files(folder, split, recursive=False)
            issues += unsupported
            for stray in strays:
                issues.append(DatasetIssue("unknown label", stray, "image is not inside a class folder", split))
            for class_dir in class_dirs[split]:
                label = label_of.get(class_dir.name)
                images, unsupported = _sort_files(class_dir, split)
                issues += unsupported
                for image in images:
                    if label is None:
                        issues.append(
                            DatasetIssue(
                                "unknown label", image, f"class folder '{class_dir.name}' is not in labels.txt", split
                            )
                        )
                    else:
                        records.append(ImageRecord(image, label))
        splits[split] = records
    return DatasetIndex("classification", root, list(classes), splits, issues)


# ---------------------------------------------------------------- Pascal VOC


class MalformedAnnotation(DatasetError):
    """An annotation file that cannot be read; the message names the file and the field."""

    def __init__(self, path: Path, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = Path(path), detail


@dataclass(frozen=True)
class VocObject:
    """One object of a VOC annotation.

    `box` is [x_min, y_min, x_max, y_max] in continuous pixel coordinates (the right edge of
    pixel column 9 is 10); the xml holds it 1-based inclusive: xmin = x_min + 1, xmax = x_max.
    """

    name: str
    box: tuple[float, float, float, float]
    difficult: bool = False


@dataclass(frozen=True)
class VocAnnotation:
    """One VOC annotation file: the image's file name (None when absent), its size in pixels, its objects."""

    filename: str | None
    width: int
    height: int
    objects: list[VocObject]


def _text(path: Path, node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise MalformedAnnotation(path, f"{where}<{tag}> is missing")
    return child.text.strip()


def _number(path: Path, node: ET.Element, tag: str, where: str) -> float:
    value = _text(path, node, tag, where)
    try:
        return float(value)
    except ValueError:
        raise MalformedAnnotation(path, f"{where}<{tag}> is not a number: {value!r}") from None


def read_voc(path: Path) -> VocAnnotation:
    """Read one Pascal VOC annotation; boxes as VocObject.box (xml xmin..xmax 1-based inclusive -> continuous).

    Boxes are not checked against the image or the classes (check.check_dataset and the callers do
    that); a file that is not VOC xml raises MalformedAnnotation naming the file and the field.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise MalformedAnnotation(path, f"not a readable Pascal VOC annotation ({exc})") from None
    if root.tag != "annotation":
        raise MalformedAnnotation(path, f"root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise MalformedAnnotation(path, "<size> is missing")
    width, height = (int(_number(path, size, tag, "<size>")) for tag in ("width", "height"))
    if width <= 0 or height <= 0:
        raise MalformedAnnotation(path, f"<size> is {width}x{height}")
    objects = []
    for i, obj in enumerate(root.iter("object")):
        where = f"object {i + 1} "
        name = _text(path, obj, "name", where)
        box = obj.find("bndbox")
        if box is None:
            raise MalformedAnnotation(path, f"{where}('{name}') has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number(path, box, tag, f"{where}<bndbox>") for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true")
        objects.append(VocObject(name, (xmin - 1, ymin - 1, xmax, ymax), difficult))
    filename = root.findtext("filename")
    return VocAnnotation(filename.strip() if filename and filename.strip() else None, width, height, objects)


def voc_xml(filename: str, width: int, height: int, objects: list[VocObject], database: str) -> str:
    """The text of a Pascal VOC annotation of a `width` x `height` pixel image (3 channels).

    Each VocObject.box (continuous pixels) is written 1-based inclusive: xmin = x_min + 1, xmax = x_max.
    """
    body = "".join(
        f"  <object>\n    <name>{escape(o.name)}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>0</truncated>\n    <difficult>{int(o.difficult)}</difficult>\n"
        f"    <bndbox>\n      <xmin>{o.box[0] + 1:g}</xmin>\n      <ymin>{o.box[1] + 1:g}</ymin>\n"
        f"      <xmax>{o.box[2]:g}</xmax>\n      <ymax>{o.box[3]:g}</ymax>\n    </bndbox>\n  </object>\n"
        for o in objects
    )
    return (
        f"<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{escape(filename)}</filename>\n"
        f"  <source><database>{escape(database)}</database></source>\n"
        f"  <size>\n    <width>{width}</width>\n    <height>{height}</height>\n    <depth>3</depth>\n  </size>\n"
        f"  <segmented>0</segmented>\n{body}</annotation>\n"
    )


def _voc_image(image_dir: Path, image_id: str, filename: str | None) -> Path:
    candidates = ([image_dir / filename] if filename else []) + [image_dir / f"{image_id}{s}" for s in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), candidates[0])


def load_voc(root: Path) -> DatasetIndex:
    """Read a Pascal VOC folder: Annotations/*.xml, JPEGImages/, ImageSets/Main/{train,val,test}.txt."""
    root = _existing_dir(root)
    declared = read_labels(root / "labels.txt")
    issues: list[DatasetIssue] = []
    parsed: dict[str, list] = {}
    for split in SPLITS:
        parsed[split] = []
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            issues += _missing_split(list_file, split, "split list")
            continue
        ids = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        for image_id in ids:
            xml = root / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                issues.append(DatasetIssue("missing annotation", xml, f"listed in {list_file.name}", split))
                continue
            try:
                parsed[split].append((image_id, xml, read_voc(xml)))
            except MalformedAnnotation as exc:
                issues.append(DatasetIssue("malformed annotation", xml, exc.detail, split))
    names = {o.name for entries in parsed.values() for _, _, annotation in entries for o in annotation.objects}
    classes = declared if declared is not None else sorted(names)
    label_of = {name: i for i, name in enumerate(classes)}
    splits: dict[str, list] = {}
    for split, entries in parsed.items():
        records = []
        for image_id, xml, annotation in entries:
            objects = annotation.objects
            unknown = sorted({o.name for o in objects if o.name not in label_of})
            if unknown:
                issues += [
                    DatasetIssue("unknown label", xml, f"label '{name}' is not in labels.txt", split)
                    for name in unknown
                ]
                continue
            records.append(
                DetectionRecord(
                    _voc_image(root / "JPEGImages", image_id, annotation.filename),
                    annotation.width,
                    annotation.height,
                    np.array([o.box for o in objects], np.float32).reshape(-1, 4),
                    np.array([label_of[o.name] for o in objects], np.int32),
                    np.array([o.difficult for o in objects], bool),
                )
            )
        splits[split] = records
    return DatasetIndex("detection", root, list(classes), splits, issues)


# ---------------------------------------------------------------- COCO


def _coco_file(root: Path, split: str) -> Path:
    candidates = [root / "annotations" / f"{split}.json", root / "annotations" / f"instances_{split}.json"]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _coco_image(root: Path, split: str, file_name: str) -> Path:
    candidates = [root / "images" / split / file_name, root / "images" / file_name, root / file_name]
    return next((c for c in candidates if c.is_file()), candidates[1])


def _read_coco_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedAnnotation(path, f"not valid json ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise MalformedAnnotation(path, "no 'images' list")
    for key in ("images", "annotations", "categories"):
        entries = data.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise MalformedAnnotation(path, f"'{key}' is not a list of objects")
    return data


def _coco_records(root: Path, split: str, path: Path, data: dict, label_of: dict[int, int]):
    """Records and issues of one COCO split file."""
    records, issues = [], []
    by_image: dict = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    known_ids = {img.get("id") for img in data["images"]}
    for image_id in sorted(set(by_image) - known_ids, key=str):
        issues.append(DatasetIssue("malformed annotation", path, f"annotations for unknown image id {image_id}", split))
    for img in sorted(data["images"], key=lambda i: str(i.get("id"))):
        try:
            file_name, width, height = str(img["file_name"]), int(img["width"]), int(img["height"])
            boxes, labels, crowd, unknown = [], [], [], set()
            for ann in by_image.get(img["id"], []):
                x, y, w, h = (float(v) for v in ann["bbox"])
                if ann.get("category_id") not in label_of:
                    unknown.add(ann.get("category_id"))
                    continue
                boxes.append([x, y, x + w, y + h])
                labels.append(label_of[ann["category_id"]])
                crowd.append(bool(ann.get("iscrowd", 0)))  # an ignore region, like VOC's difficult
        except (KeyError, TypeError, ValueError) as exc:
            bad = f"image {img.get('id')!r}: bad field {exc}"
            issues.append(DatasetIssue("malformed annotation", path, bad, split))
            continue
        image = _coco_image(root, split, file_name)
        if unknown:  # named by image, so that a skip counts records
            issues += [
                DatasetIssue(
                    "unknown label", image, f"category id {c} is not among the categories of {path.name}", split
                )
                for c in sorted(unknown, key=str)
            ]
            continue
        records.append(
            DetectionRecord(
                image,
                width,
                height,
                np.array(boxes, np.float32).reshape(-1, 4),
                np.array(labels, np.int32),
                np.array(crowd, bool),
            )
        )
    return records, issues


def load_coco(root: Path) -> DatasetIndex:
    """Read `root/annotations/{train,val,test}.json` (COCO instances); images under root/images/ or root."""
    root = _existing_dir(root)
    issues: list[DatasetIssue] = []
    loaded: dict[str, tuple[Path, dict]] = {}
    for split in SPLITS:
        path = _coco_file(root, split)
        if not path.is_file():
            issues += _missing_split(path, split, "annotation file")
            continue
        try:
            loaded[split] = (path, _read_coco_json(path))
        except MalformedAnnotation as exc:
            issues.append(DatasetIssue("malformed annotation", path, exc.detail, split))
    categories: dict[int, str] = {}
    for split, (path, data) in loaded.items():
        for cat in data.get("categories", []):
            cat_id, name = (cat.get("id"), cat.get("name")) if isinstance(cat, dict) else (None, None)
            if not isinstance(cat_id, int) or not isinstance(name, str):
                issues.append(DatasetIssue("malformed annotation", path, f"bad category {cat!r}", split))
            elif categories.setdefault(cat_id, name) != name:
                clash = f"category id {cat_id} is '{name}' here but '{categories[cat_id]}' elsewhere"
                issues.append(DatasetIssue("malformed annotation", path, clash, split))
    ids = sorted(categories)
    label_of = {cat_id: i for i, cat_id in enumerate(ids)}
    splits: dict[str, list] = {split: [] for split in SPLITS}
    for split, (path, data) in loaded.items():
        splits[split], found = _coco_records(root, split, path, data, label_of)
        issues += found
    return DatasetIndex("detection", root, [categories[i] for i in ids], splits, issues)


# ---------------------------------------------------------------- dispatch

_READERS = {"imagefolder": load_image_folder, "voc": load_voc, "coco": load_coco}


def detect_format(root: Path) -> str:
    """voc when there is an Annotations/ folder, coco when annotations/*.json, else imagefolder."""
    root = Path(root)
    if (root / "Annotations").is_dir():
        return "voc"
    if (root / "annotations").is_dir() and any((root / "annotations").glob("*.json")):
        return "coco"
    return "imagefolder"


def load_dataset(root: Path, task: str, fmt: str = "auto") -> DatasetIndex:
    """Read a data set in format `fmt` (auto, imagefolder, voc, coco) for `task` (classification, detection)."""
    if task not in ("classification", "detection"):
        raise ConfigError(f"task '{task}' is not among: classification, detection")
    if fmt != "auto" and fmt not in _READERS:
        raise DatasetError(
            f"data set format '{fmt}' is not among the following formats: auto, " + ", ".join(sorted(_READERS))
        )
    root = _existing_dir(root)
    chosen = detect_format(root) if fmt == "auto" else fmt
    if FORMAT_TASKS[chosen] != task:
        found = " (detected)" if fmt == "auto" else ""
        raise DatasetError(
            f"{root}: format '{chosen}'{found} holds {FORMAT_TASKS[chosen]} data, but the task is {task}"
        )
    return _READERS[chosen](root)
