"""A device's capture folder -> a training data set (Pascal VOC for detection, ImageFolder for classification).

Steps, all deterministic (same folder and options, same data set):
1. Read the finished captures (training.datasets.captures), oldest first.
2. Drop duplicates: a frame whose pixels equal, or whose difference hash is within
   `near_duplicate_bits` of, a frame already kept (or an image of the data set merged into) is left
   out, so no near-identical pair survives anywhere, in one split or across splits.
3. Split by source and time: each source's frames form time segments (a new segment after a gap of
   more than `segment_gap_s`, or once a segment spans `segment_max_s`); whole segments go to one split.
   Per source, the newest segments go to test, the next newest to val, the rest to train, until test
   and val hold about their fractions of the source's frames (test on the future, as a model
   meets it). A source with one segment goes to train; with two, the newer goes to val.
4. Labels: the device's predictions (pre-labels), or a reviewed folder's labels (training.datasets.review)
   that replace them; frames the reviewer deleted or marked are dropped. Unreviewed captures never go
   to test: their labels are the production model's own output, so a test on them would grade
   production against itself (`promote` compares candidate and production on test). Without a
   review they go to train and val only (the newest to val); the test split is then the merged data
   set's, or empty.
5. Optionally merge into an existing data set of the same task (its files and splits are kept;
   captures already in it are left as they are), then write to a temp folder, check it with the
   data set check (policy fail) and rename it into place: nothing half-written is left behind.

`captures.json` in the result records, per imported frame, its source, time, segment, split,
model and whether its labels are reviewed, plus what was dropped and why (a DROP_REASONS code and a
sentence).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from common.files import atomic_dir
from training.datasets.captures import CapturedFrame, CaptureFolder, read_capture_folder
from training.datasets.check import check_dataset
from training.datasets.dedup import NEAR_DUPLICATE_BITS, DuplicateFinder, image_hash
from training.datasets.formats import FORMAT_TASKS, detect_format, load_dataset, read_labels, voc_xml
from training.datasets.review import Review, export_review, read_checked_voc, read_review
from training.errors import DatasetError
from training.transforms import read_bgr

IMPORT_SCHEMA = "lensops.capture-import/2"  # /2: a dropped frame is {reason, detail}, was a sentence
PROVENANCE = "captures.json"
# Why a capture was left out: stable codes (what counts and scripts read) and what they mean.
DROP_REASONS = {
    "incomplete": "incomplete capture (files missing)",
    "in-merged-set": "already in the merged data set",
    "exact-duplicate": "exact duplicate of a kept frame",
    "near-duplicate": "near duplicate of a kept frame",
    "deleted-in-review": "deleted in review",
    "marked-in-review": "marked in review",
}


@dataclass(frozen=True)
class DroppedFrame:
    """Why a capture was left out: `reason`, one of DROP_REASONS, and `detail`, a sentence for people."""

    reason: str
    detail: str

    @classmethod
    def of(cls, reason: str, detail: Optional[str] = None) -> "DroppedFrame":
        return cls(reason, detail or DROP_REASONS[reason])


@dataclass(frozen=True)
class ImportOptions:
    """How captures are deduplicated and split (the CLI's --near-duplicate-bits, --segment-*-s, --*-fraction)."""

    near_duplicate_bits: int = NEAR_DUPLICATE_BITS
    segment_gap_s: float = 60.0  # a pause this long starts a new segment
    segment_max_s: float = 600.0  # a segment is cut once it spans this long
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.segment_gap_s <= 0 or self.segment_max_s <= 0:
            raise DatasetError("segment_gap_s and segment_max_s must be > 0")
        if not (
            0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1
        ):
            raise DatasetError(
                f"val_fraction {self.val_fraction} and test_fraction {self.test_fraction} "
                "must be in [0, 1) and leave room for train"
            )


# ---------------------------------------------------------------- dedup and split (pure)


def deduplicate(
    frames: list[CapturedFrame], max_bits: int, known: Optional[DuplicateFinder] = None
) -> tuple[list[CapturedFrame], dict[str, DroppedFrame]]:
    """(kept frames, {dropped id: exact-/near-duplicate 'of X'}), keeping the oldest of each group."""
    finder = known or DuplicateFinder(max_bits)
    kept, dropped = [], {}
    for frame in frames:
        h = image_hash(read_bgr(frame.image))
        found = finder.match(h)
        if found:
            dropped[frame.id] = DroppedFrame.of(f"{found[0]}-duplicate", f"{found[0]} duplicate of {found[1]}")
        else:
            finder.keep(frame.id, h)
            kept.append(frame)
    return kept, dropped


def time_segments(frames: list[CapturedFrame], gap_s: float, max_s: float) -> list[list[CapturedFrame]]:
    """Per source, runs of frames without a pause longer than `gap_s` and spanning less than `max_s`."""
    segments: list[list[CapturedFrame]] = []
    for source in sorted({f.source for f in frames}):
        current: list[CapturedFrame] = []
        for frame in sorted((f for f in frames if f.source == source), key=lambda f: (f.time, f.id)):
            if current and (
                (frame.time - current[-1].time).total_seconds() > gap_s
                or (frame.time - current[0].time).total_seconds() >= max_s
            ):
                segments.append(current)
                current = []
            current.append(frame)
        if current:
            segments.append(current)
    return segments


def assign_splits(segments: list[list[CapturedFrame]], val_fraction: float, test_fraction: float) -> list[str]:
    """The split of each segment: per source, newest to test, then val, the rest (at least the oldest) train."""
    splits = ["train"] * len(segments)
    by_source: dict[str, list[int]] = {}
    for i, segment in enumerate(segments):
        by_source.setdefault(segment[0].source, []).append(i)
    for order in by_source.values():  # oldest first
        total = sum(len(segments[i]) for i in order)
        left = list(order)
        for split, fraction, reserve in (("test", test_fraction, 2), ("val", val_fraction, 1)):
            if fraction <= 0:
                continue
            taken = 0
            while len(left) > reserve and (taken == 0 or taken < fraction * total):
                i = left.pop()
                splits[i] = split
                taken += len(segments[i])
    return splits


# ---------------------------------------------------------------- the data set


def _segment_name(segment: list[CapturedFrame]) -> str:
    return f"{segment[0].source}@{segment[0].time.isoformat(timespec='milliseconds')}"


def _base_images(base: Path, task: str) -> tuple[list[str], list[tuple[str, Path]], set[str]]:
    """(classes, named image paths, record ids) of the data set being merged into."""
    fmt = detect_format(base)
    if FORMAT_TASKS[fmt] != task:
        raise DatasetError(f"{base}: a {FORMAT_TASKS[fmt]} data set ({fmt}); the captures are {task}")
    index = load_dataset(base, task, fmt)
    if fmt == "coco":
        raise DatasetError(f"{base}: COCO data sets cannot be merged into; convert it to Pascal VOC")
    declared = read_labels(base / "labels.txt")
    images = [(str(r.path.relative_to(base)), r.path) for split in index.splits.values() for r in split]
    return declared or list(index.classes), images, {p.stem for _, p in images}


def _labels_of(frame: CapturedFrame, review: Optional[Review], classes: list[str]):
    """Objects (detection) or the label (classification) of a kept frame, checked against `classes`."""
    if frame.task == "detection":
        if review is None:
            return read_checked_voc(frame.annotation, classes)[2]  # an unknown label is an error naming file and label
        unknown = sorted({o.name for o in review.boxes[frame.id] if o.name not in classes})
        if unknown:
            raise DatasetError(
                f"reviewed annotation of {frame.id}: label '{unknown[0]}' is not a class of "
                f"the merged data set (classes: {', '.join(classes)})"
            )
        return review.boxes[frame.id]
    label = review.labels[frame.id] if review is not None else frame.label
    if label not in classes:
        raise DatasetError(
            f"{frame.image}: label '{label}' is not a class of the data set (classes: {', '.join(classes)})"
        )
    return label


def _write_frame(tmp: Path, frame: CapturedFrame, split: str, labels) -> None:
    if frame.task == "detection":
        shutil.copyfile(frame.image, tmp / "JPEGImages" / f"{frame.id}.jpg")
        (tmp / "Annotations" / f"{frame.id}.xml").write_text(
            voc_xml(f"{frame.id}.jpg", frame.width, frame.height, labels, "LensOps capture"), encoding="utf-8"
        )
        with open(tmp / "ImageSets" / "Main" / f"{split}.txt", "a", encoding="utf-8") as f:
            f.write(f"{frame.id}\n")
    else:
        (tmp / split / labels).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(frame.image, tmp / split / labels / f"{frame.id}.jpg")


def _previous_provenance(base: Optional[Path]) -> dict:
    if base is None or not (base / PROVENANCE).is_file():
        return {}
    try:
        return dict(json.loads((base / PROVENANCE).read_text())["frames"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{base / PROVENANCE}: not a readable import record ({exc})") from None


def plan_import(
    capture: Path, options: ImportOptions, merge: Optional[Path] = None, task: Optional[str] = None
) -> tuple[CaptureFolder, list[CapturedFrame], dict[str, DroppedFrame], list[str]]:
    """(capture folder, frames kept after dedup (oldest first), {dropped id: why}, classes)."""
    folder = read_capture_folder(capture, task)
    classes = list(folder.labels)
    finder = DuplicateFinder(options.near_duplicate_bits)
    dropped = {i: DroppedFrame.of("incomplete") for i in folder.incomplete}
    frames = folder.frames
    if merge is not None:
        classes, images, base_ids = _base_images(Path(merge), folder.task)
        dropped.update({f.id: DroppedFrame.of("in-merged-set") for f in frames if f.id in base_ids})
        frames = [f for f in frames if f.id not in base_ids]
        finder.add_all(images)
    kept, duplicates = deduplicate(frames, options.near_duplicate_bits, finder)
    dropped.update(duplicates)
    return folder, kept, dropped, classes


def split_frames(
    frames: list[CapturedFrame], options: ImportOptions, reviewed: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """({frame id: split}, {frame id: segment name}) by source and time; test only when `reviewed`."""
    segments = time_segments(frames, options.segment_gap_s, options.segment_max_s)
    test_fraction = options.test_fraction if reviewed else 0.0  # device labels would grade production by itself
    split_of, segment_of = {}, {}
    for segment, split in zip(segments, assign_splits(segments, options.val_fraction, test_fraction)):
        for frame in segment:
            split_of[frame.id], segment_of[frame.id] = split, _segment_name(segment)
    return split_of, segment_of


def check_out_path(out: Path, capture: Path, reviewed: Optional[Path] = None, merge: Optional[Path] = None) -> None:
    """Refuse an `out` that overlaps an input: `out` is replaced as a whole, so an input equal to it,
    inside it or holding it would be overwritten or deleted (only out == merge is fine: merge is copied first)."""
    target = Path(out).resolve()
    for option, path in (("--capture", capture), ("--reviewed", reviewed), ("--merge", merge)):
        if path is None:
            continue
        given = Path(path).resolve()
        if given == target and option != "--merge":
            raise DatasetError(f"--out {out} is the {option} folder {path}: write the data set elsewhere")
        relation = "is inside" if given in target.parents else "holds" if target in given.parents else None
        if relation:
            raise DatasetError(
                f"--out {out} {relation} the {option} folder {path}: --out is replaced as a whole; "
                "write the data set elsewhere"
            )


def import_capture(
    capture: Path,
    out: Path,
    options: ImportOptions = ImportOptions(),
    merge: Optional[Path] = None,
    reviewed: Optional[Path] = None,
    task: Optional[str] = None,
) -> dict:
    """Turn the capture folder `capture` into the data set `out` (replaced atomically); returns the record."""
    out = Path(out)
    check_out_path(out, capture, reviewed, merge)
    folder, kept, dropped, classes = plan_import(capture, options, merge, task)
    review = read_review(reviewed, folder, [f.id for f in kept], classes) if reviewed is not None else None
    if review is not None:
        dropped.update({i: DroppedFrame.of(f"{why}-in-review") for i, why in review.dropped.items()})
        kept = [f for f in kept if f.id in review.kept()]
    split_of, segment_of = split_frames(kept, options, reviewed=review is not None)
    labelled = [(f, _labels_of(f, review, classes)) for f in kept]  # every label checked before writing
    counts = {split: sum(1 for f in kept if split_of[f.id] == split) for split in ("train", "val", "test")}
    empty = [split for split in ("train", "val") if not counts[split]]
    if merge is None and empty:
        raise DatasetError(
            f"{capture}: the {len(kept)} frames kept form {len(set(segment_of.values()))} time "
            f"segment(s) of {len({f.source for f in kept})} source(s), too few for a "
            f"{' and '.join(empty)} split of their own "
            "(whole segments go to one split); merge them into an existing data set (--merge) "
            "or capture over a longer time"
        )
    provenance = _previous_provenance(Path(merge) if merge is not None else None)
    with atomic_dir(out) as tmp:
        if merge is not None:
            shutil.copytree(merge, tmp, dirs_exist_ok=True)
        if folder.task == "detection":
            for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
                (tmp / sub).mkdir(parents=True, exist_ok=True)
            for split in ("train", "val", "test"):  # appended to below
                listing = tmp / "ImageSets" / "Main" / f"{split}.txt"
                text = listing.read_text(encoding="utf-8") if listing.is_file() else ""
                listing.write_text(text + "\n" if text and not text.endswith("\n") else text, encoding="utf-8")
        for frame, labels in labelled:
            _write_frame(tmp, frame, split_of[frame.id], labels)
            provenance[frame.id] = {
                "source": frame.source,
                "time": frame.time.isoformat(timespec="milliseconds"),
                "segment": segment_of[frame.id],
                "split": split_of[frame.id],
                "model": frame.model,
                "reason": frame.reason,
                "labels": "reviewed" if review is not None else "device",
            }
        (tmp / "labels.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        record = {
            "schema": IMPORT_SCHEMA,
            "capture": str(capture),
            "task": folder.task,
            "merged_into": str(merge) if merge is not None else None,
            "reviewed": str(reviewed) if reviewed is not None else None,
            "options": asdict(options),
            "captures_read": len(folder.frames) + len(folder.incomplete),
            "imported": counts,
            "segments": len(set(segment_of.values())),
            "dropped": {i: asdict(why) for i, why in dropped.items()},
            "frames": provenance,
        }
        (tmp / PROVENANCE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        check_dataset(load_dataset(tmp, folder.task), "fail", every_class_trained=False)  # a slice to merge
    return record


def export_for_review(
    capture: Path, out: Path, options: ImportOptions = ImportOptions(), merge: Optional[Path] = None
) -> dict:
    """Write the frames an import would keep (deduplicated) for review into `out` (replaced atomically)."""
    check_out_path(out, capture, merge=merge)
    folder, kept, dropped, classes = plan_import(capture, options, merge)
    with atomic_dir(Path(out)) as tmp:
        summary = export_review(folder, [f.id for f in kept], tmp, classes)
    return {**summary, "dropped": len(dropped)}
