"""SageMaker Model Registry backend, read side (what a device uses): resolve an alias, download from S3.

Mapping (boto3 `sagemaker` and `s3` clients only; the SDK is not needed):
- model name = Model Package Group name (letters, digits, hyphens; at most 63 characters);
- version = a model package of that group; its version string is `ModelPackageVersion` ("1", "2", ...);
- the package archive is an S3 object named in CustomerMetadataProperties `package_uri` (also the
  container's `ModelDataUrl`), its sha256 in CustomerMetadataProperties `sha256`.

Aliases (SageMaker has none; this is how they map):
- the approved alias (`production` unless `approved_alias` says e.g. `fleet-lobby`) is SageMaker's own
  approval: the newest package whose ModelApprovalStatus is `Approved`. Approval is what SageMaker
  Studio, EventBridge rules and deployment pipelines already key on, so a human approving a package
  in Studio moves the fleet as well. The writer keeps exactly one package Approved: moving the alias
  approves the target and sets the previous holders `Rejected` (ApprovalDescription says by whom), which
  is what makes a rollback to an older version work under "newest Approved".
- any other alias (`candidate`, extra fleets) is a marker key `alias.<name>` in the holder's
  CustomerMetadataProperties (value: when it was set); the newest package carrying it holds the alias.
  The writer sets the marker on the new holder first and then clears it elsewhere, so a reader always
  sees either the old or the new holder. `candidate` falls back to the newest package of the group
  when no package carries the marker (packages registered by other tools).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from common.files import atomic_path
from edge.package.archive import sha256_file
from edge.registry.base import RegistryError, Resolved, short

APPROVED, PENDING, REJECTED = "Approved", "PendingManualApproval", "Rejected"
SHA_KEY, URI_KEY, ALIAS_PREFIX = "sha256", "package_uri", "alias."
CANDIDATE = "candidate"
GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class AliasNotFound(RegistryError):
    """No such model package group, or no package holds the alias."""


def alias_key(alias: str) -> str:
    return f"{ALIAS_PREFIX}{alias}"


def check_group_name(model: str) -> None:
    if not GROUP_NAME.match(model):
        raise RegistryError(
            f"'{model}' cannot be a SageMaker model package group name "
            "(letters, digits and hyphens, at most 63 characters)"
        )


def _missing(code: str, message: str) -> bool:
    return (
        code in ("ResourceNotFound", "NoSuchKey", "NoSuchBucket", "404")
        or "does not exist" in message
        or "not found" in message.lower()
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise RegistryError(f"'{uri}' is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


class SageMakerRegistry:
    """The read side; `region` None: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1."""

    def __init__(
        self,
        region: Optional[str] = None,
        endpoint_url: Optional[str] = None,
        s3_bucket: Optional[str] = None,
        s3_prefix: str = "lensops/packages",
        approved_alias: str = "production",
    ):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise RegistryError(
                "the SageMaker registry backend needs boto3: pip install 'lensops[edge-aws]' (or pip install boto3)"
            ) from None
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.endpoint_url = endpoint_url
        self.s3_bucket, self.s3_prefix = s3_bucket, s3_prefix.strip("/")
        self.approved_alias = approved_alias
        self.where = f"SageMaker registry at {endpoint_url}" if endpoint_url else f"SageMaker registry ({self.region})"
        # fail within seconds when the endpoint is unreachable instead of botocore's long retry loop
        config = Config(
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        session = boto3.session.Session(region_name=self.region)
        self.sagemaker = session.client("sagemaker", endpoint_url=endpoint_url, config=config)
        self.s3 = session.client("s3", endpoint_url=endpoint_url, config=config)

    def _call(self, what: str, fn, *args, missing=None, **kwargs):
        """fn(*args, **kwargs) with AWS errors as RegistryError; `missing` is returned for a not-found answer."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code, message = str(err.get("Code", "")), str(err.get("Message", ""))
            if missing is not None and _missing(code, message):
                return missing
            raise RegistryError(f"{self.where}: {what} failed: {code}: {message}"[:500]) from None
        except NoCredentialsError:
            raise RegistryError(f"{self.where}: {what}: no AWS credentials (environment, profile or role)") from None
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as exc:
            raise RegistryError(f"{self.where} unreachable while {what}: {short(exc)}") from None
        except (BotoCoreError, S3UploadFailedError) as exc:
            raise RegistryError(f"{self.where}: {what} failed: {short(exc)}") from None

    def _group_exists(self, model: str) -> bool:
        found = self._call(
            f"looking up model package group {model}",
            self.sagemaker.describe_model_package_group,
            ModelPackageGroupName=model,
            missing=False,
        )
        return found is not False

    def _packages(self, model: str) -> list[dict]:
        """Summaries of the group's packages, newest (highest ModelPackageVersion) first; [] if none."""
        check_group_name(model)

        def fetch() -> list[dict]:
            pages = self.sagemaker.get_paginator("list_model_packages").paginate(
                ModelPackageGroupName=model, SortBy="CreationTime", SortOrder="Descending"
            )
            return [s for page in pages for s in page.get("ModelPackageSummaryList", [])]

        summaries = self._call(f"listing the packages of {model}", fetch, missing=[])
        return sorted(summaries, key=lambda s: int(s.get("ModelPackageVersion") or 0), reverse=True)

    def _packages_or_fail(self, model: str) -> list[dict]:
        summaries = self._packages(model)
        if not summaries:
            if not self._group_exists(model):
                raise AliasNotFound(f"{self.where}: no model package group '{model}'")
            raise AliasNotFound(f"{self.where}: model package group '{model}' has no packages")
        return summaries

    def _describe(self, arn: str) -> dict:
        return self._call(f"describing {arn}", self.sagemaker.describe_model_package, ModelPackageName=arn)

    def _version(self, model: str, version: str) -> dict:
        for summary in self._packages_or_fail(model):
            if str(summary.get("ModelPackageVersion")) == str(version):
                return self._describe(summary["ModelPackageArn"])
        raise RegistryError(f"{self.where}: {model} has no version {version}")

    def _holders(self, model: str, alias: str) -> list[dict]:
        """Descriptions of the packages holding `alias`, newest first (normally exactly one)."""
        summaries = self._packages_or_fail(model)
        if alias == self.approved_alias:
            return [self._describe(s["ModelPackageArn"]) for s in summaries if s.get("ModelApprovalStatus") == APPROVED]
        key = alias_key(alias)
        described = [self._describe(s["ModelPackageArn"]) for s in summaries]
        return [d for d in described if key in (d.get("CustomerMetadataProperties") or {})]

    def _holder(self, model: str, alias: str) -> dict:
        summaries = self._packages_or_fail(model)
        if alias == self.approved_alias:
            for summary in summaries:
                if summary.get("ModelApprovalStatus") == APPROVED:
                    return self._describe(summary["ModelPackageArn"])
            raise AliasNotFound(f"{self.where}: {model} has no Approved package (alias {alias} = newest Approved)")
        key = alias_key(alias)
        for summary in summaries:
            described = self._describe(summary["ModelPackageArn"])
            if key in (described.get("CustomerMetadataProperties") or {}):
                return described
        if alias == CANDIDATE:
            return self._describe(summaries[0]["ModelPackageArn"])
        raise AliasNotFound(
            f"{self.where}: no package of {model} holds alias {alias} "
            f"(metadata key {key}; {self.approved_alias} = newest Approved)"
        )

    def _resolved(self, model: str, alias: str, described: dict) -> Resolved:
        props = described.get("CustomerMetadataProperties") or {}
        version = str(described.get("ModelPackageVersion"))
        containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
        uri = props.get(URI_KEY) or containers[0].get("ModelDataUrl")
        sha = props.get(SHA_KEY)
        if not sha or not uri:
            raise RegistryError(
                f"{self.where}: {model} version {version} has no {SHA_KEY}/{URI_KEY} metadata "
                "(not registered by lensops)"
            )
        return Resolved(model, alias, version, uri, sha)

    def resolve(self, model: str, alias: str) -> Resolved:
        return self._resolved(model, alias, self._holder(model, alias))

    def download(self, resolved: Resolved, dest: Path) -> Path:
        """Stream the package to `dest` atomically; the sha256 must match the registry's."""
        bucket, key = split_s3_uri(resolved.uri)
        dest = Path(dest)
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                found = self._call(
                    f"downloading {resolved.uri}", self.s3.download_fileobj, bucket, key, fh, missing=False
                )
            if found is False:
                raise RegistryError(
                    f"{self.where}: {resolved.model} version {resolved.version}: "
                    f"package {resolved.uri} is missing from S3"
                )
            digest = sha256_file(tmp)
            if digest != resolved.sha256:
                raise RegistryError(
                    f"{resolved.uri}: sha256 {digest[:16]}... does not match the "
                    f"registry's {resolved.sha256[:16]}... ({resolved.model} v{resolved.version})"
                )
        return dest
