"""Frames saved for retraining, chosen by policy, in a layout the training data check reads, on bounded disk.

Detection: Pascal VOC (`JPEGImages/<id>.jpg`, `Annotations/<id>.xml` with the predicted boxes in
pixels, `ImageSets/Main/{train,val}.txt`). Classification: ImageFolder (`{train,val}/<label>/<id>.jpg`,
filed under the top predicted label). Both: `labels.txt` and `predictions/<id>.json` (everything
the model said, with scores, model and source). Every `val_every`-th capture goes to `val`, as the
data check wants train and val. Each file is written to a hidden temp name and renamed, and the
sidecar JSON comes last: a capture without one is unfinished and removed at the next start.

The folder is a contract, format `lensops.capture/1`: training reads it without importing this
module (training/datasets/captures.py; `lensops data import-capture`). A sidecar holds schema, id
(`<UTC time>Z-<source>-<counter>`), split, reason, source, time (UTC, when saved), task, width,
height, model ({name, version, variant}), predictions, files (relative paths) and bytes. Change it
only together with that reader.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.files import write_bytes
from edge.capture_files import CAPTURE_ID, list_captured, remove_unfinished, voc_xml
from edge.messages import Prediction

log = logging.getLogger(__name__)

Task = Literal["classification", "detection"]


class CapturePolicy(BaseModel):
    """Which frames to keep. Either rule is enough; both may be set."""

    model_config = ConfigDict(extra="forbid")

    below_confidence: Optional[float] = Field(
        None,
        gt=0,
        le=1,
        description=(
            "keep a frame the model is unsure of: top score (classification) or lowest box score (detection) "
            "below this; frames without predictions are not 'unsure'"
        ),
    )
    random_rate: float = Field(0.0, ge=0, le=1, description="keep this fraction of all other frames at random")
    seed: Optional[int] = Field(None, description="seed of the random choice (tests, reproducible runs)")

    @model_validator(mode="after")
    def _some_rule(self) -> "CapturePolicy":
        if self.below_confidence is None and not self.random_rate:
            raise ValueError("capture policy: set below_confidence and/or random_rate (> 0)")
        return self


class CaptureConfig(BaseModel):
    """Where and how much to capture."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(description="capture folder (a data set the training data check reads)")
    task: Task = Field(description="classification (ImageFolder) or detection (Pascal VOC)")
    policy: CapturePolicy
    max_files: Optional[int] = Field(None, ge=1, description="keep at most this many captured frames")
    max_bytes: Optional[int] = Field(None, ge=1, description="keep at most this many bytes of captures")
    val_every: int = Field(5, ge=2, description="one capture in this many goes to the val split")
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality of the saved frames")

    @model_validator(mode="after")
    def _bounded(self) -> "CaptureConfig":
        if self.max_files is None and self.max_bytes is None:
            raise ValueError("capture: set max_files and/or max_bytes, so the disk cannot fill up")
        return self


def confidence(predictions: list[Prediction], task: str) -> Optional[float]:
    """How sure the model was: the top score (classification) or the lowest box score (detection)."""
    scores = [p.score for p in predictions]
    if not scores:
        return None
    return max(scores) if task == "classification" else min(scores)


def _label_problem(label: str, folder: bool) -> Optional[str]:
    """Why a label cannot be a line of labels.txt (or, when `folder`, a class folder's name)."""
    if not label.strip() or label != label.strip() or "\n" in label:
        return f"label {label!r} cannot be a line of labels.txt"
    if folder and (label.startswith(".") or re.search(r"[/\\\x00]", label)):
        return f"label {label!r} cannot be a folder name"
    return None


