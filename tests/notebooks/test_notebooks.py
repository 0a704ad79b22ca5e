"""The notebooks: each runs top to bottom on tiny data in CI (its last cell checks the figure it shows),
uses the library (never copies of it), and is committed with the outputs of a run of its current code."""
from __future__ import annotations

import ast
import json

import pytest

from lensops.notebooks import DIGEST_KEY, NOTEBOOKS, code_digest, execute, path_of
from lensops.notebooks import main as notebooks_main

# What CI runs instead of the demo data (each notebook's defaults are the demo's, after `make demo`)
QUICK_TRAINING = {"network": "cifar_resnet20_v1", "input_size": 32, "batch_size": 16, "optimizer": "adam", "lr": 0.002,
                  "warmup_epochs": 0.5, "num_workers": 0, "progress": False}
CI_PARAMETERS = {
    "1_data": {"task": "detection", "data": "data/tiny-detection", "generate": 30, "size": 96},
    "2_train_and_finetune": {"data": "data/colours", "init_from": "", "epochs": 4,
                             "finetune_from": "models:/colours@production", "finetune_data": "data/changed",
                             "finetune_epochs": 2, "overrides": QUICK_TRAINING, "min_accuracy": 0.6},
    "3_experiments": {"section": "train_classifier", "data": "data/colours", "epochs": 2, "values": [0.002, 0.004],
                      "overrides": {**QUICK_TRAINING, "init_from": None}},
    "4_ship": {"model_dir": "models/production/model", "data": "data/colours",
               "pipeline_overrides": {"variants": ["mxnet-fp32", "onnx-fp32", "onnx-int8"], "latency_runs": 3,
                                      "golden_samples": 1, "calibration_images": 8}},
    "5_sagemaker": {"data": "data/colours", "section": "train_classifier",
                    "hyperparameters": {"epochs": "1", "network": "cifar_resnet20_v1", "input_size": "32",
                                        "batch_size": "16", "num_workers": "0", "progress": "false"}},
    "6_from_the_device": {"video": "data/video/video.mp4", "model": "boxes", "random_rate": 1.0,
                          "base_data": "data/detection",
                          "retrain_overrides": {"epochs": 1, "network": "ssd_96_mobilenet0.25", "input_size": 96,
                                                "batch_size": 8, "num_workers": 0, "progress": False}},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebook_runs_top_to_bottom_on_tiny_data(name, tiny_project, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_project.tracking_uri)  # the kernel inherits it
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    executed = execute(name, tmp_path / f"{name}.ipynb", CI_PARAMETERS[name], cwd=tiny_project.root)
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    shown = [o for c in executed["cells"] for o in c.get("outputs", [])
             if {"image/png", "text/markdown"} & set(o.get("data", {}))]
    assert shown, f"{name} shows no figure or table"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_committed_notebook_holds_the_outputs_of_its_current_code(name):
    notebook = json.loads(path_of(name).read_text())
    stamp = notebook["metadata"].get(DIGEST_KEY)
    assert stamp, f"{name}: never executed by `python -m lensops.notebooks` (make notebooks)"
    assert stamp["code_sha256"] == code_digest(notebook), (
        f"{name}: its code changed since its outputs were made: run `make notebooks` (after `make demo`)")
    assert not stamp["parameters"], f"{name}: committed outputs must come from its default (demo) parameters"
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1)), "run top to bottom, once"
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebook_uses_the_library(name):
    cells = [c for c in json.loads(path_of(name).read_text())["cells"] if c["cell_type"] == "code"]
    tree = ast.parse("\n".join("".join(c["source"]) for c in cells), filename=name)
    defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert not defs, f"{name} defines {defs}: library code belongs in the packages"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: one cell tagged `parameters` (papermill)"
    modules = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules & {"training", "pipelines", "edge", "lensops"}, f"{name} should use the library"


def test_an_unknown_notebook_and_overrides_kept_in_place_are_one_clear_error(capsys):
    # an unknown name: nothing runs, the known ones are listed
    assert notebooks_main(["1_data", "nosuch"]) == 2
    assert "nosuch: no such notebook (known: 1_data, 2_train_and_finetune" in capsys.readouterr().err
    # overridden parameters would leave other outputs in the committed notebooks than their defaults make
    assert notebooks_main(["1_data", "-p", "generate", "10"]) == 2
    assert "-p runs need --out DIR" in capsys.readouterr().err
