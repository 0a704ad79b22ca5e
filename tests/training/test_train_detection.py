"""Real short SSD runs on tiny VOC data: export with NMS in the graph, mAP, bad boxes."""

from __future__ import annotations

import json
import shutil

import mxnet as mx
import pytest

from training import runner
from training.errors import DatasetError
from training.sagemaker_env import RunEnvironment
from tests.training.helpers import quick_config

pytestmark = pytest.mark.slow


def test_short_ssd_run_exports_a_detector(tiny_det, tmp_path):
    # given tiny Pascal VOC data
    cfg = quick_config(tiny_det, tmp_path, task="detection", epochs=1, batch_size=8, plots_dir=tmp_path / "plots")
    # when training one epoch of the small-input SSD
    result = runner.train(cfg, RunEnvironment(), tmp_path)
    # then the exported graph loads as a SymbolBlock and returns ids, scores and boxes
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert meta["task"] == "detection" and meta["input"]["size"] == [96, 96]
    net = mx.gluon.SymbolBlock.imports(
        str(result.model_dir / "model-symbol.json"), ["data"], str(result.model_dir / "model-0000.params")
    )
    ids, scores, boxes = net(mx.nd.zeros((1, 3, 96, 96)))
    assert boxes.shape[-1] == 4 and ids.shape[:2] == scores.shape[:2]
    assert 0.0 <= result.metrics["test_map"] <= 1.0
    assert (tmp_path / "plots" / "pr.csv").is_file()


def test_voc_box_outside_image_names_the_file(tiny_det, tmp_path):
    data = tmp_path / "det"
    shutil.copytree(tiny_det, data)
    xml = sorted((data / "Annotations").glob("*.xml"))[0]
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    end = text.index("</xmax>")
    xml.write_text(text[:start] + "5000" + text[end:])
    with pytest.raises(DatasetError, match=xml.stem):
        runner.train(quick_config(data, tmp_path / "out", task="detection", epochs=1), RunEnvironment(), tmp_path)
    assert not (tmp_path / "out" / "model").exists()


def test_unknown_class_name_is_reported(tiny_det, tmp_path):
    data = tmp_path / "det"
    shutil.copytree(tiny_det, data)
    xml = sorted((data / "Annotations").glob("*.xml"))[1]
    text = xml.read_text()
    name = text[text.index("<name>", text.index("<object>")) + 6 : text.index("</name>", text.index("<object>"))]
    xml.write_text(text.replace(f"<name>{name}</name>", "<name>unicorn</name>", 1))
    with pytest.raises(DatasetError, match="unicorn"):
        runner.train(quick_config(data, tmp_path / "out", task="detection", epochs=1), RunEnvironment(), tmp_path)


def test_detector_backbone_starts_from_our_classifier(tiny_cls, tiny_det, tmp_path):
    # given a classifier this project trained (same mobilenet0.25 base as the SSD)
    classifier = runner.train(quick_config(tiny_cls, tmp_path / "cls", epochs=1), RunEnvironment(), tmp_path)
    # when the detector is initialised from it
    result = runner.train(
        quick_config(
            tiny_det, tmp_path / "det", task="detection", epochs=1, batch_size=8, init_from=str(classifier.model_dir)
        ),
        RunEnvironment(),
        tmp_path,
    )
    # then the backbone weights were carried over under the SSD's prefix and the heads start fresh
    init = json.loads((result.model_dir / "model.json").read_text())["lineage"]["init"]
    assert init["copied"] >= 80, f"mobilenet backbone carried over: {init}"
    assert init["reinitialised"] > 0, "SSD heads and extra layers are new"
