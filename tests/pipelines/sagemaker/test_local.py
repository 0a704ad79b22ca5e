"""SageMaker script mode, emulated locally: the entry point runs in a container-like /opt/ml tree."""

from __future__ import annotations

import tarfile

import pytest

from common.errors import UserError

from lensops.cli import main as lensops_main
from pipelines.sagemaker.local import hyperparameters_from_args

pytestmark = pytest.mark.slow


def test_local_job_leaves_model_tar_gz(tiny_cls, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # given a data channel and hyperparameters as SageMaker would pass them
    out = tmp_path / "job"
    code = lensops_main(
        [
            "sagemaker",
            "train",
            "--local",
            "--data",
            str(tiny_cls),
            "--out",
            str(out),
            "--task",
            "classification",
            "--network",
            "mobilenet0.25",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--input-size",
            "32",
            "--lr",
            "0.002",
            "--optimizer",
            "adam",
            "--num-workers",
            "0",
        ]
    )
    printed = capsys.readouterr().out
    # then the job succeeds and leaves model.tar.gz with the exported network at its root
    assert code == 0, printed[-2000:]
    with tarfile.open(out / "model.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"model-symbol.json", "model-0000.params", "model.json"} <= names, names
    # and metrics are printed one per line for metric_definitions regexes
    assert "[metric] val_accuracy=" in printed and "[metric] test_accuracy=" in printed
    with tarfile.open(out / "output.tar.gz") as tar:
        assert "metrics.json" in tar.getnames()


def test_failed_job_writes_failure_and_no_model(tiny_cls, tmp_path, capsys):
    out = tmp_path / "job"
    code = lensops_main(
        [
            "sagemaker",
            "train",
            "--local",
            "--data",
            str(tiny_cls),
            "--out",
            str(out),
            "--task",
            "classification",
            "--network",
            "nope_net",
            "--epochs",
            "1",
        ]
    )
    err = capsys.readouterr()
    assert code != 0
    assert "nope_net" in err.out + err.err
    assert not (out / "model.tar.gz").exists(), "a failed job leaves no model artifact"


def test_hyperparameters_must_be_pairs():
    assert hyperparameters_from_args(["--epochs", "3"]) == {"epochs": "3"}
    with pytest.raises(UserError, match="--freeze"):
        hyperparameters_from_args(["--freeze", "--epochs", "3"])
