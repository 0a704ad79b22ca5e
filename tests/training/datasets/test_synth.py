"""Synthetic demo data: deterministic, laid out as documented, boxes that fit the images."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.datasets.formats import load_dataset
from training.datasets.records import SPLITS
from training.datasets.synth import (
    CLASSES,
    DETECTION_STYLE,
    REQUIRED_VISIBLE,
    _render_still,
    synth_classification,
    synth_detection,
)
from training.datasets.video import VIDEO_REQUIRED_VISIBLE
from training.errors import ConfigError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("make, n", [(synth_classification, 20), (synth_detection, 12)])
def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, make, n):
    # given two runs with one seed and one with another
    make(tmp_path / "a", n=n, seed=5)
    make(tmp_path / "b", n=n, seed=5)
    make(tmp_path / "c", n=n, seed=6)
    # when the files are compared
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    # then the same seed wrote the very same bytes, another seed other images
    assert a == b, f"{make.__name__}: same seed wrote different files"
    images = [name for name in a if name.endswith(".jpg")]
    assert images and any(a[name] != c.get(name) for name in images), (
        f"{make.__name__}: seed 6 wrote the same images as 5"
    )


def test_classification_layout_is_a_balanced_image_folder(tmp_path):
    # given
    out = tmp_path / "cls"
    # when
    index = synth_classification(out, n=40, seed=0)
    # then
    assert (out / "labels.txt").read_text().split() == CLASSES, "labels.txt must list the classes in order"
    images = sorted(out.glob("*/*/*.jpg"))
    assert len(images) == 40, f"expected 40 images, found {len(images)}"
    sizes = {s: len(index.split(s)) for s in SPLITS}
    assert sizes == {"train": 30, "val": 5, "test": 5}, f"split sizes {sizes} are not 70/15/15 per class"
    for split in SPLITS:
        present = {CLASSES[r.label] for r in index.split(split)}
        assert present == set(CLASSES), f"split {split} lacks classes {set(CLASSES) - present}"
        for record in index.split(split):
            assert record.path.parent.name == CLASSES[record.label], f"{record.path} is in the wrong class folder"
            assert record.path.parts[-3] == split, f"{record.path} is in the wrong split folder"
    img = cv2.imread(str(images[0]))
    assert img is not None and img.shape == (64, 64, 3), f"image shape {None if img is None else img.shape}"


def test_detection_layout_is_pascal_voc_with_boxes_inside_the_image(tmp_path):
    # given
    out = tmp_path / "det"
    # when
    index = synth_detection(out, n=30, seed=0, size=96)
    # then
    ids = {s: (out / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in SPLITS}
    assert all(ids.values()), f"every split list must be non-empty: {ids}"
    assert sorted(sum(ids.values(), [])) == sorted(p.stem for p in (out / "JPEGImages").glob("*.jpg")), (
        "split lists must cover every image exactly once"
    )
    assert len(list((out / "Annotations").glob("*.xml"))) == 30, "one annotation per image"
    n_objects, widths = 0, set()
    for split in SPLITS:
        for record in index.split(split):
            img = cv2.imread(str(record.path))
            assert img.shape == (record.height, record.width, 3), f"{record.path}: size {img.shape}"
            assert record.height == 96 and record.width in (96, 128, 171), f"{record.path}: size {img.shape}"
            widths.add(record.width)
            boxes = record.boxes
            assert boxes.dtype == np.float32 and record.labels.dtype == np.int32, "boxes float32, labels int32"
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= record.width).all() and (boxes[:, 3] <= 96).all(), (
                f"{record.path}: box outside the image {boxes}"
            )
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all(), f"{record.path}: {boxes}"
            for i in range(len(boxes)):
                for j in range(i):
                    assert _iou(boxes[i], boxes[j]) <= 0.3, f"{record.path}: objects {i} and {j} overlap too much"
            n_objects += len(boxes)
    assert 30 <= n_objects <= 120, f"1-4 objects per image expected, found {n_objects} in 30 images"
    assert widths == {96, 128, 171}, f"square, 4:3 and 16:9 frames (CAMERA_ASPECTS) expected, found widths {widths}"
    first = index.split("train")[0]
    xml = ET.parse(out / "Annotations" / f"{first.path.stem}.xml").getroot()
    assert (
        xml.findtext("size/width") == str(first.width)
        and xml.findtext("size/height") == "96"
        and xml.findtext("size/depth") == "3"
    ), "VOC <size> missing"
    for obj in xml.iter("object"):
        assert obj.findtext("name") in CLASSES and obj.findtext("difficult") in ("0", "1"), "VOC <object> fields"
        assert all(obj.findtext(f"bndbox/{t}").isdigit() for t in ("xmin", "ymin", "xmax", "ymax")), "integer box"


def test_objects_less_than_half_visible_are_difficult_as_in_the_video_ground_truth(tmp_path):
    # given detection stills (objects cut by the frame edge, some covered by others or by a blob)
    index = synth_detection(tmp_path / "det", n=300, seed=3, size=96)
    records = [r for split in SPLITS for r in index.split(split)]
    flags = np.concatenate([r.difficult for r in records])
    # then a few objects are `difficult`, and the VOC reader reads back the flags written
    assert 0.005 < flags.mean() < 0.1, f"{flags.mean():.3f} of {flags.size} objects difficult"
    read = load_dataset(tmp_path / "det", "detection")
    assert {r.path.name: r.difficult.tolist() for s in SPLITS for r in read.split(s)} == {
        r.path.name: r.difficult.tolist() for r in records
    }
    # and one rule serves both: the video marks objects below the same visible share
    assert VIDEO_REQUIRED_VISIBLE == REQUIRED_VISIBLE == 0.5


def test_an_object_in_full_view_is_never_difficult():
    # given scenes of single objects, never cut by the frame edge nor covered by a blob
    style = replace(DETECTION_STYLE, occlude_p=0.0, max_cut=0.0)
    for seed in range(40):
        # when one is drawn
        _, labels, boxes, difficult = _render_still(np.random.default_rng(seed), 128, 96, [seed % len(CLASSES)], style)
        # then it is labelled, and not difficult (nothing hides any of it)
        assert len(labels) == 1 and difficult == [False], (seed, boxes, difficult)


def test_output_replaces_the_old_folder_and_leaves_no_temporary_folder(tmp_path):
    # given an output folder with a stale file
    out = tmp_path / "cls"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    # when
    synth_classification(out, n=15, seed=0)
    # then
    assert not (out / "stale.txt").exists(), "the old folder must be replaced, not merged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls"], f"left behind: {list(tmp_path.iterdir())}"


def test_too_few_images_is_a_clear_error(tmp_path):
    # given / when / then
    with pytest.raises(ConfigError, match="n=4"):
        synth_classification(tmp_path / "cls", n=4, seed=0)
    assert not (tmp_path / "cls").exists(), "nothing is written on error"


@pytest.mark.parametrize(
    "kwargs, named", [({"aspects": ()}, "aspects="), ({"aspects": (1.0, 0.1)}, "aspects="), ({"size": 2}, "size=2")]
)
def test_a_frame_shape_out_of_range_is_a_clear_error(tmp_path, kwargs, named):
    # given / when / then
    with pytest.raises(ConfigError, match=named):
        synth_detection(tmp_path / "det", n=5, seed=0, **kwargs)
    assert not (tmp_path / "det").exists(), "nothing is written on error"


def test_silhouettes_are_one_centred_white_shape_on_black_in_a_balanced_image_folder(tmp_path):
    # given the curriculum's first lesson, twice with one seed
    index = synth_classification(tmp_path / "a", n=20, seed=0, silhouettes=True)
    synth_classification(tmp_path / "b", n=20, seed=0, silhouettes=True)
    # then it is the same bytes, laid out like the scenes
    assert _files(tmp_path / "a") == _files(tmp_path / "b"), "same seed wrote different silhouettes"
    assert {s: len(index.split(s)) for s in SPLITS} == {"train": 10, "val": 5, "test": 5}
    for record in index.split("train"):
        img = cv2.imread(str(record.path)).astype(int)
        # grey: white on black, one shape whose box is centred
        assert np.abs(img - img.mean(axis=2, keepdims=True)).max() <= 8, f"{record.path} is not grey"
        on = img[:, :, 0] >= 128
        assert img[:, :, 0][~on].mean() < 20 and img[:, :, 0][on].mean() > 230, f"{record.path}: not white on black"
        rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
        centre = ((cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2)
        assert np.allclose(centre, (32, 32), atol=1.5), f"{record.path}: box centre {centre} is not the frame's"
        assert 0.08 * 64 * 64 * 0.8 <= (cols[-1] - cols[0] + 1) * (rows[-1] - rows[0] + 1) <= 0.5 * 64 * 64 * 1.2
