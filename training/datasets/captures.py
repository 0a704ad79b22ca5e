"""Reading a device's capture folder (written by the edge runner's `capture:`; format `lensops.capture/1`).

The folder is a contract between the device (edge/capture.py writes it) and training (this module
reads it without importing edge code):

    labels.txt                       the serving model's class names, one a line, in its order
    predictions/<id>.json            one sidecar per finished capture (written last, removed first)
    JPEGImages/<id>.jpg              detection: the frame as captured (BGR JPEG)
    Annotations/<id>.xml             detection: the predicted boxes as Pascal VOC (1-based pixels, + <score>)
    ImageSets/Main/{train,val}.txt   detection: the device's own split lists (ignored here)
    {train,val}/<label>/<id>.jpg     classification: the frame filed under the top predicted label

<id> is `<UTC YYYYmmddTHHMMSSffffff>Z-<source>-<counter>`. A sidecar holds: schema
("lensops.capture/1"), id, split (the device's, ignored here), reason (below_confidence, random,
manual), source, time (UTC ISO 8601 with milliseconds, when the capture was saved, a few ms after
the frame was read), task, width, height, model ({name, version, variant}), predictions (as in the
inference payload: label, score, normalised box for detection), files (the image and annotation,
relative to the folder) and bytes. A frame without a sidecar is unfinished and is ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from training.datasets.formats import read_labels
from training.errors import DatasetError

SCHEMA = "lensops.capture/1"


@dataclass(frozen=True)
class CapturedFrame:
    """One finished capture: where its files are and what the device knew about it."""

    id: str
    source: str
    time: datetime
    task: str
    width: int
    height: int
    image: Path
    annotation: Optional[Path]  # detection: the pre-labels as VOC
    label: Optional[str]  # classification: the top predicted label (its folder)
    model: dict
    reason: str
    predictions: list = field(default_factory=list, compare=False)


@dataclass
class CaptureFolder:
    """A read capture folder: its task, the serving model's classes, finished captures (oldest first)
    and the ids of captures with files missing."""

    root: Path
    task: str
    labels: list[str]
    frames: list[CapturedFrame]  # oldest first
    incomplete: list[str]  # ids whose sidecar lists files that are missing (copied while the device wrote?)


def _field(sidecar: Path, data: dict, name: str, kind: type):
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DatasetError(f"{sidecar}: field '{name}' is missing or not a {kind.__name__} (got {value!r})")
    return value


def _parse_time(sidecar: Path, text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DatasetError(f"{sidecar}: field 'time' is not an ISO 8601 time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _read_sidecar(root: Path, sidecar: Path) -> tuple[CapturedFrame, bool]:
    """The capture a sidecar describes, and whether all its files are there."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{sidecar}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{sidecar}: field 'schema' is {found!r}, expected '{SCHEMA}'")
    capture_id = _field(sidecar, data, "id", str)
    if capture_id != sidecar.stem:
        raise DatasetError(f"{sidecar}: field 'id' is {capture_id!r}, but the file is named {sidecar.name}")
    task = _field(sidecar, data, "task", str)
    if task not in ("classification", "detection"):
        raise DatasetError(f"{sidecar}: field 'task' is {task!r}, not classification or detection")
    files = _field(sidecar, data, "files", list)
    if not all(isinstance(f, str) and ".." not in Path(f).parts and not Path(f).is_absolute() for f in files):
        raise DatasetError(f"{sidecar}: field 'files' must list paths inside the capture folder (got {files!r})")
    image = next((f for f in files if f.endswith(".jpg")), None)
    if image is None:
        raise DatasetError(f"{sidecar}: field 'files' lists no .jpg image")
    annotation = next((f for f in files if f.endswith(".xml")), None)
    if task == "detection" and annotation is None:
        raise DatasetError(f"{sidecar}: field 'files' lists no .xml annotation (a detection capture has one)")
    label = Path(image).parent.name if task == "classification" else None
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise DatasetError(f"{sidecar}: field 'model' is not an object")
    predictions = data.get("predictions") or []
    frame = CapturedFrame(
        id=capture_id,
        source=_field(sidecar, data, "source", str),
        time=_parse_time(sidecar, _field(sidecar, data, "time", str)),
        task=task,
        width=_field(sidecar, data, "width", int),
        height=_field(sidecar, data, "height", int),
        image=root / image,
        annotation=root / annotation if annotation else None,
        label=label,
        model={k: str(v) for k, v in model.items()},
        reason=str(data.get("reason", "")),
        predictions=predictions,
    )
    return frame, all((root / f).is_file() for f in files)


def read_capture_folder(root: Path, task: Optional[str] = None) -> CaptureFolder:
    """Every finished capture of `root`, oldest first. One clear error naming the file and field when a
    sidecar is malformed, when captures of both tasks are mixed, or when `task` is given and differs."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"capture folder not found: {root}")
    sidecars = sorted(p for p in (root / "predictions").glob("*.json") if not p.name.startswith("."))
    if not sidecars:
        raise DatasetError(f"{root}: no captures (no predictions/*.json; is this a device's capture folder?)")
    labels = read_labels(root / "labels.txt")
    if labels is None:
        raise DatasetError(f"{root / 'labels.txt'}: missing (the device writes it with the first capture)")
    frames, incomplete = [], []
    for sidecar in sidecars:
        frame, complete = _read_sidecar(root, sidecar)
        if task is not None and frame.task != task:
            raise DatasetError(f"{sidecar}: a {frame.task} capture, but the task is {task}")
        if frames and frame.task != frames[0].task:
            raise DatasetError(f"{sidecar}: a {frame.task} capture among {frames[0].task} captures")
        if frame.label is not None and frame.label not in labels:
            raise DatasetError(f"{frame.image}: label '{frame.label}' is not in {root / 'labels.txt'}")
        (frames if complete else incomplete).append(frame if complete else frame.id)
    if not frames:
        raise DatasetError(f"{root}: none of the {len(sidecars)} captures has all its files")
    frames.sort(key=lambda f: (f.time, f.id))
    return CaptureFolder(root, frames[0].task, labels, frames, incomplete)
