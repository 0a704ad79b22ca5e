"""The data set check: find what would break or silently skew training, then fail or skip by policy.

It reports missing, corrupt or truncated images, image sizes that differ from the annotation,
boxes outside the image (by more than 1 px) or degenerate, labels that are not classes,
files the reader could not use (DatasetIndex.issues: also files that are not images), classes
with no training sample (a warning under policy skip) and empty splits. Train and val must
not be empty; an empty test split is only a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from training.datasets.records import SPLITS, DatasetIndex, DetectionRecord, Record
from training.errors import DatasetError

Policy = Literal["fail", "skip"]
BOX_TOLERANCE_PX = 1.0
REQUIRED_SPLITS = ("train", "val")
_SHOWN_FILES = 3
_PLURALS = {
    "box outside image": "boxes outside image",
    "degenerate box": "degenerate boxes",
    "size mismatch": "size mismatches",
    "empty split": "empty splits",
    "class without training samples": "classes without training samples",
}


def _plural(kind: str, count: int) -> str:
    if count == 1:
        return f"1 {kind}"
    return f"{count} {_PLURALS.get(kind, kind + 's')}"


@dataclass
class CheckReport:
    """What the check found: problems as (kind, file, detail), counts per kind, records skipped, warnings."""

    policy: str
    checked: int = 0
    split_sizes: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, path: Path | str, detail: str) -> None:
        self.problems.append((kind, str(path), detail))
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def describe(self, kinds: list[str] | None = None) -> str:
        """One line: each problem kind with its count and the first few files."""
        parts = []
        for kind in kinds if kinds is not None else self.counts:
            found = [(f, d) for k, f, d in self.problems if k == kind]
            shown = ", ".join(f"{f} ({d})" for f, d in found[:_SHOWN_FILES])
            more = f" and {len(found) - _SHOWN_FILES} more" if len(found) > _SHOWN_FILES else ""
            parts.append(f"{_plural(kind, len(found))}: {shown}{more}")
        return "; ".join(parts)

    def summary(self) -> str:
        sizes = "/".join(str(self.split_sizes.get(s, 0)) for s in SPLITS)
        lines = [
            f"data set check (policy={self.policy}): {self.checked} records checked, "
            f"{len(self.problems)} problems, {self.skipped} skipped; kept train/val/test = {sizes}"
        ]
        for kind, count in self.counts.items():
            lines.append(f"  {_plural(kind, count)}")
            for k, f, d in [p for p in self.problems if p[0] == kind][:_SHOWN_FILES]:
                lines.append(f"    {f}: {d}")
            if count > _SHOWN_FILES:
                lines.append(f"    ... and {count - _SHOWN_FILES} more")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "ok": self.ok,
            "checked": self.checked,
            "split_sizes": dict(self.split_sizes),
            "counts": dict(self.counts),
            "skipped": self.skipped,
            "warnings": list(self.warnings),
            "problems": [{"kind": k, "file": f, "detail": d} for k, f, d in self.problems],
        }


def _image_problems(path: Path, decode: bool) -> tuple[list[tuple[str, str]], tuple[int, int] | None]:
    """Problems of one image file as (kind, detail), and its (height, width) when decoded."""
    if not path.is_file():
        return [("missing image", "file not found")], None
    with open(path, "rb") as f:
        if decode:
            data = f.read()
            head, tail = data[:8], data[-64:]
        else:
            head = f.read(8)
            f.seek(max(path.stat().st_size - 64, 0))
            tail = f.read()
    if not head:
        return [("corrupt image", "empty file")], None
    if head[:2] == b"\xff\xd8" and not tail.rstrip(b"\x00").endswith(b"\xff\xd9"):
        # libjpeg decodes a cut-off JPEG without complaint, filling the rest with grey
        return [("corrupt image", "truncated JPEG: no end-of-image marker FFD9")], None
    if head == b"\x89PNG\r\n\x1a\n" and b"IEND" not in tail:
        return [("corrupt image", "truncated PNG: no IEND chunk")], None
    if not decode:
        return [], None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return [("corrupt image", "cannot be decoded")], None
    return [], img.shape[:2]


def _annotation_problems(
    record: DetectionRecord, classes: list[str], shape: tuple[int, int] | None
) -> list[tuple[str, str]]:
    """Problems of one detection record's size, boxes and labels as (kind, detail)."""
    w, h = record.width, record.height
    if w <= 0 or h <= 0:
        return [("malformed annotation", f"image size {w}x{h}")]
    if shape is not None and shape != (h, w):
        return [("size mismatch", f"annotation says {w}x{h}, image is {shape[1]}x{shape[0]}")]
    boxes, labels = np.asarray(record.boxes, np.float64), np.asarray(record.labels)
    if boxes.size == 0 and labels.size == 0:
        return []
    if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != (len(boxes),):
        return [("malformed annotation", f"boxes of shape {boxes.shape} and labels of shape {labels.shape}")]
    found = []
    for i, ((x0, y0, x1, y1), label) in enumerate(zip(boxes, labels)):
        name = classes[label] if 0 <= label < len(classes) else None
        what = f"box {i} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] ({name or label}) in a {w}x{h} image"
        if name is None:
            found.append(("unknown label", f"label id {label} is not among the {len(classes)} classes"))
        if not np.isfinite([x0, y0, x1, y1]).all() or x1 <= x0 or y1 <= y0:
            found.append(("degenerate box", what))
        elif x0 < -BOX_TOLERANCE_PX or y0 < -BOX_TOLERANCE_PX or x1 > w + BOX_TOLERANCE_PX or y1 > h + BOX_TOLERANCE_PX:
            found.append(("box outside image", what))
    return found


