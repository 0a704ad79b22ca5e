"""Registry write side: register a package as a new model version (alias `candidate`) and move aliases.

Backends: MLflow Model Registry (embedded SQLite store or an `mlflow server`) and SageMaker Model
Package Groups (pipelines/registry_sagemaker.py). The read side a device uses is edge/registry.py.
Registration is idempotent (a package already registered, by sha256, is not registered twice)
and leaves nothing half-made: a failure after the run was created deletes what was created.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from edge.package import Manifest
from edge.registry import PACKAGE_FILE, MlflowRegistry, package_file, Registry, RegistryError, Resolved, _short

log = logging.getLogger(__name__)
EXPERIMENT = "lensops-packages"


@dataclass(frozen=True)
class Registered:
    model: str
    version: str
    uri: str
    sha256: str
    created: bool  # False when the package was already registered


class RegistryWriter(Registry, Protocol):
    def register(self, archive: Path, manifest: Manifest, sha256: str, tags: dict[str, str]) -> Registered: ...

    def set_alias(self, model: str, alias: str, version: str) -> None: ...

    def alias_version(self, model: str, alias: str) -> Optional[str]: ...


def version_tags(manifest: Manifest, sha256: str, extra: dict[str, str]) -> dict[str, str]:
    tags = {
        "sha256": sha256,
        "package_version": manifest.version,
        "task": manifest.task,
        "variants": ",".join(v.id for v in manifest.variants),
        "git_commit": str(manifest.lineage.get("git_commit") or ""),
        "data_hash": str(manifest.lineage.get("data_hash") or ""),
        "training_run_id": str(manifest.lineage.get("mlflow_run_id") or ""),
    }
    if manifest.lineage.get("sagemaker_job"):  # trained as a SageMaker job (lensops sagemaker attach)
        tags["sagemaker_job"] = str(manifest.lineage["sagemaker_job"])
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in manifest.metrics.items()})
    tags.update(extra)
    return tags


class MlflowRegistryWriter(MlflowRegistry):
    def _check_reachable(self) -> None:
        try:
            self.client.search_registered_models(max_results=1)
        except Exception as exc:
            raise RegistryError(f"registry {self.uri} unreachable: {_short(exc)}") from None

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

    def register(self, archive: Path, manifest: Manifest, sha256: str, tags: dict[str, str]) -> Registered:
        self._check_reachable()
        try:
            return self._register(archive, manifest, sha256, tags)
        except RegistryError:
            raise
        except Exception as exc:  # MlflowException, connection errors: one clear line
            raise RegistryError(f"registry {self.uri}: registering {manifest.name} failed: {_short(exc)}") from None

    def _register(self, archive: Path, manifest: Manifest, sha256: str, tags: dict[str, str]) -> Registered:
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
                raise RegistryError(f"registry {self.uri}: registering {model} failed, {left}: {_short(exc)}") from None
            raise

    def set_alias(self, model: str, alias: str, version: str) -> None:
        try:
            self.client.set_registered_model_alias(model, alias, str(version))
        except Exception as exc:
            raise RegistryError(
                f"registry {self.uri}: cannot point {model}@{alias} at version {version}: {_short(exc)}"
            ) from None

    def alias_version(self, model: str, alias: str) -> Optional[str]:
        try:
            return self.resolve(model, alias).version
        except RegistryError as exc:
            if exc.not_found:
                return None
            raise

    def tags(self, model: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(model, str(version)).tags)


def _artifact_location(uri: str) -> Optional[str]:
    """For the embedded SQLite store: ./mlartifacts beside the database (as training runs use)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()


def open_writer(kind: str, uri: Optional[str] = None, **options) -> RegistryWriter:
    if kind == "mlflow":
        return MlflowRegistryWriter(uri)
    if kind == "sagemaker":
        from pipelines.registry_sagemaker import SageMakerRegistryWriter

        return SageMakerRegistryWriter(**options)
    raise RegistryError(f"registry type '{kind}' is not among: mlflow, sagemaker")


__all__ = ["Registered", "RegistryWriter", "MlflowRegistryWriter", "open_writer", "Resolved", "version_tags"]
