"""The registry past one machine: `mlflow server` with a PostgreSQL backend store and an S3 artifact
store (moto in server mode), artifacts proxied through the server. A package is registered and
promoted over HTTP, and a device pulls it over HTTP and serves it (README, "A registry for a team")."""

from __future__ import annotations

import shutil
import urllib.request

import boto3
import cv2
import numpy as np
import psycopg2
import pytest
import yaml

from edge.registry import MlflowRegistryWriter
from tests.edge.conftest import collectors, mosquitto  # noqa: F401 (fixtures)
from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import run_device  # noqa: F401 (fixture)
from tests.edge.runner_setup import DEVICE, inference
from tests.pipelines.mlflow_server import MlflowServer
from tests.pipelines.postgres import Postgres

pytestmark = pytest.mark.slow
BUCKET = "lensops-mlflow-artifacts"


@pytest.fixture
def postgres():
    server = Postgres().start()
    yield server
    server.stop()


@pytest.fixture
def team_registry(postgres, moto_url, tmp_path, monkeypatch):
    """mlflow server: PostgreSQL backend store, s3:// artifact destination on moto, proxied artifacts."""
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=BUCKET)
    server = MlflowServer(
        tmp_path / "mlflow",
        backend_store_uri=postgres.sqlalchemy_uri,
        artifacts_destination=f"s3://{BUCKET}/mlflow",
        env={**aws, "MLFLOW_S3_ENDPOINT_URL": moto_url},
    ).start()
    yield server
    server.stop()


def test_register_promote_and_a_device_pulls_over_http(
    team_registry, postgres, moto_url, tiny_packages, tmp_path, mosquitto, collectors, run_device, monkeypatch
):
    # the client knows only the server's URL: no database, no S3 credentials on the data scientist's side
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    package = tiny_packages.classifier
    writer = MlflowRegistryWriter(team_registry.uri)
    version = writer.register(package.archive, package.manifest, package.sha256, {}).version
    writer.set_alias(package.manifest.name, "production", version)
    # the registry lives in PostgreSQL and the archive in S3, behind the server
    with psycopg2.connect(postgres.uri) as db, db.cursor() as cursor:
        cursor.execute("SELECT name FROM registered_models")
        assert [row[0] for row in cursor.fetchall()] == [package.manifest.name]
    stored = boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).list_objects_v2(Bucket=BUCKET, Prefix="mlflow/")
    assert any(item["Key"].endswith("/package/package.lensops") for item in stored.get("Contents", [])), stored

    # a device pulls production over HTTP and publishes every frame with it
    (tmp_path / "frames").mkdir()
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"frames/{i}.png"), np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8))
    shutil.copyfile(tiny_packages.public_key, tmp_path / "signing.pub")
    config = {
        "device_id": DEVICE,
        "registry": {
            "type": "mlflow",
            "uri": team_registry.uri,
            "model": package.manifest.name,
            "public_key": str(tmp_path / "signing.pub"),
        },
        "sources": [{"id": "door", "uri": str(tmp_path / "frames")}],
        "mqtt": {"url": mosquitto.url},
        "state_dir": str(tmp_path / "device-state"),
    }
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    collector = collectors(mosquitto.port, [f"lensops/{DEVICE}/#"])
    runner = run_device(tmp_path / "device.yaml", exit_when_done=True)
    assert runner.wait(60), "the runner did not finish the five frames"
    assert collector.wait_for(lambda ms: len(inference(ms)) >= 5, 10)
    assert {r["model"]["version"] for r in inference(collector.messages)} == {version}


def test_versions_registered_before_the_rename_keep_their_archive_name():
    from edge.registry import package_file

    assert package_file({"package_file": "package.lensops"}) == "package.lensops"
    assert package_file({"sha256": "ab"}) == "package.tar.gz"  # no tag: registered as package.tar.gz