def classes_without_training_samples(classes: list[str], train: list[Record]) -> list[str]:
    """Class names with no image (classification) or no non-difficult object (detection) in `train`."""
    seen: set[int] = set()
    for record in train:
        if isinstance(record, DetectionRecord):
            seen.update(int(label) for label, hard in zip(record.labels, record.difficult) if not hard)
        else:
            seen.add(int(record.label))
    return [name for i, name in enumerate(classes) if i not in seen]


def _record_problems(record: Record, classes: list[str], decode: bool) -> list[tuple[str, str]]:
    found, shape = _image_problems(Path(record.path), decode)
    if isinstance(record, DetectionRecord):
        if not any(kind == "missing image" or kind == "corrupt image" for kind, _ in found):
            found += _annotation_problems(record, classes, shape)
    elif not 0 <= record.label < len(classes):
        found.append(("unknown label", f"label id {record.label} is not among the {len(classes)} classes"))
    return found


def check_dataset(
    index: DatasetIndex, policy: Policy, decode: bool = True, every_class_trained: bool = True
) -> tuple[DatasetIndex, CheckReport]:
    """Check every record (decoding images when `decode`); fail on any problem, or skip the records at fault.

    With `every_class_trained` a class without a training sample is a problem (a warning under
    "skip"); a data set that is a slice to be merged (a capture import) checks its records only.

    Returns the index that training should use (without the skipped records) and the report.
    Raises DatasetError naming problem kinds, counts and files when policy is "fail" and anything
    is wrong, or when train or val is empty (also after skipping).
    """
    if policy not in ("fail", "skip"):
        raise DatasetError(f"data set check policy '{policy}' is not among: fail, skip")
    report = CheckReport(policy)
    for issue in index.issues:
        where = f" [{issue.split}]" if issue.split else ""
        report.add(issue.kind, issue.path, issue.detail + where)
    report.skipped = len({issue.path for issue in index.issues if issue.kind != "empty split"})
    reported_empty = {issue.split for issue in index.issues if issue.kind == "empty split"}
    kept: dict[str, list[Record]] = {}
    for split in SPLITS:
        kept[split] = []
        for record in index.split(split):
            report.checked += 1
            found = _record_problems(record, index.classes, decode)
            for kind, detail in found:
                report.add(kind, record.path, detail)
            if found:
                report.skipped += 1
            else:
                kept[split].append(record)
    empty = [s for s in REQUIRED_SPLITS if not (kept[s] if policy == "skip" else index.split(s))]
    for split in empty:
        if split not in reported_empty:
            after = " after skipping" if policy == "skip" and index.split(split) else ""
            report.add("empty split", index.root, f"split '{split}' has no records{after}")
    missing = classes_without_training_samples(index.classes, kept["train"]) if every_class_trained else []
    if missing and policy == "fail":
        for name in missing:
            report.add(
                "class without training samples", index.root, f"class '{name}' has no usable sample in the train split"
            )
    elif missing:
        report.warnings.append(
            f"{len(missing)} class(es) without training samples after skipping: "
            f"{', '.join(missing)} (the model still has an output for each)"
        )
    if not kept["test"]:
        report.warnings.append("split 'test' is empty: there is no held-out test set")
    report.split_sizes = {s: len(kept[s]) for s in SPLITS}
    if policy == "fail" and report.problems:
        raise DatasetError(f"data set check failed (policy=fail): {report.describe()}")
    if policy == "skip" and report.counts.get("empty split"):
        others = [k for k in report.counts if k != "empty split"]
        skipped = f" after skipping {report.skipped} (" + report.describe(others) + ")" if others else ""
        raise DatasetError(f"data set check failed (policy=skip): {report.describe(['empty split'])}{skipped}")
    checked = DatasetIndex(index.task, index.root, list(index.classes), kept)
    return checked, report
