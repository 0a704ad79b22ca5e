"""The device's view of the registry: resolve an alias to (version, package URI, sha256) and download.

Two backends behind one interface (DESIGN.md): MLflow's Model Registry (a model version's
artifacts are the package; tags carry its sha256) and a SageMaker Model Package Group
(`Approved` = production; the package lives in S3). The write side (register, move aliases)
is in pipelines/registry.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from common.errors import UserError

# The archive's name inside a registered version's `package/` artifact folder. Not `*.tar.gz`: MLflow's
# S3 artifact store sets Content-Encoding: gzip on objects whose name guesses a gzip encoding
# (mimetypes; mlflow#2881), and a download proxied by `mlflow server` then reaches the client
# decompressed, which the sha256 check refuses. A name with no encoding suffix is stored and served
# byte for byte. The version's `package_file` tag records the name; versions without it used the
# older name.
PACKAGE_FILE = "package.lensops"
LEGACY_PACKAGE_FILE = "package.tar.gz"


def package_file(tags: dict) -> str:
    """The archive's file name for a registered version with these tags."""
    return tags.get("package_file") or LEGACY_PACKAGE_FILE


class RegistryError(UserError):
    """The registry could not answer: unreachable, no such model/alias, or a version without a package.
    `not_found` is True when the registry answered that the model, alias or version does not exist."""

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


@dataclass(frozen=True)
class Resolved:
    model: str
    alias: str
    version: str
    uri: str  # where the package archive is
    sha256: str  # of the archive


class Registry(Protocol):
    def resolve(self, model: str, alias: str) -> Resolved: ...

    def download(self, resolved: Resolved, dest: Path) -> Path: ...


def _limit_http_retries() -> None:
    # MLflow retries an unreachable server for minutes by default; a device (and a CLI) wants a prompt answer.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class MlflowRegistry:
    def __init__(self, uri: Optional[str] = None):
        _limit_http_retries()
        from mlflow import MlflowClient

        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def resolve(self, model: str, alias: str) -> Resolved:
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(model, alias)
        except MlflowException as exc:
            # Over HTTP MLflow wraps connection failures in MlflowException too: tell them apart by code.
            if exc.error_code in NOT_FOUND_CODES:
                raise RegistryError(
                    f"registry {self.uri}: cannot resolve {model}@{alias}: {_short(exc)}", not_found=True
                ) from None
            raise RegistryError(
                f"registry {self.uri} unreachable while resolving {model}@{alias}: {_short(exc)}"
            ) from None
        except Exception as exc:  # connection errors surface as requests/sqlalchemy exceptions
            raise RegistryError(
                f"registry {self.uri} unreachable while resolving {model}@{alias}: {_short(exc)}"
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
                raise RegistryError(f"cannot download {resolved.uri}: {_short(exc)}") from None
            shutil.move(local, dest)
        return dest


def download_package(
    registry: Registry, resolved: Resolved, archive: Path, workdir: Path, public_key: Optional[Path] = None
):
    """Download `resolved` to `archive`, check its sha256 against the registry's, unpack it under
    `workdir` and verify every file (and the signature with `public_key`): (package folder, Manifest).
    RegistryError when the download fails or the archive's sha256 differs; PackageError from the checks."""
    from edge.package import open_package, sha256_file

    registry.download(resolved, archive)
    actual = sha256_file(archive)
    if actual != resolved.sha256:
        raise RegistryError(
            f"{resolved.model} v{resolved.version}: downloaded package sha256 {actual[:16]}... "
            f"does not match the registry's {resolved.sha256[:16]}..."
        )
    return open_package(archive, workdir, public_key)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def open_registry(kind: str, uri: Optional[str] = None, **options) -> Registry:
    """The registry backend named in a config (`mlflow` or `sagemaker`)."""
    if kind == "mlflow":
        return MlflowRegistry(uri)
    if kind == "sagemaker":
        from edge.registry_sagemaker import SageMakerRegistry

        return SageMakerRegistry(**options)
    raise RegistryError(f"registry type '{kind}' is not among: mlflow, sagemaker")
