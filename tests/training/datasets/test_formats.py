"""Readers: round-trip the synthetic data, read a hand-written COCO file, record what they cannot use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.datasets.formats import (
    MalformedAnnotation,
    VocObject,
    load_coco,
    load_dataset,
    load_image_folder,
    load_voc,
    read_voc,
    voc_xml,
)
from training.datasets.records import SPLITS
from training.datasets.synth import CLASSES, synth_classification, synth_detection
from training.errors import DatasetError


@pytest.fixture(scope="module")
def cls_root(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("formats") / "cls"
    return root, synth_classification(root, n=20, seed=1)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("formats") / "voc"
    return root, synth_detection(root, n=15, seed=1, size=64)


def test_image_folder_round_trips_the_synthetic_classification_set(cls_root):
    # given
    root, written = cls_root
    # when
    index = load_dataset(root, "classification")
    # then
    assert index.task == "classification" and index.classes == CLASSES, f"classes {index.classes}"
    for split in SPLITS:
        got = sorted((r.path, r.label) for r in index.split(split))
        want = sorted((r.path, r.label) for r in written.split(split))
        assert got == want, f"split {split} differs from what synth wrote"
    assert index.issues == [], f"unexpected issues {index.issues}"


def test_voc_round_trips_the_synthetic_detection_set(voc_root):
    # given
    root, written = voc_root
    # when
    index = load_dataset(root, "detection")
    # then
    assert index.task == "detection" and index.classes == CLASSES and index.issues == [], "classes or issues"
    for split in SPLITS:
        got = {r.path: r for r in index.split(split)}
        want = {r.path: r for r in written.split(split)}
        assert got.keys() == want.keys(), f"split {split}: other images"
        for path, record in want.items():
            read = got[path]
            assert (read.width, read.height) == (record.width, record.height), f"{path}: size"
            assert read.boxes.dtype == np.float32 and read.labels.dtype == np.int32, f"{path}: dtypes"
            np.testing.assert_array_equal(read.boxes, record.boxes, err_msg=f"{path}: boxes")
            np.testing.assert_array_equal(read.labels, record.labels, err_msg=f"{path}: labels")


def test_image_folder_without_labels_file_takes_sorted_folder_names(tmp_path):
    # given class folders b and a, and no labels.txt
    img = np.zeros((8, 8, 3), np.uint8)
    for split, name in [("train", "b"), ("train", "a"), ("val", "a"), ("test", "b")]:
        (tmp_path / split / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / split / name / "x.png"), img)
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image")
    # when
    index = load_image_folder(tmp_path)
    # then
    assert index.classes == ["a", "b"], f"classes {index.classes}"
    assert [r.label for r in index.split("train")] == [0, 1], "labels follow the sorted class names"
    assert index.issues == [], f"unexpected issues {index.issues}"


def test_coco_reader_reads_a_hand_written_file(tmp_path):
    # given two images and categories whose ids are not 0..n-1 nor in order
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(tmp_path / "images" / name), np.full((40, 50, 3), 128, np.uint8))
    categories = [{"id": 7, "name": "square"}, {"id": 3, "name": "circle"}]
    train = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 50, "height": 40},
            {"id": 2, "file_name": "b.jpg", "width": 50, "height": 40},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5.5, 4], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 50, 40], "iscrowd": 1},
        ],
        "categories": categories,
    }
    val = {
        "images": [{"id": 9, "file_name": "b.jpg", "width": 50, "height": 40}],
        "annotations": [],
        "categories": categories,
    }
    (tmp_path / "annotations" / "train.json").write_text(json.dumps(train))
    (tmp_path / "annotations" / "val.json").write_text(json.dumps(val))
    # when
    index = load_dataset(tmp_path, "detection")
    # then
    assert index.classes == ["circle", "square"], f"classes must follow category ids: {index.classes}"
    a, b = index.split("train")
    assert a.path == tmp_path / "images" / "a.jpg" and (a.width, a.height) == (50, 40), f"{a.path} {a.width}"
    np.testing.assert_allclose(
        a.boxes, [[10, 5, 30, 15], [0, 0, 5.5, 4], [0, 0, 50, 40]], err_msg="[x,y,w,h] -> corners"
    )
    assert a.labels.tolist() == [1, 0, 0], f"labels {a.labels}"
    assert a.difficult.tolist() == [False, False, True], f"a crowd region is an ignore region: {a.difficult}"
    assert b.boxes.shape == (0, 4) and len(index.split("val")) == 1, "an image without objects is kept"
    assert index.split("test") == [] and index.issues == [], "a missing test file is not an issue"


def test_coco_unknown_category_and_bad_json_become_issues(tmp_path):
    # given a train file that names a category that does not exist, and a broken val file
    (tmp_path / "annotations").mkdir()
    train = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2]}],
        "categories": [{"id": 1, "name": "circle"}],
    }
    (tmp_path / "annotations" / "train.json").write_text(json.dumps(train))
    (tmp_path / "annotations" / "val.json").write_text("{not json")
    # when
    index = load_coco(tmp_path)
    # then
    kinds = sorted(issue.kind for issue in index.issues)
    assert kinds == ["malformed annotation", "unknown label"], f"issues {index.issues}"
    assert index.split("train") == [], "the image with an unknown category is kept out of the index"


def test_voc_reader_records_unknown_names_and_malformed_xml_instead_of_raising(tmp_path, voc_root):
    # given a copy of the VOC set with one unknown class name and one broken xml
    root = tmp_path / "voc"
    shutil.copytree(voc_root[0], root)
    train_ids = (root / "ImageSets" / "Main" / "train.txt").read_text().split()
    with_objects = [i for i in train_ids if "<object>" in (root / "Annotations" / f"{i}.xml").read_text()]
    renamed, broken = with_objects[0], with_objects[1]
    xml = root / "Annotations" / f"{renamed}.xml"
    text = xml.read_text()
    name = text.split("<name>")[1].split("</name>")[0]
    xml.write_text(text.replace(f"<name>{name}</name>", "<name>hexagon</name>", 1))
    (root / "Annotations" / f"{broken}.xml").write_text("<annotation><size>")
    # when
    index = load_voc(root)
    # then
    found = {(issue.kind, issue.path.name) for issue in index.issues}
    assert found == {("unknown label", f"{renamed}.xml"), ("malformed annotation", f"{broken}.xml")}, f"{found}"
    assert len(index.split("train")) == len(train_ids) - 2, "both files are kept out of the index"
    assert index.classes == CLASSES, "classes still come from labels.txt"


def test_voc_writer_and_reader_round_trip_continuous_boxes(tmp_path):
    # given objects with integer and fractional boxes in continuous pixels
    objects = [VocObject("a&b", (0, 0, 10, 5)), VocObject("circle", (2.5, 3.25, 7.5, 9.0), difficult=True)]
    path = tmp_path / "x.xml"
    # when they are written and read back
    text = voc_xml("x.jpg", 12, 10, objects, "test")
    path.write_text(text)
    annotation = read_voc(path)
    # then the xml is 1-based inclusive and the reader returns the same objects
    assert "<xmin>1</xmin>" in text and "<xmax>10</xmax>" in text, text
    assert (annotation.filename, annotation.width, annotation.height) == ("x.jpg", 12, 10), annotation
    assert annotation.objects == objects, annotation.objects


def test_voc_reader_error_names_the_file_and_the_field(tmp_path):
    # given an annotation whose second object lacks <ymax>
    path = tmp_path / "bad.xml"
    text = voc_xml("bad.jpg", 8, 8, [VocObject("a", (0, 0, 4, 4)), VocObject("b", (1, 1, 5, 5))], "test")
    path.write_text(text.replace("<ymax>5</ymax>", ""))
    # when / then
    with pytest.raises(MalformedAnnotation, match=r"bad\.xml: object 2 <bndbox><ymax> is missing"):
        read_voc(path)
    assert issubclass(MalformedAnnotation, DatasetError), "the CLI reports it as one data set error"


def test_unknown_format_lists_the_valid_ones(tmp_path):
    # given / when / then
    with pytest.raises(DatasetError, match="'yolo' is not among the following formats: auto, coco, imagefolder, voc"):
        load_dataset(tmp_path, "detection", fmt="yolo")


def test_format_that_does_not_fit_the_task_is_an_error(voc_root):
    # given / when / then
    with pytest.raises(DatasetError, match="format 'voc' .*holds detection data, but the task is classification"):
        load_dataset(voc_root[0], "classification")


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="data set folder not found"):
        load_dataset(tmp_path / "nowhere", "detection")
