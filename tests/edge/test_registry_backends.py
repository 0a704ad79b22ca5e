"""Registry backends are plugins: each is one module with its key, config class, read and write side,
collected into the one config shape that both the device config and params.yaml read."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from edge.config import ConfigError, load_config
from edge.registry import BACKENDS, BackendConfig, RegistryConfig, open_registry, open_writer, registry_config
from pipelines.config import load_params

SAGEMAKER = {
    "type": "sagemaker",
    "region": "eu-west-1",
    "endpoint_url": "http://127.0.0.1:5999",
    "s3_bucket": "packages",
    "s3_prefix": "lensops/p",
    "approved_alias": "fleet-lobby",
}


@pytest.mark.parametrize("key", sorted(BACKENDS))
def test_each_backend_module_declares_key_config_and_both_sides(key):
    backend = BACKENDS[key]
    assert backend.KEY == key
    assert issubclass(backend.Config, BackendConfig)
    assert typing.get_args(backend.Config.model_fields["type"].annotation) == (key,)
    assert callable(backend.open_reader) and callable(backend.open_writer)
    assert backend.Config.__doc__ and backend.Config.where is not BackendConfig.where


def test_the_union_holds_every_backend_and_defaults_to_mlflow():
    union = typing.get_args(typing.get_args(RegistryConfig)[0])
    assert {member.model_fields["type"].default for member in union} == set(BACKENDS)
    assert registry_config({}).type == "mlflow"


def test_an_unknown_type_lists_the_valid_ones(tmp_path):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["pipeline"]["registry"] = {"type": "vertex"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(Exception) as err:
        load_params(path)
    assert "pipeline.registry" in str(err.value) and "'vertex'" in str(err.value)
    assert all(f"'{key}'" in str(err.value) for key in BACKENDS)


def _device_yaml(tmp_path: Path, registry: dict) -> Path:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0")
    path = tmp_path / "device.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "device_id": "cam-01",
                "registry": registry,
                "sources": [{"id": "door", "uri": str(video)}],
                "mqtt": {"url": "mqtt://127.0.0.1:1883"},
            }
        )
    )
    return path


def test_device_and_pipeline_read_one_shape(tmp_path):
    """The device's registry section is the pipeline's plus what the device follows (model, alias, ...)."""
    device = load_config(_device_yaml(tmp_path, {**SAGEMAKER, "model": "shapes-detector", "alias": "fleet-lobby"}))
    pipeline = registry_config(SAGEMAKER)
    assert type(device.registry).__mro__[1] is type(pipeline)  # the device's class extends the backend's
    assert device.registry.client_options() == pipeline.client_options()
    assert device.registry.where() == pipeline.where() == "http://127.0.0.1:5999"
    assert (device.registry.model, device.registry.alias) == ("shapes-detector", "fleet-lobby")
    # the device keys are the device's own: params.yaml's registry refuses them
    with pytest.raises(Exception, match="model"):
        registry_config({**SAGEMAKER, "model": "shapes-detector"})


def test_mlflow_sqlite_store_must_exist_on_a_device_only(tmp_path):
    with pytest.raises(ConfigError, match=r"registry\.uri: sqlite database .*nope\.db.* does not exist"):
        load_config(_device_yaml(tmp_path, {"type": "mlflow", "uri": "sqlite:///nope.db", "model": "m"}))
    # `lensops register` creates the store: the pipeline takes a path that is not there yet
    assert registry_config({"uri": "sqlite:///nope.db"}).uri == "sqlite:///nope.db"
    (tmp_path / "there.db").touch()
    device = load_config(_device_yaml(tmp_path, {"uri": "sqlite:///there.db", "model": "m"}))
    assert device.registry.type == "mlflow" and device.registry.uri == f"sqlite:///{tmp_path / 'there.db'}"


def test_mlflow_uri_defaults_to_the_environment_when_opened(monkeypatch, tmp_path):
    # the variable is read when the registry is opened, as MLflow reads it, and is not validated by the config
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://lensops@db.internal/mlflow")
    config = registry_config({"type": "mlflow"})
    assert config.uri is None and config.where() == "postgresql://lensops@db.internal/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    assert open_registry(config).uri == f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert registry_config({}).where() == "sqlite:///mlflow.db"


@pytest.mark.parametrize(
    "uri", ["postgresql://u@db/mlflow", "postgresql+psycopg2://u@db/mlflow", "mysql://u@db/m", "./mlruns", "databricks"]
)
def test_mlflow_takes_every_tracking_uri_form_mlflow_takes(uri):
    assert registry_config({"uri": uri}).uri == uri


def test_an_empty_or_unknown_mlflow_uri_is_an_error(tmp_path):
    for uri, message in (("", "uri: empty"), ("ftp://x", "scheme ftp:// in 'ftp://x' is not one of sqlite://")):
        with pytest.raises(Exception, match=message):
            registry_config({"uri": uri})
    # on a device a bare folder must be a file store that is there (a forgotten sqlite:/// is caught)
    with pytest.raises(ConfigError, match="'mlflow.db' has no scheme"):
        load_config(_device_yaml(tmp_path, {"uri": "mlflow.db", "model": "m"}))


def test_open_registry_and_writer_pick_the_backend(tmp_path):
    config = registry_config({"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    reader, writer = open_registry(config), open_writer(config)
    assert type(reader).__name__ == "MlflowRegistry" and type(writer).__name__ == "MlflowRegistryWriter"
    assert reader.uri == writer.uri == config.uri
