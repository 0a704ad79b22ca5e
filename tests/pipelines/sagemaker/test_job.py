"""`lensops sagemaker train` / `attach` against moto in server mode (a real HTTP endpoint).

moto accepts CreateTrainingJob and reports Completed at once without running anything or writing
model.tar.gz, so these tests check what SageMaker receives (the request, the uploaded code and data)
and put the model.tar.gz that the same entry point produces under `--local` where the job points.
"""

from __future__ import annotations

import io
import json
import re
import tarfile

import boto3
import pytest

from lensops.cli import main as lensops_main
from pipelines.sagemaker.job import JobFailed, SageMakerJobError, metric_definitions, outcome, unpack_model

from tests.pipelines.sagemaker.conftest import BUCKET, ROLE


def launch(*extra: str) -> int:
    return lensops_main(["sagemaker", "train", "--role", ROLE, "--bucket", BUCKET, *extra])


def keys(prefix: str = "") -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_dry_run_prints_the_request_and_sends_nothing(aws, tiny_cls, capsys):
    code = launch(
        "--dry-run",
        "--data",
        str(tiny_cls),
        "--instance-count",
        "2",
        "--spot",
        "--task",
        "classification",
        "--epochs",
        "3",
    )
    out = capsys.readouterr().out
    assert code == 0
    request = json.loads(out[out.index("{") :])
    spec = request["AlgorithmSpecification"]
    # the project's entry point in AWS's MXNet 1.9 training container, script mode
    assert spec["TrainingImage"].endswith("/mxnet-training:1.9.0-cpu-py38")
    hps = {k: json.loads(v) for k, v in request["HyperParameters"].items()}
    assert hps["sagemaker_program"] == "lensops_train.py" and hps["epochs"] == "3"
    assert "sagemaker_parameter_server_enabled" not in hps  # the entry point brings the roles up itself
    assert request["ResourceConfig"]["InstanceCount"] == 2
    # metric definitions match the lines the training loop prints
    regexes = {m["Name"]: m["Regex"] for m in spec["MetricDefinitions"]}
    line = "[metric] val_accuracy=0.912500 epoch=4"
    assert re.search(regexes["val_accuracy"], line).group(1) == "0.912500"
    assert not re.search(regexes["val_accuracy"], "[metric] best_val_accuracy=0.95")
    # spot training resumes from a checkpoint URI; tags carry the lineage
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"]["S3Uri"].startswith(f"s3://{BUCKET}/lensops/checkpoints/")
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert {t["Key"] for t in request["Tags"]} >= {"git_commit", "data_train"}
    # and nothing was sent or uploaded
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert keys() == []


