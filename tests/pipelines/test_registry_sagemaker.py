"""SageMaker Model Registry backend against moto in server mode (a real HTTP endpoint, never AWS)."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from edge.package import MANIFEST, InputSpec, Manifest, OutputSpec, Variant, pack, sha256_file
from edge.registry import RegistryError, open_registry, open_writer, registry_config
from edge.registry.sagemaker.write import MAX_TAG_ENTRIES, SageMakerRegistryWriter, metadata
from tests.pipelines.mlflow_server import free_port

MODEL = "shapes-classifier"
BUCKET = "lensops-test"
ALLOWED = re.compile(r"^[\w\s.:/=+\-@]+$")


@pytest.fixture
def aws(moto_url, monkeypatch) -> dict:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    options = {"endpoint_url": moto_url, "s3_bucket": BUCKET, "s3_prefix": "lensops/packages", "region": "us-east-1"}
    s3(options).create_bucket(Bucket=BUCKET)
    return options


def s3(aws: dict):
    return boto3.client("s3", endpoint_url=aws["endpoint_url"], region_name="us-east-1")


def sagemaker(aws: dict):
    return boto3.client("sagemaker", endpoint_url=aws["endpoint_url"], region_name="us-east-1")


@pytest.fixture
def writer(aws) -> SageMakerRegistryWriter:
    return open_writer(registry_config({"type": "sagemaker", **aws}))


def make_package(root: Path, accuracy: float, weights: bytes = b"onnx bytes") -> tuple[Path, Manifest, str]:
    """A real (tiny) model package: one variant file, a valid manifest, packed reproducibly."""
    folder = root / f"pkg-{accuracy}"
    folder.mkdir(parents=True)
    (folder / "onnx-fp32").mkdir()
    (folder / "onnx-fp32" / "model.onnx").write_bytes(weights)
    manifest = Manifest(
        name=MODEL,
        version=f"0.1.{int(accuracy * 100)}",
        task="classification",
        labels=("circle", "square"),
        created="2024-01-01T00:00:00Z",
        input=InputSpec(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3),
        output=OutputSpec(type="probabilities", names=("probabilities",)),
        variants=(
            Variant(
                id="onnx-fp32",
                runtime="onnxruntime",
                precision="fp32",
                entry="model.onnx",
                files={"onnx-fp32/model.onnx": sha256_file(folder / "onnx-fp32" / "model.onnx")},
            ),
        ),
        metrics={"accuracy": accuracy, "f1": accuracy - 0.01},
        lineage={"git_commit": "abc123", "data_hash": "d1"},
    )
    (folder / MANIFEST).write_text(manifest.to_json())
    archive = pack(folder, root / f"pkg-{accuracy}.tar.gz")
    return archive, manifest, sha256_file(archive)


def describe(aws: dict, version: str) -> dict:
    summaries = sagemaker(aws).list_model_packages(ModelPackageGroupName=MODEL)["ModelPackageSummaryList"]
    arn = next(s["ModelPackageArn"] for s in summaries if str(s["ModelPackageVersion"]) == version)
    return sagemaker(aws).describe_model_package(ModelPackageName=arn)


def statuses(aws: dict) -> dict[str, str]:
    summaries = sagemaker(aws).list_model_packages(ModelPackageGroupName=MODEL)["ModelPackageSummaryList"]
    return {str(s["ModelPackageVersion"]): s["ModelApprovalStatus"] for s in summaries}


def test_register_resolve_download(writer, aws, tmp_path):
    # given a package archive
    archive, manifest, sha = make_package(tmp_path, 0.9)
    # when it is registered
    reg = writer.register(archive, manifest, sha, {"dvc_stage": "register@classifier"})
    # then a new package version holds it, in S3 under the prefix, named by its sha256
    assert (reg.version, reg.created, reg.sha256) == ("1", True, sha)
    assert reg.uri == f"s3://{BUCKET}/lensops/packages/{MODEL}/{sha}.tar.gz"
    assert statuses(aws) == {"1": "PendingManualApproval"}
    # and a device (read side only) resolves the candidate and downloads the same bytes
    device = open_registry(registry_config({"type": "sagemaker", **aws}))
    resolved = device.resolve(MODEL, "candidate")
    assert (resolved.version, resolved.uri, resolved.sha256) == ("1", reg.uri, sha)
    got = device.download(resolved, tmp_path / "dl" / "package.tar.gz")
    assert sha256_file(got) == sha
    assert [p.name for p in got.parent.iterdir()] == ["package.tar.gz"], "no temp files left behind"
    # and the version carries metrics, lineage and extra tags within SageMaker's character rules
    tags = writer.tags(MODEL, "1")
    assert tags["metric.accuracy"] == "0.9" and tags["git_commit"] == "abc123" and tags["sha256"] == sha
    assert tags["dvc_stage"] == "register@classifier" and tags["variants"] == "onnx-fp32"
    described = describe(aws, "1")
    assert all(ALLOWED.match(k) and ALLOWED.match(v) for k, v in described["CustomerMetadataProperties"].items())
    assert described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == reg.uri


def test_promote_then_roll_back(writer, aws, tmp_path):
    a = make_package(tmp_path, 0.8, b"a")
    b = make_package(tmp_path, 0.9, b"b")
    v1 = writer.register(*a, {}).version
    # when v1 is approved, production resolves to it
    writer.set_alias(MODEL, "production", v1)
    assert writer.resolve(MODEL, "production").version == "1"
    assert statuses(aws) == {"1": "Approved"}
    # a second registration becomes the candidate; production stays
    v2 = writer.register(*b, {}).version
    assert v2 == "2"
    assert writer.resolve(MODEL, "candidate").version == "2"
    assert writer.alias_version(MODEL, "production") == "1"
    # promoting v2 approves it and rejects the previous holder
    writer.set_alias(MODEL, "production", v2)
    assert writer.resolve(MODEL, "production").version == "2"
    assert statuses(aws) == {"1": "Rejected", "2": "Approved"}
    # rolling back to the older v1 works although v2 is newer
    writer.set_alias(MODEL, "production", v1)
    assert writer.resolve(MODEL, "production").version == "1"
    assert statuses(aws) == {"1": "Approved", "2": "Rejected"}
    desc = describe(aws, "2")
    assert "superseded as production by version 1" in desc["ApprovalDescription"]
    # metadata survived the approval updates
    assert writer.tags(MODEL, "2")["sha256"] == b[2]


def test_reregister_is_idempotent_and_moves_candidate(writer, aws, tmp_path):
    a = make_package(tmp_path, 0.8, b"a")
    b = make_package(tmp_path, 0.9, b"b")
    first = writer.register(*a, {})
    writer.register(*b, {})
    again = writer.register(*a, {})
    assert (again.version, again.created, again.uri) == (first.version, False, first.uri)
    assert sorted(statuses(aws)) == ["1", "2"], "no duplicate package"
    assert writer.resolve(MODEL, "candidate").version == "1"
    assert "alias.candidate" not in describe(aws, "2")["CustomerMetadataProperties"]


def test_other_aliases_are_markers(writer, aws, tmp_path):
    v1 = writer.register(*make_package(tmp_path, 0.8, b"a"), {}).version
    v2 = writer.register(*make_package(tmp_path, 0.9, b"b"), {}).version
    assert writer.alias_version(MODEL, "fleet-lobby") is None
    writer.set_alias(MODEL, "fleet-lobby", v2)
    assert writer.resolve(MODEL, "fleet-lobby").version == "2"
    writer.set_alias(MODEL, "fleet-lobby", v1)
    assert writer.resolve(MODEL, "fleet-lobby").version == "1"
    assert statuses(aws) == {"1": "PendingManualApproval", "2": "PendingManualApproval"}, "approval untouched"
    # a fleet configured with its own approved alias follows approval instead
    lobby = SageMakerRegistryWriter(approved_alias="fleet-lobby", **aws)
    lobby.set_alias(MODEL, "fleet-lobby", v2)
    assert lobby.resolve(MODEL, "fleet-lobby").version == "2" and statuses(aws)["2"] == "Approved"


def test_missing_group_and_no_approved_version(writer, tmp_path):
    with pytest.raises(RegistryError, match="no model package group 'nope'"):
        writer.resolve("nope", "production")
    assert writer.alias_version("nope", "production") is None
    writer.register(*make_package(tmp_path, 0.8), {})
    with pytest.raises(RegistryError, match="no Approved package"):
        writer.resolve(MODEL, "production")
    assert writer.alias_version(MODEL, "production") is None
    with pytest.raises(RegistryError, match="no version 7"):
        writer.set_alias(MODEL, "production", "7")
    with pytest.raises(RegistryError, match="group name"):
        writer.resolve("bad_name", "production")


def test_unreachable_endpoint_fails_fast(aws, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    options = {**aws, "endpoint_url": dead}
    start = time.monotonic()
    with pytest.raises(RegistryError, match="unreachable") as err:
        open_registry(registry_config({"type": "sagemaker", **options})).resolve(MODEL, "production")
    assert dead in str(err.value)
    with pytest.raises(RegistryError, match="unreachable"):
        open_writer(registry_config({"type": "sagemaker", **options})).register(*make_package(tmp_path, 0.8), {})
    assert time.monotonic() - start < 20


def test_failed_create_keeps_nothing(writer, aws, tmp_path, monkeypatch):
    from botocore.exceptions import ClientError

    def refuse(**kwargs):
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "refused"}}, "CreateModelPackage")

    monkeypatch.setattr(writer.sagemaker, "create_model_package", refuse)
    with pytest.raises(RegistryError, match="refused.*nothing kept"):
        writer.register(*make_package(tmp_path, 0.8), {})
    assert s3(aws).list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0, "the uploaded archive was deleted"
    assert statuses(aws) == {}


def test_download_refuses_a_changed_object(writer, aws, tmp_path):
    reg = writer.register(*make_package(tmp_path, 0.8), {})
    s3(aws).put_object(Bucket=BUCKET, Key=reg.uri.split("/", 3)[3], Body=b"tampered")
    resolved = writer.resolve(MODEL, "candidate")
    with pytest.raises(RegistryError, match="does not match"):
        writer.download(resolved, tmp_path / "dl" / "p.tar.gz")
    assert list((tmp_path / "dl").iterdir()) == []
    s3(aws).delete_object(Bucket=BUCKET, Key=reg.uri.split("/", 3)[3])
    with pytest.raises(RegistryError, match="missing from S3"):
        writer.download(resolved, tmp_path / "dl" / "p.tar.gz")


def test_metadata_respects_sagemaker_limits():
    tags = {f"metric.m{i}": str(i) for i in range(60)}
    tags.update({"variants": "onnx-fp32,onnx-int8", "k" * 200: "v" * 400, "empty": "", "odd": "a(b)#c"})
    props = metadata(tags, {"sha256": "f" * 64, "package_uri": "s3://b/k.tar.gz"})
    assert len(props) == MAX_TAG_ENTRIES and props["sha256"] == "f" * 64
    assert all(len(k) <= 128 and 0 < len(v) <= 256 and ALLOWED.match(k) and ALLOWED.match(v) for k, v in props.items())
    small = metadata({"variants": "onnx-fp32,onnx-int8", "odd": "a(b)#c", "empty": ""}, {})
    assert small == {"variants": "onnx-fp32 onnx-int8", "odd": "a_b__c"}


def test_missing_boto3_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(RegistryError, match="needs boto3"):
        open_registry(registry_config({"type": "sagemaker", "region": "us-east-1"}))
