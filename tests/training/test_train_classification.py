"""Real short classification runs: export, tracking, determinism, resume, fine-tuning, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from training import runner
from training.errors import DatasetError
from training.sagemaker_env import RunEnvironment
from training.train import main as train_main
from tests.training.easy_shapes import easy_shapes
from tests.training.helpers import quick_config

pytestmark = pytest.mark.slow


def _params(model_dir: Path) -> dict:
    return {k: v.asnumpy() for k, v in mx.nd.load(str(model_dir / "model-0000.params")).items()}


def test_short_run_exports_model_and_tracks_it(tiny_cls, tmp_path, mlflow_uri):
    # given a tiny ImageFolder and a local MLflow store
    cfg = quick_config(
        tiny_cls, tmp_path, tracking="mlflow", metrics_file=tmp_path / "metrics.json", plots_dir=tmp_path / "plots"
    )
    # when training for two epochs
    result = runner.train(cfg, RunEnvironment(), tmp_path)
    # then the model folder holds the hybridized symbol, params and metadata
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert meta["classes"] == ["circle", "square", "triangle", "star", "cross"]
    assert meta["input"]["size"] == [32, 32] and meta["input"]["colour_order"] == "RGB"
    assert (result.model_dir / "model-symbol.json").is_file(), "hybridized graph exported"
    assert meta["lineage"]["data_hash"].endswith(".dir")
    assert "test_accuracy" in json.loads((tmp_path / "metrics.json").read_text())
    for name in ("curves.csv", "curves.png", "confusion.csv", "confusion.png"):
        assert (tmp_path / "plots" / name).is_file(), f"plot {name} written"
    # and MLflow has a finished run with per-epoch metrics and the exported network
    import mlflow

    client = mlflow.tracking.MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(result.run_id, "train_loss")) == 2, "one loss point per epoch"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "model")}
    assert "model/model-symbol.json" in artifacts and "model/model.json" in artifacts
    assert run.data.tags["data_hash"] == meta["lineage"]["data_hash"]


def test_same_seed_same_weights(tiny_cls, tmp_path):
    a = runner.train(quick_config(tiny_cls, tmp_path / "a", epochs=1, num_workers=2), RunEnvironment(), tmp_path)
    b = runner.train(quick_config(tiny_cls, tmp_path / "b", epochs=1, num_workers=2), RunEnvironment(), tmp_path)
    pa, pb = _params(a.model_dir), _params(b.model_dir)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=f"{key} differs between two seeded runs")


def test_resume_continues_where_it_stopped(tiny_cls, tmp_path, monkeypatch):
    # given an uninterrupted 3-epoch run
    full = runner.train(quick_config(tiny_cls, tmp_path / "full", epochs=3), RunEnvironment(), tmp_path)
    # and a run of the same config killed during its third epoch (like a spot interruption)
    from training.classification import ClassificationTask

    original = ClassificationTask.train_batch
    calls = {"n": 0}
    steps_per_epoch = len(runner.prepare_data(quick_config(tiny_cls, tmp_path))[0].split("train")) // 16

    def dying(self, net, batch, trainer):
        calls["n"] += 1
        if calls["n"] > 2 * steps_per_epoch + 1:
            raise KeyboardInterrupt("spot instance reclaimed")
        return original(self, net, batch, trainer)

    monkeypatch.setattr(ClassificationTask, "train_batch", dying)
    cfg = quick_config(tiny_cls, tmp_path / "resumed", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        runner.train(cfg, RunEnvironment(), tmp_path)
    assert not cfg.model_dir.exists(), "no model is exported by an interrupted run"
    monkeypatch.setattr(ClassificationTask, "train_batch", original)
    # when the same command runs again
    resumed = runner.train(cfg, RunEnvironment(), tmp_path)
    # then it picks up at epoch 2 and ends with the same weights as the uninterrupted run
    assert resumed.epochs_run == 3
    pf, pr = _params(full.model_dir), _params(resumed.model_dir)
    for key in pf:
        np.testing.assert_allclose(pf[key], pr[key], rtol=1e-5, atol=1e-6, err_msg=f"{key} differs after resume")


def test_finetune_onto_new_classes_beats_scratch(tmp_path):
    # given a model trained on three classes (easy shapes: a base that learns within seconds)
    base_data = easy_shapes(tmp_path / "three", ["circle", "square", "triangle"], per_class=100, seed=1)
    net = {"network": "resnet18_v1"}
    base = runner.train(quick_config(base_data, tmp_path / "base", epochs=8, **net), RunEnvironment(), tmp_path)
    # and a data set with a changed class list (triangle dropped, cross new)
    new_data = easy_shapes(tmp_path / "new", ["circle", "square", "cross"], per_class=100, seed=2)
    # when fine-tuning from it for one epoch vs training from scratch for one epoch
    tuned = runner.train(
        quick_config(new_data, tmp_path / "tuned", epochs=1, init_from=str(base.model_dir), **net),
        RunEnvironment(),
        tmp_path,
    )
    scratch = runner.train(quick_config(new_data, tmp_path / "scratch", epochs=1, **net), RunEnvironment(), tmp_path)
    # then the fine-tuned model has the new head and a lower loss
    meta = json.loads((tuned.model_dir / "model.json").read_text())
    assert meta["classes"] == ["circle", "square", "cross"]
    assert meta["lineage"]["init"]["copied"] > 50, "backbone weights were carried over"
    assert meta["lineage"]["init"]["new_classes"] == ["cross"]
    assert meta["lineage"]["init"]["reinitialised"] == 2, "only the output layer (weight, bias) has new rows"
    assert tuned.metrics["test_loss"] < scratch.metrics["test_loss"], (
        f"fine-tuned loss {tuned.metrics['test_loss']:.3f} should beat scratch {scratch.metrics['test_loss']:.3f}"
    )


def test_freeze_backbone_changes_only_the_head(tiny_cls, tmp_path):
    base = runner.train(quick_config(tiny_cls, tmp_path / "base", epochs=1), RunEnvironment(), tmp_path)
    tuned = runner.train(
        quick_config(tiny_cls, tmp_path / "frozen", epochs=1, init_from=str(base.model_dir), freeze_backbone=True),
        RunEnvironment(),
        tmp_path,
    )
    before, after = _params(base.model_dir), _params(tuned.model_dir)
    conv = "arg:mobilenet0_conv0_weight"
    np.testing.assert_array_equal(before[conv], after[conv], err_msg="frozen backbone weight changed")
    assert not np.array_equal(before["arg:mobilenet0_dense0_weight"], after["arg:mobilenet0_dense0_weight"])


def test_corrupt_jpeg_fails_cleanly(tiny_cls, tmp_path, capsys, mlflow_uri):
    # given a copy of the data with one truncated JPEG
    data = tmp_path / "data"
    shutil.copytree(tiny_cls, data)
    victim = sorted((data / "train" / "star").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    # when training through the entry point
    code = train_main(
        [
            "--task",
            "classification",
            "--network",
            "mobilenet0.25",
            "--data",
            str(data),
            "--model-name",
            "x",
            "--model-dir",
            str(tmp_path / "model"),
            "--tracking",
            "mlflow",
            "--epochs",
            "1",
            "--progress",
            "false",
        ]
    )
    # then one clear error names the file, the exit code is non-zero and no model is written
    err = capsys.readouterr().err
    assert code != 0
    assert victim.name in err and "error:" in err, err
    assert not (tmp_path / "model").exists()
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True) if (tmp_path / "mlflow.db").exists() else []
    assert len(runs) == 0, "the data set is checked before any MLflow run starts"


def test_missing_params_key_exits_non_zero(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("train_classifier: {task: classification, data: d, model_name: m}\n")
    code = train_main(["--params", str(params), "--section", "train_classifier"])
    assert code != 0
    assert "'network': missing params key" in capsys.readouterr().err


def test_empty_split_is_an_error(tiny_cls, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_cls, data)
    shutil.rmtree(data / "val")
    with pytest.raises(DatasetError, match="val"):
        runner.train(quick_config(data, tmp_path / "out"), RunEnvironment(), tmp_path)
    assert not (tmp_path / "out" / "model").exists()


def test_pretrained_without_cache_names_the_folder(tiny_cls, tmp_path, capsys):
    code = train_main(
        [
            "--task",
            "classification",
            "--network",
            "mobilenet0.25",
            "--data",
            str(tiny_cls),
            "--model-name",
            "x",
            "--model-dir",
            str(tmp_path / "model"),
            "--tracking",
            "none",
            "--pretrained",
            "true",
            "--pretrained-cache",
            str(tmp_path / "cache"),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and str(tmp_path / "cache") in err, err
    assert not (tmp_path / "model").exists()


def test_checkpoints_of_other_data_are_not_resumed(tiny_cls, tmp_path, capsys):
    # given checkpoints from a finished run
    runner.train(quick_config(tiny_cls, tmp_path / "out", epochs=1), RunEnvironment(), tmp_path)
    # when the same config trains on changed data
    data = tmp_path / "data"
    shutil.copytree(tiny_cls, data)
    sorted((data / "train" / "circle").glob("*.jpg"))[0].unlink()
    capsys.readouterr()
    again = runner.train(quick_config(data, tmp_path / "out", epochs=1), RunEnvironment(), tmp_path)
    # then it trains afresh instead of resuming (and re-exporting) the old run
    assert "starting afresh" in capsys.readouterr().out
    assert again.epochs_run == 1
