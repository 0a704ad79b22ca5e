"""load_params: `pipeline` from params.yaml, `models` from it or from a file of their own (--models-from)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.errors import UserError

from pipelines.config import load_params

PIPELINE = {"variants": ["onnx-fp32"], "latency_runs": 3, "promote": {"fleet": "lobby"}}
BASE_MODELS = {"detector": {"name": "shapes-detector", "model_dir": "models/detector", "data": "data/base"}}
RETRAIN_MODELS = {
    "detector_retrained": {"name": "shapes-detector", "model_dir": "models/detector_retrained", "data": "data/retrain"}
}


def _write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def test_models_from_another_file_use_the_pipeline_of_params_yaml(tmp_path):
    # given params.yaml (pipeline + the dvc models) and a retrain file with only its own models
    params = _write(tmp_path / "params.yaml", {"pipeline": PIPELINE, "models": BASE_MODELS})
    retrain = _write(tmp_path / "params-retrain.yaml", {"retrain_detector": {"epochs": 1}, "models": RETRAIN_MODELS})
    # when both are read
    loaded = load_params(params, retrain)
    # then the pipeline settings are params.yaml's and the models the retrain file's only
    assert loaded.pipeline.promote.fleet == "lobby" and loaded.pipeline.variants == ("onnx-fp32",), loaded.pipeline
    assert set(loaded.models) == {"detector_retrained"}, loaded.models
    assert loaded.model("detector_retrained").model_dir == Path("models/detector_retrained")
    assert set(load_params(params).models) == {"detector"}, "without --models-from, params.yaml's models"


def test_an_unknown_model_names_the_file_models_came_from(tmp_path):
    params = _write(tmp_path / "params.yaml", {"pipeline": PIPELINE, "models": BASE_MODELS})
    retrain = _write(tmp_path / "params-retrain.yaml", {"models": RETRAIN_MODELS})
    with pytest.raises(UserError, match=r"params-retrain\.yaml: models has no 'detector' \(has detector_retrained\)"):
        load_params(params, retrain).model("detector")


def test_a_pipeline_section_in_the_models_file_is_refused(tmp_path):
    # given a retrain file that still carries its own copy of `pipeline`
    params = _write(tmp_path / "params.yaml", {"pipeline": PIPELINE, "models": BASE_MODELS})
    retrain = _write(tmp_path / "params-retrain.yaml", {"models": RETRAIN_MODELS, "pipeline": PIPELINE})
    # when / then: one error naming both files, not a silently ignored copy that drifts
    with pytest.raises(UserError, match=r"params-retrain\.yaml: holds a `pipeline` section.*params\.yaml only"):
        load_params(params, retrain)


@pytest.mark.parametrize(
    "where, content, named",
    [
        ("params", {"pipeline": {**PIPELINE, "colour": "red"}}, "params.yaml: pipeline.colour"),
        ("models", {"models": {"m": {"name": "x", "model_dir": "m"}}}, "params-retrain.yaml: models.m.data"),
    ],
)
def test_a_bad_field_names_its_file_and_key(tmp_path, where, content, named):
    params = _write(tmp_path / "params.yaml", content if where == "params" else {"pipeline": PIPELINE})
    retrain = _write(tmp_path / "params-retrain.yaml", content if where == "models" else {"models": RETRAIN_MODELS})
    with pytest.raises(UserError, match=named):
        load_params(params, retrain)
