"""SageMaker against moto in server mode: credentials, endpoint, a bucket and an execution role."""

from __future__ import annotations

import json
import urllib.request

import boto3
import pytest

from pipelines.sagemaker.job import import_sagemaker

BUCKET = "lensops-jobs"
ROLE = "SageMakerLensOps"


@pytest.fixture
def aws(moto_url, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("iam").create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps({"Statement": []}))
    # the SDK polls every 5 s however short the job; moto's jobs end at once
    monkeypatch.setattr(import_sagemaker().session.time, "sleep", lambda seconds: None)
    return moto_url
