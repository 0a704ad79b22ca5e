"""Predictor on real tiny packages: payload format, variant choice, golden check, tampering, NaN outputs."""

from __future__ import annotations

import json
import shutil

import jsonschema
import numpy as np
import pytest

from edge.messages import InferenceResult
from edge.mqtt.payloads import INFERENCE, load_schema, utc_timestamp
from edge.package import PackageError, verify_dir
from edge.predictor import ModelFailure, Predictor
from tests.edge.packages import garble, perturb_onnx_weights, rewrite, tiny_packages  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # the packages come from a real (tiny) training run


def frame(height: int = 120, width: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def full_payload(result) -> dict:
    """The payload the runner would publish for `result`, as a subscriber reads it."""
    draft = InferenceResult(
        schema=INFERENCE, device="cam-01", source="door", frame_ts=utc_timestamp(), **result.payload()
    )
    return json.loads(draft.numbered(0).to_json())


def test_classifier_result_is_a_valid_inference_payload(tiny_packages):
    # given the tiny classifier package, registered as version 7
    package = tiny_packages.classifier
    predictor = Predictor.load(package.folder, verify_dir(package.folder), version="7")
    # when a non-square frame is predicted
    result = predictor.predict(frame())
    # then the payload validates against the shipped schema and names the registry version
    jsonschema.validate(full_payload(result), load_schema(INFERENCE))
    assert result.model == {"name": "tiny-classifier", "version": "7", "variant": predictor.variant}, result.model
    assert predictor.variant in {v.id for v in package.manifest.variants}
    assert [p.label for p in result.predictions][:1] == list(result.counts), "top label is counted once"
    assert all(p.label in package.manifest.labels and p.box is None for p in result.predictions)
    latency = result.latency_ms
    assert 0 <= latency["preprocess"] <= latency["total"] and latency["inference"] <= latency["total"], latency


def test_detector_boxes_are_normalized_to_the_frame(tiny_packages):
    # given the tiny (barely trained) detector with a low threshold so it reports boxes
    package = tiny_packages.detector
    predictor = Predictor.load(package.folder, verify_dir(package.folder), score_threshold=0.05)
    # when a 120x200 frame is predicted
    result = predictor.predict(frame())
    # then boxes are [x_min, y_min, x_max, y_max] within [0, 1] and counts sum to the predictions
    jsonschema.validate(full_payload(result), load_schema(INFERENCE))
    assert result.predictions, "a 0.05 threshold yields detections even from a barely trained SSD"
    for p in result.predictions:
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1, p
    assert sum(result.counts.values()) == len(result.predictions), result.counts
    assert result.model["version"] == package.manifest.version, "without a registry version: the manifest's"


def test_detector_holds_weak_boxes_that_continue_the_previous_frame(tiny_packages):
    # given the tiny detector whose manifest reads boxes at 0.5, and holds boxes from 0.02 on a stream
    package = tiny_packages.detector
    manifest = verify_dir(package.folder)
    held = manifest.model_copy(update={"output": manifest.output.model_copy(update={"hold_threshold": 0.02})})
    predictor = Predictor.load(package.folder, held)
    image = frame()
    weak = Predictor.load(package.folder, manifest, score_threshold=0.02).predict(image).predictions
    assert weak and max(p.score for p in weak) < 0.5, "the barely trained SSD scores below 0.5 everywhere"
    # when the same frame comes first without, then with the previous frame's boxes
    alone = predictor.predict(image)
    continued = predictor.predict(image, previous=weak[:1])
    # then alone nothing passes, and continued exactly the box that continues the previous one is kept
    assert alone.predictions == [] and alone.counts == {}
    assert [p.box for p in continued.predictions] == [weak[0].box], continued.predictions
    assert continued.counts == {weak[0].label: 1}


def test_fastest_runnable_variant_is_chosen_unless_one_is_preferred(tiny_packages):
    package = tiny_packages.classifier
    manifest = verify_dir(package.folder)
    fastest = min(manifest.variants, key=lambda v: v.latency.median_ms).id
    assert Predictor.load(package.folder, manifest).variant == fastest
    assert Predictor.load(package.folder, manifest, prefer_variant="openvino-fp32").variant == "openvino-fp32"
    with pytest.raises(PackageError, match="no variant 'mxnet-bf16'"):
        Predictor.load(package.folder, manifest, prefer_variant="mxnet-bf16")


def test_altered_model_with_rehashed_manifest_fails_the_golden_check(tiny_packages, tmp_path):
    # given a package whose weights were changed and whose manifest was re-hashed to match
    bad = rewrite(tiny_packages.classifier, tmp_path / "altered", "onnx-fp32", perturb_onnx_weights)
    manifest = verify_dir(bad.folder)  # sha256 verification cannot tell
    # when it is loaded, then the golden samples refuse it
    with pytest.raises(PackageError, match="golden output"):
        Predictor.load(bad.folder, manifest)


def test_model_that_cannot_load_is_refused_naming_the_file(tiny_packages, tmp_path):
    bad = rewrite(tiny_packages.classifier, tmp_path / "garbled", "onnx-fp32", garble)
    with pytest.raises(PackageError, match="model.onnx"):
        Predictor.load(bad.folder, verify_dir(bad.folder))


def test_tampered_file_is_refused_by_verification(tiny_packages, tmp_path):
    # given a package copy with one byte of a model file changed (manifest untouched)
    folder = tmp_path / "tampered"
    shutil.copytree(tiny_packages.classifier.folder, folder)
    model = folder / "variants" / "onnx-fp32" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    # then verification names the file before anything is loaded
    with pytest.raises(PackageError, match="onnx-fp32/model.onnx: sha256"):
        verify_dir(folder)


class NanSession:
    def __init__(self, inner):
        self.inner, self.variant = inner, inner.variant

    def run(self, batch):
        return [np.full_like(o, np.nan) for o in self.inner.run(batch)]


def test_nan_outputs_raise_model_failure(tiny_packages):
    # given a loaded predictor whose runtime starts returning NaN
    package = tiny_packages.classifier
    predictor = Predictor.load(package.folder, verify_dir(package.folder))
    predictor.session = NanSession(predictor.session)
    # then predict raises ModelFailure (the manager counts it towards a rollback)
    with pytest.raises(ModelFailure, match="NaN"):
        predictor.predict(frame())
