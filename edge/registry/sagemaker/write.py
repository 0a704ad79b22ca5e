"""SageMaker Model Registry backend, write side (`lensops register`, `promote`): register packages, move aliases.

The mapping and the alias rules are in edge/registry/sagemaker/read.py. Here:
- `register` creates the model package group if missing, uploads the archive to
  `s3://<s3_bucket>/<s3_prefix>/<model>/<sha256>.tar.gz` and creates a model package
  (PendingManualApproval) whose CustomerMetadataProperties hold sha256, package_uri, the version tags
  (metrics, git commit, ...) and the `alias.candidate` marker. Idempotent by sha256: a package already
  registered is returned (created=False) and made the candidate. If creating the package fails after
  the upload, the uploaded object is deleted, so nothing is left half-registered.
- CustomerMetadataProperties limits are respected: at most 50 entries (tags beyond
  `MAX_TAG_ENTRIES` are dropped with a warning, leaving room for alias markers), keys <= 128 and
  values <= 256 characters, only letters, digits, spaces and `_.:/=+-@` (others become `_`, commas a
  space: `variants` reads "onnx-fp32 onnx-int8"); empty values are left out.
- `set_alias(model, approved_alias, v)` approves v and rejects every other Approved package of the
  group (ApprovalDescription names the new holder): one Approved package, so "newest Approved" is v,
  including a rollback to an older version. Other aliases move the `alias.<name>` marker.

Tested against moto 5 in server mode, which serves every call used here with these quirks (the code
is correct under both it and AWS): UpdateModelPackage replaces CustomerMetadataProperties and clears
ModelApprovalStatus/ApprovalDescription when left out, so each update re-sends them; packages are
addressed by ARN (moto does not resolve "group/version" names); DeleteModelPackage is absent (unused).
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from edge.registry.base import Registered, RegistryError, version_tags
from edge.registry.sagemaker.read import (
    APPROVED,
    CANDIDATE,
    PENDING,
    REJECTED,
    SHA_KEY,
    URI_KEY,
    AliasNotFound,
    SageMakerRegistry,
    alias_key,
    check_group_name,
)

if TYPE_CHECKING:
    from edge.package import Manifest

log = logging.getLogger(__name__)
MAX_ENTRIES = 50  # SageMaker's limit on CustomerMetadataProperties
MAX_TAG_ENTRIES = 40  # the rest is left for alias markers
ALLOWED = set("_.:/=+-@")


def clean(text: str, limit: int) -> str:
    """`text` as a CustomerMetadataProperties key or value: allowed characters only, at most `limit` long."""
    out = []
    for ch in str(text):
        if ch == ",":
            out.append(" ")
        elif ch in ALLOWED or unicodedata.category(ch)[0] in "LNZ":
            out.append(ch)
        else:
            out.append("_")
    return "".join(out).strip()[:limit]


def metadata(tags: dict[str, str], reserved: dict[str, str]) -> dict[str, str]:
    """CustomerMetadataProperties: `reserved` entries first, then as many tags as fit."""
    props = {clean(k, 128): clean(v, 256) for k, v in reserved.items()}
    dropped = []
    for key, value in tags.items():
        key, value = clean(key, 128), clean(value, 256)
        if not key or not value or key in props or key.startswith("alias."):
            continue
        if len(props) >= MAX_TAG_ENTRIES:
            dropped.append(key)
            continue
        props[key] = value
    if dropped:
        log.warning("SageMaker keeps at most %d metadata entries: left out %s", MAX_TAG_ENTRIES, ", ".join(dropped))
    return props


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SageMakerRegistryWriter(SageMakerRegistry):
    def _ensure_group(self, model: str, task: str) -> None:
        if self._group_exists(model):
            return
        try:
            self._call(
                f"creating model package group {model}",
                self.sagemaker.create_model_package_group,
                ModelPackageGroupName=model,
                ModelPackageGroupDescription=f"LensOps {task} model packages",
            )
        except RegistryError as exc:
            if "already exists" not in str(exc):
                raise

    def _find_sha(self, model: str, sha256: str) -> Optional[dict]:
        for summary in self._packages(model):
            described = self._describe(summary["ModelPackageArn"])
            if (described.get("CustomerMetadataProperties") or {}).get(SHA_KEY) == sha256:
                return described
        return None

    def _update(
        self,
        described: dict,
        status: Optional[str] = None,
        note: Optional[str] = None,
        add: Optional[dict] = None,
        remove: tuple = (),
    ) -> None:
        """Change approval and/or metadata. The whole metadata map is sent each time: SageMaker merges it,
        moto replaces it (and would lose it if left out)."""
        old = dict(described.get("CustomerMetadataProperties") or {})
        props = {**old, **(add or {})}
        for key in remove:
            props.pop(key, None)
        if len(props) > MAX_ENTRIES:
            raise RegistryError(
                f"{self.where}: {described['ModelPackageArn']} would have more than {MAX_ENTRIES} metadata entries"
            )
        kwargs = {"ModelPackageArn": described["ModelPackageArn"], "CustomerMetadataProperties": props}
        gone = [key for key in remove if key in old]
        if gone:
            kwargs["CustomerMetadataPropertiesToRemove"] = gone
        # moto also clears approval fields left out of an update, so the current ones are sent again
        current = described.get("ModelApprovalStatus")
        if status or current:
            kwargs["ModelApprovalStatus"] = status or current
            kwargs["ApprovalDescription"] = (note or "") if status else described.get("ApprovalDescription", "")
        self._call(f"updating {described['ModelPackageArn']}", self.sagemaker.update_model_package, **kwargs)

    def _clear_marker(self, model: str, alias: str, keep_arn: str) -> None:
        key = alias_key(alias)
        for described in self._holders(model, alias):
            if described["ModelPackageArn"] != keep_arn:
                self._update(described, remove=(key,))

    def _move_marker(self, model: str, alias: str, target: dict) -> None:
        key = alias_key(alias)
        if key not in (target.get("CustomerMetadataProperties") or {}):
            self._update(target, add={key: _now()})
        self._clear_marker(model, alias, target["ModelPackageArn"])

    def register(self, archive: Path, manifest: "Manifest", sha256: str, tags: dict[str, str]) -> Registered:
        model = manifest.name
        check_group_name(model)
        if not self.s3_bucket:
            raise RegistryError("registry.s3_bucket is not set: the SageMaker backend keeps packages in S3")
        existing = self._find_sha(model, sha256)
        if existing is not None:
            version = str(existing["ModelPackageVersion"])
            log.info("%s: package %s already registered as version %s", model, sha256[:12], version)
            self._move_marker(model, CANDIDATE, existing)
            return Registered(model, version, existing["CustomerMetadataProperties"][URI_KEY], sha256, False)
        self._ensure_group(model, manifest.task)
        key = f"{self.s3_prefix}/{model}/{sha256}.tar.gz".lstrip("/")
        uri = f"s3://{self.s3_bucket}/{key}"
        existed = self._call(f"checking {uri}", self.s3.head_object, Bucket=self.s3_bucket, Key=key, missing=False)
        self._call(
            f"uploading {uri}",
            self.s3.upload_file,
            str(archive),
            self.s3_bucket,
            key,
            ExtraArgs={"Metadata": {"sha256": sha256}},
        )
        props = metadata(
            version_tags(manifest, sha256, tags), {SHA_KEY: sha256, URI_KEY: uri, alias_key(CANDIDATE): _now()}
        )
        try:
            arn = self._call(
                f"creating a model package in {model}",
                self.sagemaker.create_model_package,
                ModelPackageGroupName=model,
                ModelApprovalStatus=PENDING,
                ModelPackageDescription=clean(f"LensOps {manifest.task} package {manifest.version}", 1024),
                InferenceSpecification={
                    "Containers": [{"ModelDataUrl": uri}],
                    "SupportedContentTypes": ["application/x-image"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
                CustomerMetadataProperties=props,
                ClientToken=hashlib.sha256(f"{model}/{sha256}".encode()).hexdigest()[:32],
            )["ModelPackageArn"]
        except BaseException as exc:
            made = self._made_anyway(model, sha256)  # e.g. a timeout after SageMaker had created it
            if made is not None:
                arn = made["ModelPackageArn"]
            else:
                if existed is False:
                    self._delete_object(key)
                if isinstance(exc, RegistryError):
                    raise RegistryError(f"{exc} (registering {model}: nothing kept)") from None
                raise
        described = self._describe(arn)
        try:
            self._clear_marker(model, CANDIDATE, arn)
        except RegistryError as exc:  # the new package already wins as the newest marked one
            log.warning("%s: could not clear older candidate markers: %s", model, exc)
        return Registered(model, str(described["ModelPackageVersion"]), uri, sha256, True)

    def _made_anyway(self, model: str, sha256: str) -> Optional[dict]:
        try:
            return self._find_sha(model, sha256)
        except RegistryError:
            return None

    def _delete_object(self, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.s3_bucket, Key=key)
        except Exception as exc:  # the original error matters more
            log.warning("could not delete s3://%s/%s after a failed registration: %s", self.s3_bucket, key, exc)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        target = self._version(model, str(version))
        if alias != self.approved_alias:
            self._move_marker(model, alias, target)
            return
        if target.get("ModelApprovalStatus") != APPROVED:
            self._update(target, status=APPROVED, note=f"lensops: {alias} -> version {version}")
        for described in self._holders(model, alias):
            if described["ModelPackageArn"] != target["ModelPackageArn"]:
                self._update(
                    described, status=REJECTED, note=f"lensops: superseded as {alias} by version {version} on {_now()}"
                )

    def alias_version(self, model: str, alias: str) -> Optional[str]:
        try:
            return self.resolve(model, alias).version
        except AliasNotFound:
            return None

    def tags(self, model: str, version: str) -> dict[str, str]:
        described = self._version(model, str(version))
        props = described.get("CustomerMetadataProperties") or {}
        return {k: v for k, v in props.items() if not k.startswith("alias.")}
