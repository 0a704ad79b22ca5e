"""Capture folder -> data set: dedup, split by source and time, merge, review export and read-back, bad input.

Captures are written by the device's own Capture (edge/capture.py), so the tests read the real format;
its clock is replaced so that frames carry the times a test needs.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge.capture
from edge.capture import Capture, CaptureConfig
from edge.messages import Prediction
from lensops.cli import main
from training.datasets.capture_import import ImportOptions, import_capture
from training.datasets.dedup import NEAR_DUPLICATE_BITS, hamming, image_hash
from training.datasets.drawing import CLASSES
from training.datasets.formats import load_dataset
from training.datasets.review import DROP_LABEL
from training.datasets.synth import synth_detection
from training.errors import DatasetError

W, H = 96, 96
T0 = datetime(2026, 11, 22, 8, 0, 0, tzinfo=timezone.utc)


def scene(seed: int) -> np.ndarray:
    """A frame unlike any other seed's: a background and three shapes at random places."""
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    for _ in range(3):
        x, y, r = (int(v) for v in rng.integers([10, 10, 6], [W - 10, H - 10, 20]))
        cv2.circle(img, (x, y), r, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return img


def box(label: str = "circle", score: float = 0.4, xyxy=(0.2, 0.2, 0.6, 0.7)) -> dict:
    return {"label": label, "score": score, "box": list(xyxy)}


class Device:
    """The device's Capture with a clock the test sets: `save(image, source, at_s)`."""

    def __init__(self, root: Path, monkeypatch, task: str = "detection"):
        self.now = T0

        class Clock(datetime):
            @classmethod
            def now(cls, tz=None):
                return self.now

        monkeypatch.setattr(edge.capture, "datetime", Clock)
        self.task = task
        self.labels = tuple(CLASSES)  # the serving model's classes
        self.capture = Capture(CaptureConfig(dir=root, task=task, policy={"random_rate": 1.0}, max_files=10_000))
        self.root = root

    def save(self, image: np.ndarray, source: str = "door", at_s: float = 0.0, predictions=None) -> str:
        self.now = T0 + timedelta(seconds=at_s)
        if predictions is None:
            predictions = [box()] if self.task == "detection" else [{"label": "circle", "score": 0.4}]
        predictions = [Prediction.from_dict(p) for p in predictions]  # the device's predictions, from their JSON form
        path = self.capture.save(image, predictions, source, self.labels, {"name": "m", "version": "3"})
        assert path is not None, "the device refused to save the frame"
        return path.stem


def jpeg_again(image: np.ndarray, quality: int = 80) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def split_ids(root: Path) -> dict[str, list[str]]:
    return {s: (root / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}


def reviewed_as_is(device: Device, out: Path) -> Path:
    """An export for review that the reviewer accepted unchanged: every frame's labels are reviewed."""
    assert main(["data", "export-review", str(device.root), "--out", str(out)]) == 0
    return out


# -- dedup -----------------------------------------------------------------------------------------


def test_threshold_separates_reencoded_copies_from_changed_scenes():
    frame = scene(1)
    moved = frame.copy()
    cv2.circle(moved, (20, 70), 12, (0, 0, 0), -1)
    h = image_hash(frame).perceptual
    assert hamming(h, image_hash(jpeg_again(frame, 80)).perceptual) <= NEAR_DUPLICATE_BITS
    assert hamming(h, image_hash(moved).perceptual) > NEAR_DUPLICATE_BITS
    assert hamming(h, image_hash(scene(2)).perceptual) > 4 * NEAR_DUPLICATE_BITS


def test_exact_and_near_duplicates_are_dropped_keeping_the_oldest(tmp_path, monkeypatch):
    # given a device that captured a frame, the same frame again, a re-encoded copy, and two other scenes
    device = Device(tmp_path / "capture", monkeypatch)
    first = device.save(scene(1), at_s=0)
    exact = device.save(scene(1), at_s=100)
    near = device.save(jpeg_again(scene(1)), at_s=200)
    others = [device.save(scene(s), at_s=100 * s + 300) for s in (2, 3)]
    # when it is imported
    record = import_capture(device.root, tmp_path / "data")
    # then only the oldest copy and the two other scenes are in the data set
    imported = [i for ids in split_ids(tmp_path / "data").values() for i in ids]
    assert sorted(imported) == sorted([first, *others]), imported
    assert record["dropped"][exact] == {"reason": "exact-duplicate", "detail": f"exact duplicate of {first}"}, record[
        "dropped"
    ]
    assert record["dropped"][near] == {"reason": "near-duplicate", "detail": f"near duplicate of {first}"}, record[
        "dropped"
    ]


def test_an_undecodable_captured_image_is_an_error_naming_it(tmp_path, monkeypatch):
    # given captures of which one image is not a picture any more
    device = Device(tmp_path / "capture", monkeypatch)
    ids = [device.save(scene(s), at_s=100 * s) for s in range(3)]
    image = next(p for p in device.root.rglob(f"{ids[1]}.jpg"))
    image.write_bytes(b"not a jpeg")
    # when / then
    with pytest.raises(DatasetError, match=rf"{ids[1]}\.jpg: not a readable image"):
        import_capture(device.root, tmp_path / "data")


# -- split by source and time ----------------------------------------------------------------------


def test_split_by_source_and_time_leaks_nothing(tmp_path, monkeypatch):
    # given two cameras, each seen in several visits (segments) of a few frames seconds apart
    device = Device(tmp_path / "capture", monkeypatch)
    seed = 0
    visits = {"door": [0, 300, 600, 900, 1200, 1500], "yard": [100, 700, 1300]}
    for source, starts in visits.items():
        for start in starts:
            for k in range(4):
                seed += 1
                device.save(scene(seed), source, at_s=start + 5 * k)
    # when it is imported with reviewed labels (only reviewed frames may go to test)
    options = ImportOptions(segment_gap_s=60, segment_max_s=600)
    review = reviewed_as_is(device, tmp_path / "review")
    record = import_capture(device.root, tmp_path / "data", options, reviewed=review)
    # then each visit is whole in one split, and per camera test is newest, train oldest
    frames = record["frames"]
    by_segment: dict[str, set] = {}
    for f in frames.values():
        by_segment.setdefault(f["segment"], set()).add(f["split"])
    assert len(by_segment) == 9 and all(len(s) == 1 for s in by_segment.values()), by_segment
    for source in visits:
        times = {
            split: [f["time"] for f in frames.values() if f["source"] == source and f["split"] == split]
            for split in ("train", "val", "test")
        }
        assert all(times.values()), f"{source}: every split has a visit ({times})"
        assert max(times["train"]) < min(times["val"]) and max(times["val"]) < min(times["test"]), times
    # and the split lists say the same, and the data set check accepts it
    lists = split_ids(tmp_path / "data")
    assert all(frames[i]["split"] == split for split, ids in lists.items() for i in ids)
    index = load_dataset(tmp_path / "data", "detection")
    assert not index.issues and index.classes == CLASSES
    # and a second import of the same folder gives the same data set (deterministic)
    again = import_capture(device.root, tmp_path / "again", options, reviewed=review)
    assert again["frames"] == frames and split_ids(tmp_path / "again") == lists


def test_unreviewed_captures_never_go_to_test(tmp_path, monkeypatch):
    # given a camera seen in six visits, and a base data set with a test split
    device = Device(tmp_path / "capture", monkeypatch)
    for visit in range(6):
        for k in range(3):
            device.save(scene(10 * visit + k), "door", at_s=300 * visit + 5 * k)
    base = tmp_path / "base"
    synth_detection(base, n=12, seed=1, size=W)
    # when the captures are imported with the device's labels (the production model's own predictions)
    alone = import_capture(device.root, tmp_path / "alone")
    merged = import_capture(device.root, tmp_path / "merged", merge=base)
    # then none of them is in test: promote would grade production against its own output
    for record in (alone, merged):
        splits = {f["split"] for f in record["frames"].values() if f["labels"] == "device"}
        assert splits == {"train", "val"}, f"device-labelled captures went to {splits}"
    assert alone["imported"]["test"] == 0 and not split_ids(tmp_path / "alone")["test"]
    newest = max(alone["frames"].values(), key=lambda f: f["time"])
    assert newest["split"] == "val", "the newest visit goes to val instead"
    # and the merged set's test split is the base's, unchanged
    assert split_ids(tmp_path / "merged")["test"] == split_ids(base)["test"]


def test_one_long_visit_is_cut_into_segments_and_one_short_visit_goes_to_train(tmp_path, monkeypatch):
    device = Device(tmp_path / "capture", monkeypatch)
    for k in range(12):  # one frame every 50 s for 10 minutes: no pause, cut every 200 s
        device.save(scene(100 + k), "door", at_s=50 * k)
    device.save(scene(200), "lobby", at_s=10)
    record = import_capture(
        device.root,
        tmp_path / "data",
        ImportOptions(segment_gap_s=60, segment_max_s=200),
        reviewed=reviewed_as_is(device, tmp_path / "review"),
    )
    door = [f for f in record["frames"].values() if f["source"] == "door"]
    assert len({f["segment"] for f in door}) == 3 and {f["split"] for f in door} == {"train", "val", "test"}
    assert [f["split"] for f in record["frames"].values() if f["source"] == "lobby"] == ["train"]


# -- merge -----------------------------------------------------------------------------------------


def test_merge_keeps_the_base_and_adds_the_captures(tmp_path, monkeypatch):
    # given the demo's kind of data set and captures, one of them a copy of a base image
    base = tmp_path / "base"
    synth_detection(base, n=12, seed=1, size=W)
    device = Device(tmp_path / "capture", monkeypatch)
    copied = device.save(cv2.imread(str(base / "JPEGImages" / "00003.jpg")), at_s=0)
    new = [device.save(scene(s), at_s=100 * s) for s in range(1, 4)]
    # when the captures are merged into it
    record = import_capture(device.root, tmp_path / "merged", merge=base)
    # then the base's files and splits are all there, the captures are added, the copy is not
    before, after = split_ids(base), split_ids(tmp_path / "merged")
    assert all(set(before[s]) <= set(after[s]) for s in before), "base splits unchanged"
    added = set(sum(after.values(), [])) - set(sum(before.values(), []))
    assert added == set(new), (added, new)
    assert record["dropped"][copied]["reason"] in ("near-duplicate", "exact-duplicate"), record["dropped"]
    assert (tmp_path / "merged" / "labels.txt").read_text().split() == CLASSES
    assert load_dataset(tmp_path / "merged", "detection").issues == []
    # and importing again into the merged set adds nothing twice
    again = import_capture(device.root, tmp_path / "merged2", merge=tmp_path / "merged")
    assert split_ids(tmp_path / "merged2") == after
    assert all(again["dropped"][i]["reason"] == "in-merged-set" for i in new), again["dropped"]
    assert set(again["frames"]) >= set(new), "the first import's record is carried over"


# -- review ----------------------------------------------------------------------------------------


def _review_folder(tmp_path, monkeypatch, frames: int = 4) -> tuple[Device, list[str], Path]:
    device = Device(tmp_path / "capture", monkeypatch)
    ids = [device.save(scene(s), at_s=100 * s) for s in range(frames)]
    assert main(["data", "export-review", str(device.root), "--out", str(tmp_path / "review")]) == 0
    return device, ids, tmp_path / "review"


def test_reviewed_labels_replace_pre_labels_and_dropped_frames_go(tmp_path, monkeypatch, capsys):
    # given captures exported for review: VOC with the device's boxes as pre-labels
    device, ids, review = _review_folder(tmp_path, monkeypatch, frames=5)
    xml = review / "Annotations" / f"{ids[0]}.xml"
    assert "<name>circle</name>" in xml.read_text() and (review / "JPEGImages" / f"{ids[0]}.jpg").is_file()
    assert (review / "labels.txt").read_text().split() == CLASSES + [DROP_LABEL]
    # when a reviewer relabels one frame, deletes one, marks one to drop, deletes one's image
    xml.write_text(xml.read_text().replace("<name>circle</name>", "<name>star</name>"))
    (review / "Annotations" / f"{ids[1]}.xml").unlink()
    marked = review / "Annotations" / f"{ids[2]}.xml"
    marked.write_text(marked.read_text().replace("<name>circle</name>", f"<name>{DROP_LABEL}</name>"))
    (review / "JPEGImages" / f"{ids[3]}.jpg").unlink()
    # and the captures are imported with the review
    capsys.readouterr()
    assert (
        main(["data", "import-capture", str(device.root), "--out", str(tmp_path / "data"), "--reviewed", str(review)])
        == 0
    )
    # then the data set holds the reviewed labels of the frames kept, and nothing else
    index = load_dataset(tmp_path / "data", "detection")
    records = [r for s in index.splits.values() for r in s]
    assert sorted(r.path.stem for r in records) == sorted([ids[0], ids[4]])
    relabelled = next(r for r in records if r.path.stem == ids[0])
    assert [index.classes[i] for i in relabelled.labels] == ["star"]
    record = json.loads((tmp_path / "data" / "captures.json").read_text())
    reasons = {i: why["reason"] for i, why in record["dropped"].items()}
    assert reasons == {ids[1]: "deleted-in-review", ids[2]: "marked-in-review", ids[3]: "deleted-in-review"}, reasons
    out = capsys.readouterr().out
    assert "dropped 2: deleted in review" in out and "dropped 1: marked in review" in out, out
    assert {f["labels"] for f in record["frames"].values()} == {"reviewed"}


def test_a_reviewer_may_use_a_class_of_the_merged_set_the_serving_model_lacks(tmp_path, monkeypatch):
    # given a base data set with 'star', and a device whose model does not know 'star'
    base = tmp_path / "base"
    synth_detection(base, n=12, seed=1, size=W)
    device = Device(tmp_path / "capture", monkeypatch)
    device.labels = tuple(c for c in CLASSES if c != "star")
    ids = [device.save(scene(s), at_s=100 * s) for s in range(1, 4)]
    assert "star" not in (device.root / "labels.txt").read_text().split()
    # when the captures are exported for review against the base, and a reviewer labels a box 'star'
    review = tmp_path / "review"
    assert main(["data", "export-review", str(device.root), "--out", str(review), "--merge", str(base)]) == 0
    assert (review / "labels.txt").read_text().split() == CLASSES + [DROP_LABEL], "the tool offers the set's classes"
    xml = review / "Annotations" / f"{ids[0]}.xml"
    xml.write_text(xml.read_text().replace("<name>circle</name>", "<name>star</name>"))
    # then the import into the base accepts it
    assert (
        main(
            [
                "data",
                "import-capture",
                str(device.root),
                "--out",
                str(tmp_path / "data"),
                "--merge",
                str(base),
                "--reviewed",
                str(review),
            ]
        )
        == 0
    )
    index = load_dataset(tmp_path / "data", "detection")
    starred = next(r for s in index.splits.values() for r in s if r.path.stem == ids[0])
    assert [index.classes[i] for i in starred.labels] == ["star"]


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda xml: xml.write_text("<annotation><size>"), "not a readable Pascal VOC annotation"),
        (
            lambda xml: xml.write_text(xml.read_text().replace("<name>circle</name>", "<name>dragon</name>")),
            "label 'dragon'",
        ),
        (lambda xml: xml.write_text(xml.read_text().replace("<xmax>", "<xmax>x")), "<xmax> is not a number"),
        (
            lambda xml: xml.write_text(xml.read_text().replace("<width>96</width>", "<width>64</width>")),
            "<size> is 64x96",
        ),
        (
            lambda xml: shutil.copyfile(xml, xml.with_name("20990101T000000000000Z-other-000001.xml")),
            "is not among the captures",
        ),
    ],
)
def test_bad_review_is_one_error_naming_the_file_and_nothing_is_written(tmp_path, monkeypatch, capsys, damage, named):
    device, ids, review = _review_folder(tmp_path, monkeypatch)
    xml = review / "Annotations" / f"{ids[1]}.xml"
    damage(xml)
    out = tmp_path / "data"
    code = main(["data", "import-capture", str(device.root), "--out", str(out), "--reviewed", str(review)])
    err = capsys.readouterr().err
    assert code != 0 and err.count("error:") == 1, err
    assert named in err and "Annotations/" in err and ".xml" in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".data")], (
        "nothing half-written"
    )