class Capture:
    """`offer()` every frame with its predictions; the ones the policy picks are saved, the oldest removed."""

    def __init__(self, config: CaptureConfig, rng: Optional[random.Random] = None):
        self.config = config
        self.root = Path(config.dir)
        self._rng = rng or random.Random(config.policy.seed)
        self._lock = threading.Lock()
        self._counter = 0
        self.deleted = 0
        self.root.mkdir(parents=True, exist_ok=True)
        remove_unfinished(self.root)
        self._captures = list_captured(self.root)  # id -> sidecar, oldest first
        labels_file = self.root / "labels.txt"
        self._labels = (
            [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            if labels_file.is_file()
            else []
        )

    @classmethod
    def from_config(cls, config: CaptureConfig) -> "Capture":
        return cls(config)

    def wants(self, predictions: list[Prediction]) -> Optional[str]:
        """Why this frame should be kept ('below_confidence' or 'random'), or None."""
        policy = self.config.policy
        score = confidence(predictions, self.config.task)
        if policy.below_confidence is not None and score is not None and score < policy.below_confidence:
            return "below_confidence"
        if policy.random_rate and self._rng.random() < policy.random_rate:
            return "random"
        return None

    def offer(
        self,
        image: np.ndarray,
        predictions: list[Prediction],
        source_id: str,
        labels: tuple[str, ...] = (),
        model: Optional[dict] = None,
    ) -> Optional[Path]:
        """Save the frame when the policy wants it; the saved image's path, else None.

        `labels` are the model's class names (all of them go to labels.txt); `model` is {name, version, variant}.
        """
        reason = self.wants(predictions)
        return self.save(image, predictions, source_id, labels, model, reason) if reason else None

    def save(
        self,
        image: np.ndarray,
        predictions: list[Prediction],
        source_id: str,
        labels: tuple[str, ...] = (),
        model: Optional[dict] = None,
        reason: str = "manual",
    ) -> Optional[Path]:
        """Save one frame and its predictions, then remove the oldest captures beyond the bound."""
        names = [p.label for p in predictions]
        folder = self.config.task == "classification"
        problems = [why for n in dict.fromkeys([*labels, *names]) if (why := _label_problem(n, folder))]
        if folder and not predictions:
            problems.append("no prediction to file it under")
        if problems:
            log.warning("capture: not saving a frame of %s: %s", source_id, problems[0])
            return None
        with self._lock:
            return self._save(image, predictions, source_id, [*labels, *names], model or {}, reason)

    def stats(self) -> dict:
        with self._lock:
            return {
                "captures": len(self._captures),
                "bytes": sum(c["bytes"] for c in self._captures.values()),
                "deleted": self.deleted,
            }

    # -- writing -----------------------------------------------------------------------------------

    def _save(self, image, predictions, source_id, labels, model, reason) -> Path:
        now = datetime.now(timezone.utc)
        self._counter += 1
        capture_id = f"{now:%Y%m%dT%H%M%S%f}Z-{re.sub(r'[^A-Za-z0-9_.-]', '_', source_id)}-{self._counter:06d}"
        assert CAPTURE_ID.match(capture_id), capture_id
        split = self._next_split()
        jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])[1].tobytes()
        height, width = image.shape[:2]
        if self.config.task == "detection":
            files = {
                f"JPEGImages/{capture_id}.jpg": jpeg,
                f"Annotations/{capture_id}.xml": voc_xml(capture_id, width, height, predictions),
            }
        else:
            top = max(predictions, key=lambda p: p.score)
            files = {f"{split}/{top.label}/{capture_id}.jpg": jpeg}
        new_labels = [name for name in dict.fromkeys(labels) if name not in self._labels]
        if new_labels:  # before the image, so no capture ever names a label labels.txt does not list
            self._labels += new_labels
            write_bytes(self.root / "labels.txt", "".join(f"{n}\n" for n in self._labels).encode())
        for relative, data in files.items():
            write_bytes(self.root / relative, data)
        sidecar = {
            "schema": "lensops.capture/1",
            "id": capture_id,
            "split": split,
            "reason": reason,
            "source": source_id,
            "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "task": self.config.task,
            "width": width,
            "height": height,
            "model": model,
            "predictions": [p.to_dict() for p in predictions],  # {label, score[, box]}, as in the inference payload
            "files": sorted(files),
            "bytes": sum(len(d) for d in files.values()),
        }
        body = json.dumps(sidecar, indent=1, default=float).encode()
        sidecar["bytes"] += len(body)
        write_bytes(self.root / "predictions" / f"{capture_id}.json", body)
        self._captures[capture_id] = {"split": split, "files": sidecar["files"], "bytes": sidecar["bytes"]}
        self._enforce_bound()
        self._write_split_lists()
        return self.root / next(iter(f for f in files if f.endswith(".jpg")))

    def _next_split(self) -> str:
        """val when it holds fewer than 1 in `val_every` of the captures (never the very first one)."""
        counts = Counter(c["split"] for c in self._captures.values())
        if counts["train"] and counts["val"] * self.config.val_every < len(self._captures) + 1:
            return "val"
        return "train"

    def _over_bound(self) -> bool:
        max_files, max_bytes = self.config.max_files, self.config.max_bytes
        total = sum(c["bytes"] for c in self._captures.values())
        return (max_files is not None and len(self._captures) > max_files) or (
            max_bytes is not None and total > max_bytes
        )

    def _enforce_bound(self) -> None:
        """Remove the oldest captures (not the newest, and not the last of a split) until within the bound."""
        while len(self._captures) > 1 and self._over_bound():
            counts = Counter(c["split"] for c in self._captures.values())
            oldest = list(self._captures)[:-1]
            victim = next((i for i in oldest if counts[self._captures[i]["split"]] > 1), oldest[0])
            entry = self._captures.pop(victim)
            (self.root / "predictions" / f"{victim}.json").unlink(missing_ok=True)  # unfinished from now on
            for relative in entry["files"]:
                (self.root / relative).unlink(missing_ok=True)
            self.deleted += 1

    def _write_split_lists(self) -> None:
        if self.config.task != "detection":
            return
        for split in ("train", "val"):
            ids = [i for i, c in self._captures.items() if c["split"] == split]
            write_bytes(self.root / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in ids).encode())
