"""The data set check: each problem fails with the file named (policy fail) or is skipped and counted (skip)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.datasets.check import check_dataset
from training.datasets.formats import load_image_folder, load_voc
from training.datasets.synth import synth_classification, synth_detection
from training.errors import DatasetError


@pytest.fixture(scope="module")
def voc_source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check") / "voc"
    synth_detection(root, n=20, seed=3, size=64, aspects=(1.0,))  # square: the tests edit <width>64
    return root


@pytest.fixture()
def voc(tmp_path, voc_source) -> Path:
    """A fresh copy of the small VOC set that a test may damage."""
    return Path(shutil.copytree(voc_source, tmp_path / "voc"))


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


def _first_with_objects(root: Path, split: str = "train") -> str:
    return next(i for i in _ids(root, split) if "<object>" in (root / "Annotations" / f"{i}.xml").read_text())


def _edit_xml(root: Path, image_id: str, old: str, new: str) -> Path:
    xml = root / "Annotations" / f"{image_id}.xml"
    text = xml.read_text()
    assert old in text, f"{old!r} not in {xml}"
    xml.write_text(text.replace(old, new, 1))
    return xml


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_clean_data_passes_with_nothing_skipped(voc):
    # given
    index = load_voc(voc)
    # when
    checked, report = check_dataset(index, "fail")
    # then
    assert report.ok and report.skipped == 0 and report.counts == {}, report.summary()
    assert report.checked == 20 and report.split_sizes == {s: len(index.split(s)) for s in index.splits}, (
        report.summary()
    )
    assert checked.splits == index.splits, "a clean data set is returned as it is"
    json.dumps(report.to_dict())  # the report is JSON-able for metrics files


@pytest.mark.parametrize("decode", [True, False])
def test_truncated_jpeg_fails_naming_the_file(voc, decode):
    # given a JPEG cut in half (libjpeg would still decode it, filling grey)
    image = voc / "JPEGImages" / f"{_ids(voc, 'train')[0]}.jpg"
    _truncate(image)
    # when / then
    with pytest.raises(DatasetError, match=r"policy=fail\): 1 corrupt image: .*" + image.name):
        check_dataset(load_voc(voc), "fail", decode=decode)


def test_truncated_jpeg_is_skipped_and_counted(voc):
    # given
    image = voc / "JPEGImages" / f"{_ids(voc, 'train')[0]}.jpg"
    _truncate(image)
    index = load_voc(voc)
    # when
    checked, report = check_dataset(index, "skip")
    # then
    assert report.counts == {"corrupt image": 1} and report.skipped == 1, report.summary()
    assert image not in {r.path for r in checked.split("train")}, "the corrupt image must be left out"
    assert len(checked.split("train")) == len(index.split("train")) - 1, "only the corrupt image is left out"
    assert "truncated JPEG" in report.summary(), report.summary()


def test_undecodable_image_in_an_image_folder_is_reported(tmp_path):
    # given a classification set with one file that is not an image at all
    synth_classification(tmp_path / "cls", n=15, seed=0)
    bad = sorted((tmp_path / "cls" / "train").rglob("*.jpg"))[0]
    bad.write_bytes(b"this is not a jpeg")
    index = load_image_folder(tmp_path / "cls")
    # when
    checked, report = check_dataset(index, "skip")
    # then
    assert report.problems == [("corrupt image", str(bad), "cannot be decoded")], report.summary()
    assert report.skipped == 1 and len(checked.split("train")) == len(index.split("train")) - 1, report.summary()


def test_box_outside_the_image_fails_naming_the_file_and_is_skipped_whole(voc):
    # given a VOC box whose right edge is far outside the 64 px wide image
    image_id = _first_with_objects(voc)
    xml = voc / "Annotations" / f"{image_id}.xml"
    xmax = xml.read_text().split("<xmax>")[1].split("</xmax>")[0]
    _edit_xml(voc, image_id, f"<xmax>{xmax}</xmax>", "<xmax>400</xmax>")
    # when / then: fail names the image
    with pytest.raises(DatasetError, match=f"1 box outside image: .*{image_id}.jpg"):
        check_dataset(load_voc(voc), "fail")
    # when / then: skip leaves the whole record out
    checked, report = check_dataset(load_voc(voc), "skip")
    assert report.counts == {"box outside image": 1} and report.skipped == 1, report.summary()
    assert all(r.path.stem != image_id for r in checked.split("train")), "the record is skipped whole"


def test_box_one_pixel_outside_is_tolerated(voc):
    # given a box that ends 1 px past the right edge (a common off-by-one in tools)
    image_id = _first_with_objects(voc)
    xml = voc / "Annotations" / f"{image_id}.xml"
    xmax = xml.read_text().split("<xmax>")[1].split("</xmax>")[0]
    _edit_xml(voc, image_id, f"<xmax>{xmax}</xmax>", "<xmax>65</xmax>")
    # when
    _, report = check_dataset(load_voc(voc), "fail")
    # then
    assert report.ok, report.summary()


def test_degenerate_box_and_size_mismatch_are_reported(voc):
    # given one box with x_max < x_min and one annotation whose size differs from its image
    first = _ids(voc, "train")[0]
    _edit_xml(voc, first, "<width>64</width>", "<width>80</width>")
    image_id = next(i for i in _ids(voc, "train")[2:] if "<object>" in (voc / "Annotations" / f"{i}.xml").read_text())
    xml = voc / "Annotations" / f"{image_id}.xml"
    xmin = xml.read_text().split("<xmin>")[1].split("</xmin>")[0]
    xmax = xml.read_text().split("<xmax>")[1].split("</xmax>")[0]
    _edit_xml(voc, image_id, f"<xmax>{xmax}</xmax>", f"<xmax>{int(xmin) - 2}</xmax>")
    # when
    _, report = check_dataset(load_voc(voc), "skip")
    # then
    assert report.counts == {"size mismatch": 1, "degenerate box": 1}, report.summary()
    assert report.skipped == 2, report.summary()


def test_unknown_class_name_fails_naming_the_annotation(voc):
    # given an object named with a class that is not in labels.txt
    image_id = _first_with_objects(voc)
    xml = voc / "Annotations" / f"{image_id}.xml"
    name = xml.read_text().split("<name>")[1].split("</name>")[0]
    _edit_xml(voc, image_id, f"<name>{name}</name>", "<name>hexagon</name>")
    # when / then
    with pytest.raises(DatasetError, match=f"1 unknown label: .*{image_id}.xml .*'hexagon'"):
        check_dataset(load_voc(voc), "fail")


def test_unknown_class_name_is_skipped_and_counted(voc):
    # given
    image_id = _first_with_objects(voc)
    xml = voc / "Annotations" / f"{image_id}.xml"
    name = xml.read_text().split("<name>")[1].split("</name>")[0]
    _edit_xml(voc, image_id, f"<name>{name}</name>", "<name>hexagon</name>")
    # when
    checked, report = check_dataset(load_voc(voc), "skip")
    # then
    assert report.counts == {"unknown label": 1} and report.skipped == 1, report.summary()
    assert len(checked.split("train")) == len(_ids(voc, "train")) - 1, "the record is left out"


def test_empty_val_split_fails_under_either_policy(voc):
    # given an empty val list
    (voc / "ImageSets" / "Main" / "val.txt").write_text("")
    # when / then
    for policy in ("fail", "skip"):
        with pytest.raises(DatasetError, match=f"policy={policy}\\): 1 empty split: .*split 'val' has no records"):
            check_dataset(load_voc(voc), policy)


def test_missing_train_list_is_an_empty_split_naming_the_list(voc):
    # given
    (voc / "ImageSets" / "Main" / "train.txt").unlink()
    # when / then
    with pytest.raises(DatasetError, match="1 empty split: .*train.txt \\(split list not found"):
        check_dataset(load_voc(voc), "skip")


def test_split_emptied_by_skipping_is_still_an_error(voc):
    # given a val split whose only images are corrupt
    for image_id in _ids(voc, "val"):
        _truncate(voc / "JPEGImages" / f"{image_id}.jpg")
    n_val = len(_ids(voc, "val"))
    # when / then
    with pytest.raises(
        DatasetError,
        match=f"split 'val' has no records after skipping.*after skipping {n_val} \\({n_val} corrupt images",
    ):
        check_dataset(load_voc(voc), "skip")


def test_empty_test_split_is_only_a_warning(voc):
    # given
    (voc / "ImageSets" / "Main" / "test.txt").unlink()
    # when
    _, report = check_dataset(load_voc(voc), "fail")
    # then
    assert report.ok and any("test" in w for w in report.warnings), report.summary()


def _folder_with_star_as(tmp_path: Path, suffixes: tuple[str, ...]) -> Path:
    """The issue's ImageFolder: 40 images, 5 classes; `star` written only in the given formats."""
    import cv2

    root = tmp_path / "shapes"
    synth_classification(root, n=40, seed=0)
    for i, image in enumerate(sorted(root.glob("*/star/*.jpg"))):
        suffix = suffixes[i % len(suffixes)]
        if suffix in (".gif", ".heic"):
            image.with_suffix(suffix).write_bytes(b"GIF89a" if suffix == ".gif" else b"\x00\x00\x00\x18ftypheic")
        else:
            assert cv2.imwrite(str(image.with_suffix(suffix)), cv2.imread(str(image))), suffix
        image.unlink()
    return root


