"""The MLflow Model Registry backend: an `mlflow server` over http(s), or the one-machine sqlite:/// store.

A registered model version's artifacts are the package (`package/package.lensops`); its tags carry
the sha256, lineage and metrics; MLflow's aliases are the aliases devices follow.
Read side: `MlflowRegistry` (resolve, download). Write side: `MlflowRegistryWriter` (register,
set_alias), idempotent by sha256, and a failed registration deletes the run and version it made.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from edge.registry.base import (
    PACKAGE_FILE,
    BackendConfig,
    Registered,
    RegistryError,
    Resolved,
    package_file,
    short,
    version_tags,
)

if TYPE_CHECKING:
    from edge.package import Manifest

log = logging.getLogger(__name__)

KEY = "mlflow"
# what MLflow takes as a tracking/registry URI: a server, a SQLAlchemy database (dialect[+driver]://), a file
# store (file:// or a bare folder), Databricks
SCHEMES = ("sqlite", "http", "https", "file", "databricks", "postgresql", "mysql", "mssql")
DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT = "lensops-packages"


class Config(BackendConfig):
    """`registry: {type: mlflow, uri: ...}`; without `uri`, MLFLOW_TRACKING_URI when the registry is opened,
    else sqlite:///mlflow.db (as MLflow itself). A relative sqlite:/// path is taken from the config file's
    folder (validation context `base_dir`) when there is one; with context `store_must_exist` (the device's
    config) a sqlite database or store folder that is not there is an error."""

    type: Literal["mlflow"] = KEY
    uri: Optional[str] = Field(
        None,
        description="tracking/registry URI: http(s)://host:port, sqlite:///path/to/mlflow.db, "
        "postgresql://..., a file store folder (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )

    @field_validator("uri")
    @classmethod
    def _known_uri(cls, uri: Optional[str], info: ValidationInfo) -> Optional[str]:
        if uri is None:
            return None
        uri = uri.strip()
        if not uri:
            raise ValueError("uri: empty (leave uri out to use MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
        context = info.context or {}
        parts = urlsplit(uri)
        if not parts.scheme and uri != "databricks":  # a folder: MLflow's file store
            if context.get("store_must_exist") and not _local(uri, context).is_dir():
                raise ValueError(
                    f"uri: {uri!r} has no scheme ({', '.join(s + '://' for s in SCHEMES)}) and is not an "
                    "MLflow file store folder"
                )
            return uri
        if parts.scheme and parts.scheme.split("+")[0] not in SCHEMES:
            raise ValueError(
                f"uri: scheme {parts.scheme}:// in {uri!r} is not one of {', '.join(s + '://' for s in SCHEMES)}"
            )
        if parts.scheme in ("http", "https"):
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                port_ok = False
            if not parts.hostname or not port_ok:
                raise ValueError(f"uri: {uri!r} needs a host and a valid port, e.g. http://mlflow.local:5000")
        if parts.scheme == "sqlite":
            if not uri.startswith("sqlite:///"):
                raise ValueError(f"uri: {uri!r} must be sqlite:///relative/path or sqlite:////absolute/path")
            path = _local(uri[len("sqlite:///") :], context)
            if context.get("store_must_exist") and not path.is_file():
                raise ValueError(
                    f"uri: sqlite database {str(path)!r} does not exist (run `lensops register` first, "
                    "or point at an mlflow server)"
                )
            if context.get("base_dir") is not None:
                uri = f"sqlite:///{path.resolve()}"
        return uri

    def where(self) -> str:
        return tracking_uri(self.uri)


def tracking_uri(uri: Optional[str]) -> str:
    """The URI a registry opens: `uri`, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (as MLflow)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _local(path: str, context: dict) -> Path:
    """A store's path, relative ones taken from the config file's folder when the context names it."""
    base, local = context.get("base_dir"), Path(path)
    return Path(base) / local if base is not None and not local.is_absolute() else local


def open_reader(config: Config) -> "MlflowRegistry":
    return MlflowRegistry(config.uri)


def open_writer(config: Config) -> "MlflowRegistryWriter":
    return MlflowRegistryWriter(config.uri)


NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _limit_http_retries() -> None:
    # MLflow retries an unreachable server for minutes by default; a device (and a CLI) wants a prompt answer.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class MlflowRegistry:
    """The read side. `uri` None: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""

    def __init__(self, uri: Optional[str] = None):
        _limit_http_retries()
        from mlflow import MlflowClient

        self.uri = tracking_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def resolve(self, model: str, alias: str) -> Resolved:
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(model, alias)
        except MlflowException as exc:
            # Over HTTP MLflow wraps connection failures in MlflowException too: tell them apart by code.
            if exc.error_code in NOT_FOUND_CODES:
                raise RegistryError(
                    f"registry {self.uri}: cannot resolve {model}@{alias}: {short(exc)}", not_found=True
                ) from None
            raise RegistryError(
                f"registry {self.uri} unreachable while resolving {model}@{alias}: {short(exc)}"
            ) from None
        except Exception as exc:  # connection errors surface as requests/sqlalchemy exceptions
            raise RegistryError(
                f"registry {self.uri} unreachable while resolving {model}@{alias}: {short(exc)}"
            ) from None
        sha = version.tags.get("sha256")
        if not sha:
            raise RegistryError(
                f"registry {self.uri}: {model} version {version.version} has no sha256 tag (not registered by lensops)"
            )
        return Resolved(
            model, alias, str(version.version), f"{version.source.rstrip('/')}/{package_file(version.tags)}", sha
        )

    def download(self, resolved: Resolved, dest: Path) -> Path:
        import mlflow

        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=resolved.uri, dst_path=tmp, tracking_uri=self.uri
                )
            except Exception as exc:
                raise RegistryError(f"cannot download {resolved.uri}: {short(exc)}") from None
            shutil.move(local, dest)
        return dest


class MlflowRegistryWriter(MlflowRegistry):
    """The write side: register a package as a new model version (alias `candidate`), move aliases."""

    def _check_reachable(self) -> None:
        try:
            self.client.search_registered_models(max_results=1)
        except Exception as exc:
            raise RegistryError(f"registry {self.uri} unreachable: {short(exc)}") from None

    def _existing(self, model: str, sha256: str):
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name='{model}'")
        except MlflowException:
            return None
        for version in versions:
            if version.tags.get("sha256") == sha256:
                return version
        return None

    def register(self, archive: Path, manifest: "Manifest", sha256: str, tags: dict[str, str]) -> Registered:
        self._check_reachable()
        try:
            return self._register(archive, manifest, sha256, tags)
        except RegistryError:
            raise
        except Exception as exc:  # MlflowException, connection errors: one clear line
            raise RegistryError(f"registry {self.uri}: registering {manifest.name} failed: {short(exc)}") from None

    def _register(self, archive: Path, manifest: "Manifest", sha256: str, tags: dict[str, str]) -> Registered:
        from mlflow.exceptions import MlflowException

        model = manifest.name
        existing = self._existing(model, sha256)
        if existing is not None:
            log.info("%s: package %s already registered as version %s", model, sha256[:12], existing.version)
            self.set_alias(model, "candidate", existing.version)
            return Registered(
                model, str(existing.version), f"{existing.source}/{package_file(existing.tags)}", sha256, False
            )
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(EXPERIMENT, artifact_location=_artifact_location(self.uri))
        )
        run = self.client.create_run(
            experiment_id, run_name=f"register {model} {manifest.version}", tags={"lensops.stage": "register"}
        )
        run_id, version = run.info.run_id, None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                staged = Path(tmp) / PACKAGE_FILE
                shutil.copyfile(archive, staged)
                self.client.log_artifact(run_id, str(staged), artifact_path="package")
            for key, value in manifest.metrics.items():
                self.client.log_metric(run_id, key, value)
            try:
                self.client.create_registered_model(model, description=f"LensOps {manifest.task} model packages")
            except MlflowException as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                    raise
            all_tags = {**version_tags(manifest, sha256, tags), "package_file": PACKAGE_FILE}
            source = f"{run.info.artifact_uri.rstrip('/')}/package"
            version = self.client.create_model_version(
                model, source=source, run_id=run_id, tags=all_tags, description=f"package {manifest.version}"
            )
            self.set_alias(model, "candidate", version.version)
            self.client.set_terminated(run_id, "FINISHED")
            return Registered(model, str(version.version), f"{source}/{PACKAGE_FILE}", sha256, True)
        except BaseException as exc:
            kept = []
            for what, undo in (
                ("version", lambda: version is not None and self.client.delete_model_version(model, version.version)),
                ("run", lambda: self.client.delete_run(run_id)),
            ):
                try:
                    undo()
                except Exception:
                    kept.append(what)
            if isinstance(exc, Exception) and not isinstance(exc, RegistryError):
                left = f"could not remove the {' and '.join(kept)} it made" if kept else "nothing kept"
                raise RegistryError(f"registry {self.uri}: registering {model} failed, {left}: {short(exc)}") from None
            raise

    def set_alias(self, model: str, alias: str, version: str) -> None:
        try:
            self.client.set_registered_model_alias(model, alias, str(version))
        except Exception as exc:
            raise RegistryError(
                f"registry {self.uri}: cannot point {model}@{alias} at version {version}: {short(exc)}"
            ) from None

    def alias_version(self, model: str, alias: str) -> Optional[str]:
        try:
            return self.resolve(model, alias).version
        except RegistryError as exc:
            if exc.not_found:
                return None
            raise

    def tags(self, model: str, version: str) -> dict[str, str]:
        """The version's tags; RegistryError (`not_found` when the registry says it does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_model_version(model, str(version)).tags)
        except MlflowException as exc:
            missing = exc.error_code in NOT_FOUND_CODES
            what = f"has no version {version}" if missing else f"unreachable while reading {model} version {version}"
            raise RegistryError(f"registry {self.uri}: {model} {what}: {short(exc)}", not_found=missing) from None
        except Exception as exc:
            raise RegistryError(
                f"registry {self.uri} unreachable while reading {model} version {version}: {short(exc)}"
            ) from None


def _artifact_location(uri: str) -> Optional[str]:
    """For the embedded SQLite store: ./mlartifacts beside the database (as training runs use)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
