"""What every registry backend shares: the answers, the errors, the two interfaces, the package check.

The read side (`Registry`: resolve an alias, download) is what a device uses; the write side
(`RegistryWriter`: register, move aliases) is what `lensops register` and `lensops promote` use.
A backend implements both in its own module (edge/registry/<key>.py); DESIGN.md's "one small
interface with both backends".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

from common.errors import UserError
from common.models import StrictModel

if TYPE_CHECKING:
    from edge.package import Manifest

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


class BackendConfig(StrictModel):
    """Where a registry is: the base of each backend's config class (its `type` names the backend)."""

    type: str

    def where(self) -> str:
        """Where the registry is, for messages (the backend's URI, endpoint or region)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Resolved:
    model: str
    alias: str
    version: str
    uri: str  # where the package archive is
    sha256: str  # of the archive


@dataclass(frozen=True)
class Registered:
    model: str
    version: str
    uri: str
    sha256: str
    created: bool  # False when the package was already registered


class Registry(Protocol):
    """The read side: a device's whole view of the registry."""

    def resolve(self, model: str, alias: str) -> Resolved: ...

    def download(self, resolved: Resolved, dest: Path) -> Path: ...


class RegistryWriter(Registry, Protocol):
    """The write side. `register` is idempotent by sha256 and sets alias `candidate`; nothing is left
    half-registered when it fails."""

    def register(self, archive: Path, manifest: "Manifest", sha256: str, tags: dict[str, str]) -> Registered: ...

    def set_alias(self, model: str, alias: str, version: str) -> None: ...

    def alias_version(self, model: str, alias: str) -> Optional[str]: ...

    def tags(self, model: str, version: str) -> dict[str, str]: ...


def version_tags(manifest: "Manifest", sha256: str, extra: dict[str, str]) -> dict[str, str]:
    """The tags (MLflow) or metadata (SageMaker) a registered version carries: lineage and metrics."""
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


def short(exc: Exception) -> str:
    """An exception as one short line: `Type: first line` (at most 300 characters)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