def test_webp_and_tiff_images_are_used_not_dropped(tmp_path):
    # given a class whose images are .webp and .tif
    root = _folder_with_star_as(tmp_path, (".webp", ".tif"))
    # when the data set is read and checked
    index, report = check_dataset(load_image_folder(root), "fail")
    # then every image is used and star has images in every split
    assert report.ok and sum(report.split_sizes.values()) == 40, report.summary()
    star = index.classes.index("star")
    assert all(any(r.label == star for r in index.split(s)) for s in ("train", "val", "test")), report.summary()


def test_a_class_left_without_training_images_is_an_error_naming_it_and_a_counted_warning_under_skip(tmp_path):
    # given a class whose images are all in formats OpenCV cannot read
    root = _folder_with_star_as(tmp_path, (".gif", ".heic"))
    # when checked with policy fail, then the unreadable files and the class are named
    with pytest.raises(DatasetError) as failed:
        check_dataset(load_image_folder(root), "fail")
    message = str(failed.value)
    assert "unsupported file" in message and ".gif" in message, message
    assert "class 'star' has no usable sample in the train split" in message, message
    # and with policy skip, training may go on, with the class counted in a warning
    _, report = check_dataset(load_image_folder(root), "skip")
    assert report.counts.get("unsupported file") == 8, report.summary()
    assert any("1 class(es) without training samples after skipping: star" in w for w in report.warnings), (
        report.warnings
    )
