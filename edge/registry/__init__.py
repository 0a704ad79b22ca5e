"""The model registry: resolve an alias to (version, package URI, sha256) and download it (a device);
register packages and move aliases (`lensops register`, `lensops promote`).

Backends are plugins, collected here as Frigate collects its detector plugins: each is one module
under edge/registry/ (`mlflow.py`; `sagemaker/`, a package because it is long) that holds

- `KEY`, the `type:` that names it in a config,
- `Config`, its config class (`type: Literal[KEY]` plus where the registry is), a `BackendConfig`,
- `open_reader(config)` -> the read side (`Registry`: resolve, download),
- `open_writer(config)` -> the write side (`RegistryWriter`: register, set_alias, alias_version, tags).

`RegistryConfig` is the discriminated union of the collected config classes: params.yaml's
`pipeline.registry` reads it as it is, and the device config's `registry` reads it plus what a
device follows (model, alias, key, cache; edge/config.py). An unknown `type` is one error listing
the valid ones. Adding a backend: its module, one line in BACKENDS below, its test.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Union

from pydantic import BeforeValidator, Field, TypeAdapter
from typing_extensions import Annotated  # typing.Annotated is 3.9+ (the SageMaker pipeline steps run 3.8)

from edge.registry import mlflow, sagemaker
from edge.registry.base import (
    LEGACY_PACKAGE_FILE,
    PACKAGE_FILE,
    BackendConfig,
    Registered,
    Registry,
    RegistryError,
    RegistryWriter,
    Resolved,
    download_package,
    package_file,
    version_tags,
)
from edge.registry.mlflow import MlflowRegistry, MlflowRegistryWriter

BACKENDS: dict[str, ModuleType] = {backend.KEY: backend for backend in (mlflow, sagemaker)}
DEFAULT = mlflow.KEY  # `registry:` without a type is MLflow's (DESIGN.md: the registry is MLflow's)


def _default_type(value: Any) -> Any:
    if isinstance(value, dict) and "type" not in value:
        return {"type": DEFAULT, **value}
    return value


def config_union(classes: tuple[type, ...]) -> Any:
    """A discriminated union on `type` over `classes` (one per backend), `type` defaulting to mlflow."""
    return Annotated[Union[classes], Field(discriminator="type"), BeforeValidator(_default_type)]


RegistryConfig = config_union(tuple(backend.Config for backend in BACKENDS.values()))
_CONFIG = TypeAdapter(RegistryConfig)


def registry_config(value: Any, **context: Any) -> BackendConfig:
    """A registry config from its mapping (`{"type": "sagemaker", "region": ...}`); ValidationError."""
    return _CONFIG.validate_python(value, context=context or None)


def open_registry(config: BackendConfig) -> Registry:
    """The read side of the backend `config.type` names."""
    return BACKENDS[config.type].open_reader(config)


def open_writer(config: BackendConfig) -> RegistryWriter:
    """The write side of the backend `config.type` names."""
    return BACKENDS[config.type].open_writer(config)


__all__ = [
    "BACKENDS",
    "LEGACY_PACKAGE_FILE",
    "PACKAGE_FILE",
    "BackendConfig",
    "MlflowRegistry",
    "MlflowRegistryWriter",
    "Registered",
    "Registry",
    "RegistryConfig",
    "RegistryError",
    "RegistryWriter",
    "Resolved",
    "download_package",
    "open_registry",
    "open_writer",
    "package_file",
    "registry_config",
    "version_tags",
]
