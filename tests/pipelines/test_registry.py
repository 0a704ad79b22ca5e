"""MLflow registry: register (idempotent, alias candidate), resolve, download — embedded SQLite and a real server."""

from __future__ import annotations

import pytest

from edge.package import sha256_file
from edge.registry import MlflowRegistry, RegistryError
from edge.registry import MlflowRegistryWriter
from tests.pipelines.mlflow_server import MlflowServer, free_port
from tests.pipelines.packaged import package_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def package(colour_models, tmp_path_factory):
    return package_model(colour_models.strong, colour_models.data, tmp_path_factory.mktemp("reg") / "p")


def _register_and_read_back(uri: str, package, tmp_path):
    folder, archive, manifest, sha = package
    writer = MlflowRegistryWriter(uri)
    first = writer.register(archive, manifest, sha, {})
    assert first.created and first.version == "1"
    # registering the same package again changes nothing
    again = writer.register(archive, manifest, sha, {})
    assert not again.created and again.version == "1"
    tags = writer.tags(manifest.name, "1")
    assert tags["sha256"] == sha and tags["metric.test_accuracy"] and "git_commit" in tags
    # the device side resolves the alias and downloads the same bytes
    device = MlflowRegistry(uri)
    resolved = device.resolve(manifest.name, "candidate")
    assert (resolved.version, resolved.sha256) == ("1", sha)
    local = device.download(resolved, tmp_path / "dl" / "package.tar.gz")
    assert sha256_file(local) == sha
    return writer, manifest


def test_register_in_the_embedded_sqlite_store(package, tmp_path):
    writer, manifest = _register_and_read_back(f"sqlite:///{tmp_path / 'mlflow.db'}", package, tmp_path)
    assert (tmp_path / "mlartifacts").is_dir(), "artifacts go beside the database, like training runs"
    assert writer.alias_version(manifest.name, "production") is None


def test_register_through_a_real_mlflow_server(package, tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    try:
        _register_and_read_back(server.uri, package, tmp_path)
        assert list((tmp_path / "server" / "artifacts").rglob("package.lensops")), "artifacts proxied to the server"
    finally:
        server.stop()


def test_unreachable_registry_is_a_clear_error_and_registers_nothing(package, tmp_path, monkeypatch):
    folder, archive, manifest, sha = package
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    writer = MlflowRegistryWriter(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryError, match="unreachable"):
        writer.register(archive, manifest, sha, {})


def test_an_alias_pointing_at_a_deleted_version_is_a_clear_error(package, tmp_path):
    folder, archive, manifest, sha = package
    writer = MlflowRegistryWriter(f"sqlite:///{tmp_path / 'mlflow.db'}")
    version = writer.register(archive, manifest, sha, {}).version
    writer.set_alias(manifest.name, "production", version)
    writer.client.delete_model_version(manifest.name, version)
    with pytest.raises(RegistryError, match=f"cannot resolve {manifest.name}@production"):
        MlflowRegistry(writer.uri).resolve(manifest.name, "production")
