"""`lensops sagemaker pipeline upsert|start|status` against moto, and the steps' own code run locally.

moto stores the definition and "runs" executions without running steps, so the definition is checked
(steps, dependencies, parameters, the gate's conditions), and the processing steps' code
(pipelines.sagemaker.steps) is run here as the container would run it, against moto's S3 and
SageMaker Model Registry.
"""

from __future__ import annotations

import json
import tarfile

import boto3
import cv2
import numpy as np
import pytest
import yaml

from lensops.cli import main as lensops_main
from pipelines.sagemaker import steps
from tests.edge.conftest import collectors, mosquitto  # noqa: F401 (fixtures)
from tests.edge.runner_fixtures import run_device  # noqa: F401 (fixture)
from tests.edge.runner_setup import DEVICE, inference
from tests.pipelines.sagemaker.conftest import BUCKET, ROLE

pytestmark = pytest.mark.slow
MODEL = "sm-pipeline-classifier"


def _params(tmp_path, tiny_cls) -> dict:
    params = {
        "train_classifier": {
            "task": "classification",
            "network": "mobilenet0.25",
            "model_name": MODEL,
            "data": str(tiny_cls),
            "input_size": 32,
            "epochs": 1,
            "batch_size": 16,
            "optimizer": "adam",
            "lr": 0.002,
            "num_workers": 0,
            "model_dir": "models/x",
        },
        "pipeline": {
            "registry": {"type": "mlflow", "uri": "sqlite:///mlflow.db"},
            "variants": ["mxnet-fp32", "onnx-fp32"],
            "latency_runs": 3,
            "golden_samples": 2,
            "calibration_images": 16,
            "parity": {"max_accuracy_drop_pt": 100.0},
            "promote": {"min_improvement": 0.0, "latency_budget_ms": 10000.0},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def test_upsert_writes_the_definition_and_start_status_reach_sagemaker(aws, tiny_cls, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _params(tmp_path, tiny_cls)
    out = tmp_path / "pipeline.json"
    assert (
        lensops_main(
            [
                "sagemaker",
                "pipeline",
                "upsert",
                "--role",
                ROLE,
                "--bucket",
                BUCKET,
                "--section",
                "train_classifier",
                "--data-uri",
                f"s3://{BUCKET}/data/shapes",
                "--min-metric",
                "0.5",
                "--definition-out",
                str(out),
            ]
        )
        == 0
    )
    definition = json.loads(out.read_text())
    parameters = {p["Name"]: p for p in definition["Parameters"]}
    assert set(parameters) == {"DataUri", "Epochs", "TrainInstanceType", "ProcessingInstanceType", "MinMetric"}
    assert parameters["DataUri"]["DefaultValue"] == f"s3://{BUCKET}/data/shapes"
    assert parameters["MinMetric"]["DefaultValue"] == 0.5 and parameters["Epochs"]["DefaultValue"] == 1
    step = {s["Name"]: s for s in definition["Steps"]}
    assert [s["Name"] for s in definition["Steps"]] == ["Train", "Ship", "Gate"]
    # Train: the project's entry point, the section's hyperparameters, epochs from the parameter
    train = step["Train"]["Arguments"]
    assert train["AlgorithmSpecification"]["TrainingImage"].endswith("/mxnet-training:1.9.0-cpu-py38")
    assert json.loads(train["HyperParameters"]["model_name"]) == MODEL
    assert "data" not in train["HyperParameters"] and "model_dir" not in train["HyperParameters"]
    assert json.dumps(train["HyperParameters"]["epochs"]).count("Parameters.Epochs") == 1
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == {"Get": "Parameters.DataUri"}
    # Ship reads the training step's model and writes the property file the gate reads
    ship = step["Ship"]
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in ship["Arguments"]["ProcessingInputs"]}
    assert inputs["model"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["data"] == {"Get": "Parameters.DataUri"}
    assert ship["PropertyFiles"] == [
        {"FilePath": "evaluation.json", "OutputName": "evaluation", "PropertyFileName": "EvaluationReport"}
    ]
    # Gate: parity and the metric against MinMetric; Register on pass, GateFailed otherwise
    gate = step["Gate"]["Arguments"]
    conditions = {(c["Type"], c["LeftValue"]["Std:JsonGet"]["Path"]): c["RightValue"] for c in gate["Conditions"]}
    assert conditions == {
        ("Equals", "parity_ok"): True,
        ("GreaterThanOrEqualTo", "value"): {"Get": "Parameters.MinMetric"},
    }
    assert [s["Name"] for s in gate["IfSteps"]] == ["Register"] and [s["Name"] for s in gate["ElseSteps"]] == [
        "GateFailed"
    ]
    register = gate["IfSteps"][0]["Arguments"]
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in register["ProcessingInputs"]}
    assert inputs["package"] == {"Get": "Steps.Ship.ProcessingOutputConfig.Outputs['package'].S3Output.S3Uri"}
    assert inputs["data"] == {"Get": "Parameters.DataUri"}
    assert "register" in register["AppSpecification"]["ContainerArguments"]

    name = f"lensops-{MODEL}"
    assert boto3.client("sagemaker").describe_pipeline(PipelineName=name)["PipelineName"] == name
    assert lensops_main(["sagemaker", "pipeline", "start", name, "--param", "Epochs=3"]) == 0
    assert lensops_main(["sagemaker", "pipeline", "status", name]) == 0
    printed = capsys.readouterr().out
    execution = printed.split("execution: ", 1)[1].split()[0]
    assert execution in printed.split("execution: ", 1)[1].split("\n", 1)[1]


def test_bad_upsert_input_is_named(aws, tiny_cls, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _params(tmp_path, tiny_cls)
    base = ["sagemaker", "pipeline", "upsert", "--role", ROLE, "--bucket", BUCKET]
    assert lensops_main([*base, "--section", "train_nothing"]) == 2
    assert "missing params key 'train_nothing'" in capsys.readouterr().err
    assert lensops_main([*base, "--section", "train_classifier", "--data-uri", "s3:/x"]) == 2
    assert "--data-uri: 's3:/x' is not an S3 URI" in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train_empty": None, "train_words": {"epochs": "many"}}))
    assert lensops_main([*base, "--section", "train_empty"]) == 2
    assert "params key 'train_empty' must be a mapping" in capsys.readouterr().err
    assert lensops_main([*base, "--section", "train_words"]) == 2
    assert "train_words.epochs: 'many' is not a whole number" in capsys.readouterr().err
    assert lensops_main(["sagemaker", "pipeline", "start", "lensops-none"]) == 2
    assert "lensops-none" in capsys.readouterr().err
    assert boto3.client("sagemaker").list_pipelines()["PipelineSummaries"] == []


def test_the_steps_ship_and_register_a_job_model_and_a_device_serves_it(
    aws, tiny_cls, tmp_path, monkeypatch, mosquitto, collectors, run_device
):
    """The AWS path end to end: a job's model.tar.gz -> Ship -> Register (SageMaker Model Registry approves
    it) -> a device with `registry: {type: sagemaker}` pulls the approved version and serves it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, tiny_cls)
    # the training step's output, as the container makes it
    job = tmp_path / "job"
    section = params["train_classifier"]
    hyperparameters = [x for k, v in section.items() if k not in ("data", "model_dir") for x in (f"--{k}", str(v))]
    assert (
        lensops_main(
            [
                "sagemaker",
                "train",
                "--local",
                "--data",
                str(tiny_cls),
                "--out",
                str(job),
                *hyperparameters,
                "--tracking",
                "none",
            ]
        )
        == 0
    )
    # the processing steps' params.yaml: the SageMaker Model Registry in the pipeline's bucket
    step_params = tmp_path / "step-params.yaml"
    pipeline = {
        **params["pipeline"],
        "registry": {"type": "sagemaker", "s3_bucket": BUCKET, "s3_prefix": "lensops/packages"},
    }
    step_params.write_text(yaml.safe_dump({"pipeline": pipeline}))
    processing = tmp_path / "processing"
    assert (
        steps.main(
            [
                "ship",
                "--model-dir",
                str(job),
                "--data",
                str(tiny_cls),
                "--out",
                str(processing / "evaluation"),
                "--package-out",
                str(processing / "package"),
                "--model-name",
                MODEL,
                "--job-name",
                "job-7",
                "--params",
                str(step_params),
            ]
        )
        == 0
    )
    report = json.loads((processing / "evaluation" / "evaluation.json").read_text())
    assert report["metric"] == "test_accuracy" and 0.0 <= report["value"] <= 1.0
    assert report["parity_ok"] is True and report["variants_passed"] == ["mxnet-fp32", "onnx-fp32"]
    with tarfile.open(next((processing / "package").glob("*.tar.gz"))) as tar:
        assert any(name.endswith("manifest.json") for name in tar.getnames())

    assert (
        steps.main(
            [
                "register",
                "--package-dir",
                str(processing / "package"),
                "--data",
                str(tiny_cls),
                "--model-name",
                MODEL,
                "--task",
                "classification",
                "--params",
                str(step_params),
            ]
        )
        == 0
    )
    # the first version of a group has no champion to beat: promote approves it
    packages = boto3.client("sagemaker").list_model_packages(ModelPackageGroupName=MODEL)["ModelPackageSummaryList"]
    assert [p["ModelApprovalStatus"] for p in packages] == ["Approved"]

    # a device on the SageMaker registry pulls the approved version and publishes every frame with it
    (tmp_path / "frames").mkdir()
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"frames/{i}.png"), np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8))
    device = {
        "device_id": DEVICE,
        "registry": {
            "type": "sagemaker",
            "model": MODEL,
            "region": "us-east-1",
            "endpoint_url": aws,
            "s3_bucket": BUCKET,
        },
        "sources": [{"id": "door", "uri": str(tmp_path / "frames")}],
        "mqtt": {"url": mosquitto.url},
        "state_dir": str(tmp_path / "device-state"),
    }
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(device))
    collector = collectors(mosquitto.port, [f"lensops/{DEVICE}/#"])
    runner = run_device(tmp_path / "device.yaml", exit_when_done=True)
    assert runner.wait(120), "the runner did not finish the five frames"
    assert collector.wait_for(lambda ms: len(inference(ms)) >= 5, 10)
    served = {r["model"]["version"] for r in inference(collector.messages)}
    assert served == {packages[0]["ModelPackageArn"].rsplit("/", 1)[-1]}, served  # the group's version number
