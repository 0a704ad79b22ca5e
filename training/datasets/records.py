"""The in-memory index every reader produces and every trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np

Task = Literal["classification", "detection"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One classification sample: an image file and its class index."""

    path: Path
    label: int


@dataclass(frozen=True)
class DetectionRecord:
    """One detection sample. Boxes are pixel [x_min, y_min, x_max, y_max] in the original image.

    `difficult` (bool (N,), all False when not given) marks objects a detector may or may not find:
    Pascal VOC's `<difficult>1</difficult>` and COCO's `iscrowd` regions. The VOC mAP ignores them
    (a detection matching one is neither a true nor a false positive; Everingham et al., "The
    PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010, section 4.2); training uses them as
    targets, as GluonCV's VOC and COCO (use_crowd) training does.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray  # float32 (N, 4)
    labels: np.ndarray  # int32 (N,)
    difficult: Optional[np.ndarray] = None  # bool (N,); None means none is

    def __post_init__(self):
        flags = np.zeros(len(self.labels), bool) if self.difficult is None else np.asarray(self.difficult, bool)
        if flags.shape != (len(self.labels),):
            raise ValueError(
                f"{self.path}: {flags.shape[0] if flags.ndim else 0} difficult flags for {len(self.labels)} objects"
            )
        object.__setattr__(self, "difficult", flags)


Record = Union[ImageRecord, DetectionRecord]

# What the data set check reports; readers use the same names for what they find.
PROBLEM_KINDS = (
    "missing image",
    "corrupt image",
    "size mismatch",
    "box outside image",
    "degenerate box",
    "unknown label",
    "missing annotation",
    "malformed annotation",
    "unsupported file",
    "class without training samples",
    "empty split",
)


@dataclass(frozen=True)
class DatasetIssue:
    """A problem a reader found that kept a file out of the index; the data set check reports it."""

    kind: str  # one of PROBLEM_KINDS
    path: Path  # the file at fault (annotation, image or split list)
    detail: str
    split: str | None = None


@dataclass
class DatasetIndex:
    """A whole data set: task, class names (index = label id) and records per split."""

    task: Task
    root: Path
    classes: list[str]
    splits: dict[str, list[Record]] = field(default_factory=dict)
    issues: list[DatasetIssue] = field(default_factory=list)  # found by the reader, see check.py

    def split(self, name: str) -> list[Record]:
        return self.splits.get(name, [])
