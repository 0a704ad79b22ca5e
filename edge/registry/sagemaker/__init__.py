"""The SageMaker Model Registry backend: a Model Package Group per model, `Approved` = production.

`read.py` holds the mapping (packages, aliases, S3) and the read side a device uses; `write.py` the
write side (register, move aliases). boto3 only; the SageMaker SDK is not needed.
"""

from __future__ import annotations

from typing import Literal, Optional
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from edge.registry.base import BackendConfig

KEY = "sagemaker"


class Config(BackendConfig):
    """`registry: {type: sagemaker, s3_bucket: ..., region: ...}`; AWS credentials come from the usual
    AWS environment, profile or role, never from this file."""

    type: Literal["sagemaker"] = KEY
    region: Optional[str] = Field(None, description="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION)")
    endpoint_url: Optional[str] = Field(None, description="SageMaker and S3 API endpoint (tests, VPC endpoints)")
    s3_bucket: Optional[str] = Field(None, description="bucket of the package archives (needed to register)")
    s3_prefix: str = Field("lensops/packages", description="key prefix of the package archives")
    approved_alias: str = Field(
        "production",
        description="the alias that SageMaker's approval stands for (other aliases are metadata markers)",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _http_endpoint(cls, url: Optional[str]) -> Optional[str]:
        if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
            raise ValueError(f"endpoint_url: {url!r} is not an http(s)://host[:port] URL")
        return url

    def where(self) -> str:
        return self.endpoint_url or (self.region or "the default region")

    def client_options(self) -> dict:
        """The client's keyword arguments: this class's fields only (a device's config adds its own)."""
        return {name: getattr(self, name) for name in Config.model_fields if name != "type"}


def open_reader(config: Config):
    from edge.registry.sagemaker.read import SageMakerRegistry

    return SageMakerRegistry(**config.client_options())


def open_writer(config: Config):
    from edge.registry.sagemaker.write import SageMakerRegistryWriter

    return SageMakerRegistryWriter(**config.client_options())