def test_classification_review_is_an_image_folder(tmp_path, monkeypatch, capsys):
    # given classification captures exported for review (one folder per predicted label)
    device = Device(tmp_path / "capture", monkeypatch, task="classification")
    ids = [device.save(scene(s), at_s=100 * s, predictions=[{"label": "circle", "score": 0.3}]) for s in range(4)]
    review = tmp_path / "review"
    assert main(["data", "export-review", str(device.root), "--out", str(review)]) == 0
    assert sorted(p.stem for p in (review / "circle").glob("*.jpg")) == sorted(ids)
    # when the reviewer moves one to 'square' and one to the drop folder, then imports
    (review / "circle" / f"{ids[0]}.jpg").rename(review / "square" / f"{ids[0]}.jpg")
    (review / "circle" / f"{ids[1]}.jpg").rename(review / DROP_LABEL / f"{ids[1]}.jpg")
    assert (
        main(["data", "import-capture", str(device.root), "--out", str(tmp_path / "data"), "--reviewed", str(review)])
        == 0
    )
    index = load_dataset(tmp_path / "data", "classification")
    labels = {r.path.stem: index.classes[r.label] for s in index.splits.values() for r in s}
    assert labels == {ids[0]: "square", ids[2]: "circle", ids[3]: "circle"}, labels
    # and a folder that is not a class is an error naming the file and the label
    (review / "dragon").mkdir()
    (review / "circle" / f"{ids[2]}.jpg").rename(review / "dragon" / f"{ids[2]}.jpg")
    code = main(
        ["data", "import-capture", str(device.root), "--out", str(tmp_path / "data2"), "--reviewed", str(review)]
    )
    err = capsys.readouterr().err
    assert code != 0 and "label 'dragon'" in err and f"{ids[2]}.jpg" in err, err


