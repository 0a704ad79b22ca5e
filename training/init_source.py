"""Where a fine-tune starts: an `init_from` reference -> the trainable network it names.

  models:/NAME@ALIAS, models:/NAME/VERSION   the registered version's package -> its mxnet-fp32 variant
  runs:/RUN_ID/PATH                          a run's artifacts (a training run logs its model folder as `model`)
  a model folder or a SageMaker model.tar.gz model.json + model-symbol.json + model-0000.params
  a LensOps package folder or .tar.gz        manifest.json -> its mxnet-fp32 variant

A package's mxnet-fp32 variant holds the network's Gluon parameters under their own names (the
export wraps the network, it does not rename it), and the manifest says task and labels, so a
registered version is trainable on its own, wherever the registry lives. A package without an
mxnet variant falls back to its training run (lineage `mlflow_run_id`, `runs:/ID/model`).
See docs/architecture.md, "Where a version's trainable network lives".

`training` imports nothing from `edge`, so the few package rules needed here (manifest fields,
sha256 of the variant files, safe unpacking) are read locally, following edge/package.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional

import mxnet as mx

from training.errors import ConfigError
from training.lineage import data_hash, file_hash
from training.tracking import tracking_uri

log = logging.getLogger(__name__)

PACKAGE_SCHEMA = "lensops.package/1"  # edge/package/manifest.py SCHEMA
MAX_MEMBER_BYTES = 1 << 30  # as edge/package/archive.py
MAX_TOTAL_BYTES = 4 << 30
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?$")


@dataclass(frozen=True)
class SourceNetwork:
    """The weights a fine-tune starts from and what they were trained for."""

    weights: dict  # Gluon parameter name -> numpy array
    task: str
    classes: list[str]
    network: Optional[str]
    origin: str  # what was loaded, e.g. "models:/x@production = version 3, package ab12 variant mxnet-fp32"
    # What pins these weights, for the checkpoint fingerprint: a registered version's package sha256 (or
    # models:/NAME/VERSION), a runs:/ reference, a local file's or folder's content hash.
    identity: Optional[str] = None


def resolve_init_from(ref: str, workdir: Path, project_root: Path) -> SourceNetwork:
    """The trainable network `ref` names, with its identity; one ConfigError naming `ref` when it holds none.

    Runs are looked up in MLFLOW_TRACKING_URI or the project's sqlite:///mlflow.db under `project_root`;
    versions in MLFLOW_REGISTRY_URI, else that same store (MLflow's own precedence). An alias is
    resolved once, here: the identity is the version it points at now.
    """
    workdir, tracking = Path(workdir), tracking_uri(Path(project_root))
    if ref.startswith("models:/"):
        return _registered(ref, workdir, tracking)
    if ref.startswith("runs:/"):
        return replace(_from_local(_download(ref, tracking, workdir), ref, workdir, tracking), identity=ref)
    path = Path(ref)
    if not path.exists():
        raise ConfigError(f"init_from: {path} does not exist")
    return replace(_from_local(path, ref, workdir, tracking), identity=data_hash(path))


def load_model_folder(model_dir: Path, context: str = "") -> tuple[dict, dict]:
    """(Gluon parameter name -> numpy array, model.json) of an exported model folder; one ConfigError
    (prefixed with `context`, e.g. "init_from: REF: ") naming the file that is not readable."""
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / "model.json").read_text())
        params = model_dir / meta["files"]["params"]
        missing = [key for key in ("task", "classes") if key not in meta]  # what every reader needs
        if missing:
            raise KeyError(missing[0])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{context}{model_dir / 'model.json'} is not a LensOps model.json ({type(exc).__name__}: {exc})"
        ) from None
    return _load_params(params, context), meta


# --- registry and runs -----------------------------------------------------------------------------


def _parse_models(ref: str) -> tuple[str, Optional[str], Optional[str]]:
    match = _MODELS.match(ref)
    if not match:
        raise ConfigError(f"init_from: {ref} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return match.group("name"), match.group("alias"), match.group("version")


@contextmanager
def _prompt_http() -> Iterator[None]:
    """MLflow retries an unreachable server for minutes by default; a training start wants a prompt
    answer. Only for resolving init_from: the run's own tracking keeps MLflow's (or the user's) settings."""
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }
    added = [k for k in wanted if k not in os.environ]
    os.environ.update({k: wanted[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def _registry_env(registry: Optional[str]) -> Iterator[None]:
    """MLflow resolves a models:/ download in mlflow.get_registry_uri(), not the registry_uri it is
    given: after a run tracked elsewhere in this process (mlflow.set_tracking_uri) that would be the
    wrong store. MLFLOW_REGISTRY_URI comes before the global tracking URI there."""
    previous = os.environ.get("MLFLOW_REGISTRY_URI")
    if registry:
        os.environ["MLFLOW_REGISTRY_URI"] = registry
    try:
        yield
    finally:
        if registry:
            if previous is None:
                os.environ.pop("MLFLOW_REGISTRY_URI", None)
            else:
                os.environ["MLFLOW_REGISTRY_URI"] = previous


def _check_store(uri: str, ref: str, what: str) -> None:
    # MLflow would create an empty database at a missing sqlite path and then report "not found".
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise ConfigError(
            f"init_from: {ref}: no {what} at {uri} (the database file does not exist; "
            f"set MLFLOW_TRACKING_URI{' or MLFLOW_REGISTRY_URI' if what == 'registry' else ''})"
        )


def _model_version(name: str, alias: Optional[str], version: Optional[str], uri: str, ref: str):
    _check_store(uri, ref, "registry")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with _prompt_http():
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        try:
            return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND_CODES:
                what = f"alias '{alias}' of" if alias else f"version {version} of"
                raise ConfigError(
                    f"init_from: {ref}: the registry {uri} has no {what} model '{name}' ({_short(exc)})"
                ) from None
            raise ConfigError(f"init_from: {ref}: registry {uri} unreachable: {_short(exc)}") from None
        except Exception as exc:  # connection errors surface as requests/sqlalchemy exceptions
            raise ConfigError(f"init_from: {ref}: registry {uri} unreachable: {_short(exc)}") from None


def _registered(ref: str, workdir: Path, tracking: str) -> SourceNetwork:
    """A registered version: what its artifacts hold (a LensOps version holds the package)."""
    name, alias, version = _parse_models(ref)
    uri = os.environ.get("MLFLOW_REGISTRY_URI") or tracking
    found = _model_version(name, alias, version, uri, ref)
    # Artifacts are fetched through the registry's own server: with `--serve-artifacts` the version's
    # source is an mlflow-artifacts:/ URI that only that server answers.
    local = _download(f"models:/{name}/{found.version}", uri, workdir, registry=uri)
    sha = found.tags.get("sha256")
    archives = sorted(p for p in local.rglob("*") if p.name.endswith(ARCHIVE_SUFFIXES)) if local.is_dir() else [local]
    if sha and len(archives) != 1:
        raise ConfigError(
            f"init_from: {ref}: version {found.version} holds {len(archives)} package archives, expected one"
        )
    if sha and _sha256(archives[0]) != sha:
        raise ConfigError(
            f"init_from: {ref}: {archives[0].name} of version {found.version} does not match "
            f"its sha256 tag ({sha[:16]}...)"
        )
    source = _from_local(local, f"{ref} (version {found.version})" if alias else ref, workdir, tracking)
    return replace(source, identity=sha or f"models:/{name}/{found.version}")


def _download(uri_to_fetch: str, tracking: str, workdir: Path, registry: Optional[str] = None) -> Path:
    _check_store(tracking, uri_to_fetch, "tracking store")
    import mlflow

    target = Path(tempfile.mkdtemp(prefix="init-from-", dir=workdir))
    with _prompt_http(), _registry_env(registry):
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri_to_fetch,
                dst_path=str(target),
                tracking_uri=tracking,
                registry_uri=registry or tracking,
            )
        except Exception as exc:  # unknown run or path, unreachable server
            raise ConfigError(f"init_from: cannot fetch {uri_to_fetch} from {tracking}: {_short(exc)}") from None
    return Path(local)


# --- local forms -----------------------------------------------------------------------------------

# archives init_from unpacks: .lensops is a registered version's package archive (edge.registry.PACKAGE_FILE)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".lensops")


def _from_local(path: Path, ref: str, workdir: Path, tracking: str, depth: int = 0) -> SourceNetwork:
    """A model folder, a package folder, an archive of either, or a folder holding just one of those."""
    if path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise ConfigError(f"init_from: {ref}: {path.name} is not a model folder, package or .tar.gz")
        return _from_local(extract_archive(path, workdir, f"init_from: {ref}: "), ref, workdir, tracking, depth + 1)
    if (path / "model.json").is_file():
        return _from_model_dir(path, ref)
    if (path / "manifest.json").is_file():
        return _from_package(path, ref, workdir, tracking)
    entries = sorted(p for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else []
    if len(entries) == 1 and depth < 3 and (entries[0].is_dir() or entries[0].name.endswith(ARCHIVE_SUFFIXES)):
        # a registry version's folder holding its package archive; an archive of a model folder
        return _from_local(entries[0], ref, workdir, tracking, depth + 1)
    held = ", ".join(p.name for p in entries[:5]) or "nothing"
    raise ConfigError(
        f"init_from: {ref} holds no trainable network (no model.json or package manifest.json; it holds {held})"
    )


def _from_model_dir(model_dir: Path, ref: str) -> SourceNetwork:
    weights, meta = load_model_folder(model_dir, f"init_from: {ref}: ")
    return SourceNetwork(weights, meta["task"], list(meta["classes"]), meta.get("network"), f"{ref} (model folder)")


def _from_package(package_dir: Path, ref: str, workdir: Path, tracking: str) -> SourceNetwork:
    try:
        manifest = json.loads((package_dir / "manifest.json").read_text())
        if manifest.get("schema") != PACKAGE_SCHEMA:
            raise ValueError(f"schema {manifest.get('schema')!r}, expected {PACKAGE_SCHEMA!r}")
        task, labels, variants = manifest["task"], list(manifest["labels"]), manifest["variants"]
        lineage = manifest.get("lineage") or {}
        if not isinstance(variants, list):
            raise ValueError(f"'variants' is a {type(variants).__name__}, not a list")
        for i, variant in enumerate(variants):
            if not isinstance(variant, dict) or "id" not in variant:
                raise ValueError(f"variants[{i}] is not an object with an 'id'")
            if not isinstance(variant.get("files") or {}, dict):
                raise ValueError(f"variants[{i}] ({variant['id']}): 'files' is not an object")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"init_from: {ref}: {package_dir / 'manifest.json'} is not a LensOps package manifest "
            f"({type(exc).__name__}: {exc})"
        ) from None
    what = f"package {manifest.get('name')} {manifest.get('version')}"
    network = (lineage.get("training_params") or {}).get("network")
    mxnet = sorted((v for v in variants if v.get("runtime") == "mxnet"), key=lambda v: v.get("precision") != "fp32")
    if mxnet:
        variant = mxnet[0]
        files = variant.get("files") or {}
        for rel, digest in sorted(files.items()):
            if Path(rel).is_absolute() or ".." in Path(rel).parts:  # package_dir / "/x" would be /x
                raise ConfigError(
                    f"init_from: {ref}: {what}: file {rel} of variant {variant['id']} is not a path inside the package"
                )
            path = package_dir / rel
            if not path.is_file() or path.is_symlink():
                raise ConfigError(f"init_from: {ref}: {what}: file {rel} of variant {variant['id']} is missing")
            if _sha256(path) != digest:
                raise ConfigError(f"init_from: {ref}: {what}: {rel} does not match its sha256 in manifest.json")
        params = [rel for rel in files if rel.endswith(".params")]
        if len(params) != 1:
            raise ConfigError(f"init_from: {ref}: {what}: variant {variant['id']} has {len(params)} .params files")
        return SourceNetwork(
            _load_params(package_dir / params[0], f"init_from: {ref}: "),
            task,
            labels,
            network,
            f"{ref} ({what}, variant {variant['id']})",
        )
    run_id = lineage.get("mlflow_run_id")
    have = ", ".join(str(v.get("id")) for v in variants) or "none"
    hint = (
        "add mxnet-fp32 to pipeline.variants when packaging, or fine-tune from the model folder or runs:/RUN_ID/model"
    )
    if not run_id:
        raise ConfigError(
            f"init_from: {ref}: {what} holds no trainable network: no mxnet variant (has {have}) "
            f"and its lineage names no training run; {hint}"
        )
    run_ref = f"runs:/{run_id}/model"
    try:
        source = _from_local(_download(run_ref, tracking, workdir), run_ref, workdir, tracking)
    except ConfigError as exc:
        raise ConfigError(
            f"init_from: {ref}: {what} holds no trainable network: no mxnet variant (has {have}), "
            f"and its training run's model is not available ({_strip_prefix(str(exc), 'init_from: ')}); "
            f"{hint}"
        ) from None
    log.warning("init_from: %s has no mxnet variant; starting from its training run's model %s", what, run_ref)
    return SourceNetwork(
        source.weights,
        task,
        labels,
        network or source.network,
        f"{ref} ({what} has no mxnet variant: its training run {run_ref})",
    )


def _load_params(params: Path, context: str) -> dict:
    if not params.is_file():
        raise ConfigError(f"{context}{params.name} is missing")
    try:
        raw = mx.nd.load(str(params))
    except mx.base.MXNetError as exc:
        raise ConfigError(f"{context}cannot read {params.name}: {_short(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{context}{params.name} holds unnamed arrays, not network parameters")
    return {k.split(":", 1)[-1]: v.asnumpy() for k, v in raw.items()}


def extract_archive(archive: Path, workdir: Path, context: str) -> Path:
    """Unpack into a new folder under `workdir`, refusing what edge/package/archive.py refuses:
    absolute paths, `..`, links, devices and oversize members. Errors are one ConfigError starting
    with `context` (e.g. "init_from: REF: ") and leave nothing behind."""
    target = Path(tempfile.mkdtemp(prefix="extract-", dir=workdir))
    total = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if member.isdir() and not parts:
                    continue
                if member.name.startswith("/") or ".." in parts or not parts:
                    raise ConfigError(f"{context}{archive.name} holds an unsafe member '{member.name}'")
                if not (member.isfile() or member.isdir()):
                    raise ConfigError(f"{context}{archive.name} member '{member.name}' is a link or device")
                total += member.size
                if member.size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
                    raise ConfigError(
                        f"{context}{archive.name} unpacks to more than the size limit (at '{member.name}')"
                    )
                dest = target.joinpath(*parts)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(dest, "wb") as fh:
                    shutil.copyfileobj(src, fh)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ConfigError(f"{context}{archive.name} is not a readable tar archive ({_short(exc)})") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _strip_prefix(text: str, prefix: str) -> str:
    """str.removeprefix, which Python 3.8 (the SageMaker MXNet container) lacks."""
    return text[len(prefix) :] if text.startswith(prefix) else text


def _sha256(path: Path) -> str:
    return file_hash(path, "sha256")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