def test_a_job_uploads_code_and_data_then_attach_downloads_its_model(aws, tiny_cls, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hyperparameters = [
        "--task",
        "classification",
        "--network",
        "mobilenet0.25",
        "--epochs",
        "1",
        "--model-name",
        "sm-classifier",
        "--batch-size",
        "16",
        "--input-size",
        "32",
        "--num-workers",
        "0",
        "--tracking",
        "none",
    ]
    assert launch("--no-wait", "--data", str(tiny_cls), *hyperparameters) == 0
    name = re.search(r"training job: (\S+)", capsys.readouterr().out).group(1)
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
    # the data channel was uploaded, under a name carrying its content hash
    channel = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    data_prefix = channel.split(f"s3://{BUCKET}/", 1)[1]
    assert any(k.endswith("labels.txt") for k in keys(data_prefix)), keys(data_prefix)
    # the code is the entry point, the training package and its requirements
    source = [k for k in keys() if k.endswith("sourcedir.tar.gz")]
    assert len(source) == 1
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=source[0])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert {"lensops_train.py", "requirements.txt", "training/train.py"} <= set(tar.getnames())

    # the same entry point, run as the container runs it, makes the job's model.tar.gz
    local = tmp_path / "local"
    assert (
        lensops_main(["sagemaker", "train", "--local", "--data", str(tiny_cls), "--out", str(local), *hyperparameters])
        == 0
    )
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = artifact[len("s3://") :].split("/", 1)
    boto3.client("s3").upload_file(str(local / "model.tar.gz"), bucket, key)

    out = tmp_path / "downloaded"
    assert lensops_main(["sagemaker", "attach", name, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{name}: Completed" in printed and "model artifact:" in printed
    assert (out / "model.tar.gz").read_bytes() == (local / "model.tar.gz").read_bytes()
    # unpacked into a model folder whose lineage names the job
    lineage = json.loads((out / "model" / "model.json").read_text())["lineage"]
    assert lineage["sagemaker_job"] == name and lineage["model_artifact"] == artifact

    # from the job to the registry: the same evaluate -> optimize -> package -> register -> promote as a local run
    monkeypatch.chdir(tmp_path)
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {
        "models": {"from_job": {"name": "sm-classifier", "model_dir": str(out / "model"), "data": str(tiny_cls)}},
        "pipeline": {
            "registry": {"type": "mlflow", "uri": registry},
            "variants": ["mxnet-fp32", "onnx-fp32"],
            "latency_runs": 3,
            "golden_samples": 2,
            "calibration_images": 16,
            "parity": {"max_accuracy_drop_pt": 100.0},
            "promote": {"min_improvement": -1.0, "latency_budget_ms": 10000.0},
        },
    }
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    for command in (["evaluate"], ["optimize"], ["package", "build"], ["register"], ["promote"]):
        assert lensops_main([*command, "--model", "from_job"]) == 0, command
    from mlflow import MlflowClient

    version = MlflowClient(registry, registry).get_model_version_by_alias("sm-classifier", "production")
    assert version.tags["sagemaker_job"] == name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "s3:/lensops-jobs/data"], "'s3:/lensops-jobs/data' is not an S3 URI"),
        (["--data", "s3://lensops-jobs/no/such/prefix"], "nothing under s3://lensops-jobs/no/such/prefix"),
        (["--data", "s3://lensops-missing-bucket/data"], "bucket 'lensops-missing-bucket' does not exist"),
        (["--data", "/no/such/folder"], "/no/such/folder is not a folder"),
    ],
)
def test_bad_channels_are_named_and_nothing_is_created(aws, args, message, capsys):
    assert launch(*args, "--epochs", "1") == 2
    assert message in capsys.readouterr().err
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_unknown_role_and_missing_bucket_are_named(aws, tiny_cls, capsys):
    assert (
        lensops_main(["sagemaker", "train", "--role", "NoSuchRole", "--bucket", BUCKET, "--data", str(tiny_cls)]) == 2
    )
    assert "role 'NoSuchRole' does not exist" in capsys.readouterr().err
    assert (
        lensops_main(["sagemaker", "train", "--role", ROLE, "--bucket", "lensops-nowhere", "--data", str(tiny_cls)])
        == 2
    )
    assert "bucket 'lensops-nowhere' does not exist" in capsys.readouterr().err
    assert keys() == [] and boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_no_credentials_is_one_line(tmp_path, monkeypatch, capsys, tiny_cls):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert launch("--data", str(tiny_cls)) == 2
    assert "no AWS credentials found" in capsys.readouterr().err


def test_an_artifact_without_a_model_is_named_and_leaves_no_folder(tmp_path):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"not a model"
        info = tarfile.TarInfo("notes.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "job"
    with pytest.raises(SageMakerJobError, match="holds no LensOps model.json"):
        unpack_model(archive, out, "job-1", "s3://b/k/model.tar.gz")
    assert list(out.iterdir()) == []


def test_unknown_job_is_named(aws, capsys, tmp_path):
    assert lensops_main(["sagemaker", "attach", "lensops-train-nope", "--out", str(tmp_path)]) == 2
    assert "lensops-train-nope" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "status, extra, message",
    [
        ("Failed", {"FailureReason": "AlgorithmError: out of memory"}, "failed: AlgorithmError: out of memory"),
        ("Stopped", {"SecondaryStatus": "Stopped"}, "was stopped"),
    ],
)
def test_failed_and_stopped_jobs_end_with_their_reason(status, extra, message):
    # moto cannot fail or stop a job (StopTrainingJob is not implemented): the description's shape is SageMaker's
    with pytest.raises(JobFailed, match=message) as raised:
        outcome({"TrainingJobName": "job-1", "TrainingJobStatus": status, **extra})
    assert raised.value.exit_code == 1


def test_every_metric_line_has_a_definition():
    names = {m["Name"] for m in metric_definitions()}
    assert {"train_loss", "val_accuracy", "val_map", "test_accuracy", "test_map"} <= names