# -- bad capture folders ---------------------------------------------------------------------------


def test_a_malformed_sidecar_is_an_error_naming_file_and_field(tmp_path, monkeypatch):
    device = Device(tmp_path / "capture", monkeypatch)
    ids = [device.save(scene(s), at_s=s) for s in range(2)]
    sidecar = device.root / "predictions" / f"{ids[1]}.json"
    data = json.loads(sidecar.read_text())
    data["time"] = "yesterday"
    sidecar.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"{ids[1]}\.json: field 'time'"):
        import_capture(device.root, tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no captures"):
        import_capture(tmp_path / "empty", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_captures_of_one_visit_alone_are_too_few_for_val_and_the_error_says_what_to_do(tmp_path, monkeypatch):
    device = Device(tmp_path / "capture", monkeypatch)
    for s in range(3):
        device.save(scene(s), at_s=5 * s)
    with pytest.raises(DatasetError, match=r"1 time segment\(s\) of 1 source\(s\), too few for a val split.*--merge"):
        import_capture(device.root, tmp_path / "data")


def test_a_device_label_missing_from_the_merged_set_is_an_error_naming_file_and_label(tmp_path, monkeypatch):
    base = tmp_path / "base"
    synth_detection(base, n=6, seed=1, size=W)
    device = Device(tmp_path / "capture", monkeypatch)
    device.capture._labels.append("dragon")  # a model that knows a class the base data set has not
    captured = device.save(scene(1), predictions=[box("dragon")])
    with pytest.raises(DatasetError, match=rf"{captured}\.xml: label 'dragon'"):
        import_capture(device.root, tmp_path / "data", merge=base)


@pytest.mark.parametrize(
    "out, option",
    [
        ("capture", "--capture"),
        ("capture/data", "--capture"),
        ("review", "--reviewed"),
        ("review/data", "--reviewed"),
        ("base/data", "--merge"),
        (".", "--capture"),
    ],
)
def test_an_out_folder_overlapping_an_input_is_refused_naming_both(tmp_path, monkeypatch, capsys, out, option):
    # given captures, their review and a base data set
    device, _, review = _review_folder(tmp_path, monkeypatch)
    base = tmp_path / "base"
    synth_detection(base, n=6, seed=1, size=W)
    before = sorted(p for p in tmp_path.rglob("*"))
    # when --out is one of them, inside one, or holds one
    code = main(
        [
            "data",
            "import-capture",
            str(device.root),
            "--out",
            str(tmp_path / out),
            "--merge",
            str(base),
            "--reviewed",
            str(review),
        ]
    )
    # then one error names --out and the input, and nothing changed
    err = capsys.readouterr().err
    assert code != 0 and err.count("error:") == 1, err
    assert f"--out {tmp_path / out}" in err and option in err, err
    assert sorted(p for p in tmp_path.rglob("*")) == before, "nothing written or removed"


def test_out_may_be_the_merged_set_itself(tmp_path, monkeypatch):
    base = tmp_path / "base"
    synth_detection(base, n=12, seed=1, size=W)
    device = Device(tmp_path / "capture", monkeypatch)
    new = [device.save(scene(s), at_s=100 * s) for s in range(1, 4)]
    import_capture(device.root, base, merge=base)
    assert set(new) <= set(sum(split_ids(base).values(), []))
