"""Config parsing: one clear error naming the key."""

from pathlib import Path

import pytest

from training.config import load_section, parse_config
from training.errors import ConfigError
from training.train import config_from_args
from training.sagemaker_env import RunEnvironment, read_environment

BASE = {"task": "classification", "network": "mobilenet0.25", "data": "d", "model_name": "m"}


def test_missing_params_key_is_named():
    values = dict(BASE)
    del values["network"]
    with pytest.raises(ConfigError, match="'network': missing params key"):
        parse_config(values, "params.yaml[train]")


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'epochz': unknown key"):
        parse_config({**BASE, "epochz": 3})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="'epochs'"):
        parse_config({**BASE, "epochs": "many"})


def test_freeze_without_starting_point_is_rejected():
    with pytest.raises(ConfigError, match="freeze_backbone requires"):
        parse_config({**BASE, "freeze_backbone": True})


def test_missing_section_names_it(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("train_classifier: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="missing params key 'train_detector'"):
        load_section(params, "train_detector")


def test_cli_overrides_params_file(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("t: {task: classification, network: mobilenet0.25, data: d, model_name: m, epochs: 5}\n")
    cfg = config_from_args(
        ["--params", str(params), "--section", "t", "--epochs", "2", "--batch-size", "8"], RunEnvironment()
    )
    assert (cfg.epochs, cfg.batch_size) == (2, 8), "command-line hyperparameters win over params.yaml"


def test_sagemaker_environment_fills_paths(tmp_path: Path):
    env = read_environment(
        {
            "SM_MODEL_DIR": str(tmp_path / "model"),
            "SM_CHANNEL_TRAIN": str(tmp_path / "train"),
            "SM_HOSTS": '["algo-1", "algo-2"]',
            "SM_CURRENT_HOST": "algo-2",
        }
    )
    assert env.in_sagemaker and env.is_distributed and env.rank == 1
    assert env.checkpoint_dir == tmp_path / "checkpoints", "checkpoints sit beside /opt/ml/model"
    cfg = config_from_args(["--task", "classification", "--network", "mobilenet0.25"], env)
    assert cfg.data == tmp_path / "train" and cfg.model_dir == tmp_path / "model"
    assert read_environment({}).in_sagemaker is False, "outside SageMaker the defaults are local"
