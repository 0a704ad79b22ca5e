"""`--init-from` end to end: every form a model can be registered or stored in starts the fine-tune
from the source's weights; a reference that holds no trainable network is one clear error naming it.

One tiny colour classifier is trained (tracked in a SQLite store), packaged twice (with the
mxnet-fp32 variant, and ONNX only), registered in the SQLite store and in a real `mlflow server`.
Each fine-tune freezes the backbone, so its convolution weights must equal the source's exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from pipelines.config import PipelineConfig
from edge.registry import MlflowRegistryWriter
from pipelines.sagemaker.local import _tar as sagemaker_model_tar
from tests.pipelines.mlflow_server import MlflowServer, free_port
from tests.pipelines.models import colour_data
from tests.pipelines.packaged import package_model
from tests.training.helpers import quick_config
from training import runner
from training.init_source import resolve_init_from
from training.sagemaker_env import RunEnvironment
from training.train import main as train_main

pytestmark = pytest.mark.slow

MODEL = "colours"
WITH_MXNET = PipelineConfig(variants=("mxnet-fp32",), latency_runs=3, golden_samples=1, calibration_images=8)
ONNX_ONLY = PipelineConfig(variants=("onnx-fp32",), latency_runs=3, golden_samples=1, calibration_images=8)


@dataclass(frozen=True)
class Sources:
    data: Path
    model_dir: Path
    run_id: str
    store: str  # sqlite:/// tracking store and registry (as the demo's mlflow.db)
    server: str  # a real `mlflow server`: registry only, it never saw the training run
    package_dir: Path
    package_tar: Path
    onnx_package_tar: Path
    sagemaker_tar: Path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Sources:
    root = tmp_path_factory.mktemp("init-from")
    data = colour_data(root / "data")
    store = f"sqlite:///{root / 'mlflow.db'}"
    server = MlflowServer(root / "server")
    pool = ThreadPoolExecutor(1)
    starting = pool.submit(server.start)  # the server boots while the source model trains
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MLFLOW_TRACKING_URI", store)
            env.delenv("MLFLOW_REGISTRY_URI", raising=False)
            cfg = quick_config(
                data, root / "src", epochs=2, optimizer="sgd", lr=0.1, model_name=MODEL, tracking="mlflow"
            )
            result = runner.train(cfg, RunEnvironment(), root)
        folder, archive, manifest, sha = package_model(result.model_dir, data, root / "pkg", cfg=WITH_MXNET)
        _, onnx_archive, onnx_manifest, onnx_sha = package_model(result.model_dir, data, root / "onnx", cfg=ONNX_ONLY)
        starting.result()
        for uri in (store, server.uri):
            writer = MlflowRegistryWriter(uri)
            assert writer.register(archive, manifest, sha, {}).version == "1"
            assert writer.register(onnx_archive, onnx_manifest, onnx_sha, {}).version == "2"
            writer.set_alias(MODEL, "production", "1")
            writer.set_alias(MODEL, "onnx-only", "2")
        # a version registered with plain MLflow, its artifacts the training run's model folder
        from mlflow import MlflowClient

        client = MlflowClient(store, store)
        client.create_registered_model(f"{MODEL}-folder")
        client.create_model_version(
            f"{MODEL}-folder", f"{client.get_run(result.run_id).info.artifact_uri}/model", result.run_id
        )
        (root / "sm").mkdir()
        sagemaker_model_tar(result.model_dir, root / "sm" / "model.tar.gz")
        yield Sources(
            data,
            result.model_dir,
            result.run_id,
            store,
            server.uri,
            folder,
            archive,
            onnx_archive,
            root / "sm" / "model.tar.gz",
        )
    finally:
        # wait for the server to finish starting (or fail to) first: stopped mid-start, it would outlive the tests
        pool.shutdown(wait=True)
        server.stop()


def _fine_tune(ref: str, data: Path, out: Path) -> tuple[int, dict]:
    """`python -m training.train ... --init-from REF --freeze-backbone true`: exit code, model.json."""
    code = train_main(
        [
            "--task",
            "classification",
            "--network",
            "mobilenet0.25",
            "--data",
            str(data),
            "--model-name",
            "tuned",
            "--input-size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--max-train-samples",
            "32",
            "--optimizer",
            "adam",
            "--lr",
            "0.002",
            "--num-workers",
            "0",
            "--model-dir",
            str(out / "model"),
            "--checkpoint-dir",
            str(out / "ckpt"),
            "--tracking",
            "none",
            "--progress",
            "false",
            "--init-from",
            ref,
            "--freeze-backbone",
            "true",
        ]
    )
    meta_file = out / "model" / "model.json"
    return code, json.loads(meta_file.read_text()) if meta_file.is_file() else {}


def _params(model_dir: Path) -> dict:
    return {k: v.asnumpy() for k, v in mx.nd.load(str(model_dir / "model-0000.params")).items()}


def _assert_started_from(source_dir: Path, tuned_dir: Path, init: dict, ref: str) -> None:
    source = _params(source_dir)
    assert init["copied"] == len(source), f"{ref}: every source parameter carried over: {init}"
    assert init["reinitialised"] == 0, f"{ref}: same network and classes, nothing starts fresh: {init}"
    tuned = _params(tuned_dir)
    convs = [k for k in source if "conv" in k and k.endswith("_weight")]
    assert len(convs) > 10, f"mobilenet has its convolutions: {convs}"
    for key in convs:
        np.testing.assert_array_equal(
            tuned[key], source[key], err_msg=f"{ref}: frozen {key} is not the source's (did not start from it)"
        )


def _env(monkeypatch, tracking: str, registry: str | None = None) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    if registry:
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry)
    else:
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


# --- every form starts from the source weights ---------------------------------------------------

FORMS = {
    "sqlite alias": lambda s: (f"models:/{MODEL}@production", s.store, None, "variant mxnet-fp32"),
    "sqlite version": lambda s: (f"models:/{MODEL}/1", s.store, None, "variant mxnet-fp32"),
    # the registry is a separate server; the tracking store (SQLite) has never seen the package
    "server alias, separate registry": lambda s: (
        f"models:/{MODEL}@production",
        s.store,
        s.server,
        "variant mxnet-fp32",
    ),
    "server version": lambda s: (f"models:/{MODEL}/1", s.server, None, "variant mxnet-fp32"),
    "sqlite version holding a model folder": lambda s: (f"models:/{MODEL}-folder/1", s.store, None, "model folder"),
    "run path": lambda s: (f"runs:/{s.run_id}/model", s.store, None, "model folder"),
    "sagemaker model.tar.gz": lambda s: (str(s.sagemaker_tar), s.store, None, "model folder"),
    "package .tar.gz": lambda s: (str(s.package_tar), s.store, None, "variant mxnet-fp32"),
    "package folder": lambda s: (str(s.package_dir), s.store, None, "variant mxnet-fp32"),
    "model folder": lambda s: (str(s.model_dir), s.store, None, "model folder"),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_starts_the_fine_tune_from_the_source_weights(form, sources, tmp_path, monkeypatch):
    # given a trained model reachable as `form`
    ref, tracking, registry, loaded = FORMS[form](sources)
    _env(monkeypatch, tracking, registry)
    # when fine-tuning from it through the entry point
    code, meta = _fine_tune(ref, sources.data, tmp_path)
    # then the run succeeds and started from exactly the source's weights
    assert code == 0, f"{form}: training from {ref} failed"
    init = meta["lineage"]["init"]
    assert init["init"] == ref and loaded in init["source"], f"{form}: lineage names what was loaded: {init}"
    _assert_started_from(sources.model_dir, tmp_path / "model", init, ref)


def test_an_alias_names_the_version_it_resolved_to(sources, tmp_path, monkeypatch):
    # given the production alias on version 1
    _env(monkeypatch, sources.store)
    # when fine-tuning from the alias
    code, meta = _fine_tune(f"models:/{MODEL}@production", sources.data, tmp_path)
    # then the run's lineage records the version behind the alias
    assert code == 0
    assert "(version 1)" in meta["lineage"]["init"]["source"], meta["lineage"]["init"]


def test_a_package_without_mxnet_variant_falls_back_to_its_training_run(sources, tmp_path, monkeypatch):
    # given an ONNX-only version whose training run is in the tracking store
    _env(monkeypatch, sources.store)
    # when fine-tuning from it
    code, meta = _fine_tune(f"models:/{MODEL}@onnx-only", sources.data, tmp_path)
    # then the weights come from the run named in the package's lineage
    assert code == 0, "fallback to the lineage run"
    init = meta["lineage"]["init"]
    assert f"runs:/{sources.run_id}/model" in init["source"], init
    _assert_started_from(sources.model_dir, tmp_path / "model", init, "onnx-only")


def test_the_fingerprint_follows_the_alias(sources, tmp_path, monkeypatch):
    # given an alias on version 1 in a registry server (version 2, ONNX only, falls back to the run in the store)
    _env(monkeypatch, sources.store, sources.server)
    writer = MlflowRegistryWriter(sources.server)
    writer.set_alias(MODEL, "moving", "1")
    ref = f"models:/{MODEL}@moving"
    cfg = quick_config(sources.data, Path("/nonexistent"), init_from=ref)

    def fingerprint() -> str:  # as runner.train: resolve once, fingerprint with the resolved identity
        return runner.config_fingerprint(cfg, "data", resolve_init_from(ref, tmp_path, tmp_path).identity)

    before = fingerprint()
    # when the alias moves to another version
    writer.set_alias(MODEL, "moving", "2")
    after = fingerprint()
    # then a checkpoint of the old starting point is no longer resumed
    assert before != after, "checkpoints must not resume across a moved alias"
    assert fingerprint() == after, "stable while the alias stays"


# --- references that hold no trainable network: one clear error naming them ----------------------


def _unsafe_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        body = b"x"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return path


ERRORS = {
    "unknown alias": lambda s, tmp: (f"models:/{MODEL}@nosuch", s.store, None, "no alias 'nosuch'"),
    "unknown model": lambda s, tmp: (
        "models:/no-such-model/1",
        s.server,
        None,
        "no version 1 of model 'no-such-model'",
    ),
    "not an alias or version": lambda s, tmp: (f"models:/{MODEL}", s.store, None, "not models:/NAME@ALIAS"),
    "unreachable server": lambda s, tmp: (
        f"models:/{MODEL}@production",
        s.store,
        f"http://127.0.0.1:{free_port()}",
        "unreachable",
    ),
    "missing sqlite store": lambda s, tmp: (
        f"models:/{MODEL}@production",
        f"sqlite:///{tmp / 'none.db'}",
        None,
        "database file does not exist",
    ),
    "empty run path": lambda s, tmp: (f"runs:/{s.run_id}/nothing-here", s.store, None, "nothing-here"),
    "onnx-only package, run unknown": lambda s, tmp: (str(s.onnx_package_tar), s.server, None, "no mxnet variant"),
    "folder without a network": lambda s, tmp: (str(_empty_folder(tmp)), s.store, None, "holds no trainable network"),
    "unsafe archive": lambda s, tmp: (str(_unsafe_archive(tmp / "evil.tar.gz")), s.store, None, "unsafe member"),
}


def _empty_folder(tmp: Path) -> Path:
    (tmp / "notes").mkdir()
    (tmp / "notes" / "README.txt").write_text("no model here")
    return tmp / "notes"


@pytest.mark.parametrize("case", list(ERRORS))
def test_a_reference_without_a_trainable_network_is_one_clear_error(case, sources, tmp_path, monkeypatch, capsys):
    # given a reference that holds no trainable network
    ref, tracking, registry, expected = ERRORS[case](sources, tmp_path)
    _env(monkeypatch, tracking, registry)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # when fine-tuning from it
    code, _ = _fine_tune(ref, sources.data, tmp_path / "out")
    # then one error line names the reference and the reason; nothing is written
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code != 0, f"{case}: must fail"
    assert len(err) == 1 and "init_from" in err[0] and ref in err[0] and expected in err[0], f"{case}: {err}"
    assert not (tmp_path / "out" / "model").exists(), f"{case}: no model written"


# --- the evidence the package form rests on -------------------------------------------------------


@pytest.mark.parametrize(
    "task,network,size", [("classification", "mobilenet0.25", 32), ("detection", "ssd_96_mobilenet0.25", 96)]
)
def test_the_mxnet_variant_keeps_the_gluon_parameter_names(task, network, size, tmp_path):
    # given a network wrapped into the inference block the mxnet-fp32 variant is exported from
    from pipelines.optimize.export import Probabilities, ScoresBoxes, export_mxnet
    from training import networks

    net = networks.build_network(networks.parse_network(network, task), ["a", "b"])
    networks.initialize(net, size)
    block = Probabilities(net) if task == "classification" else ScoresBoxes(net, size)
    for param in block.params.values():
        param.initialize()
    block.hybridize()
    block(mx.nd.zeros((1, 3, size, size)))
    # when exporting it as the variant is
    _, params = export_mxnet(block, tmp_path / "model")
    saved = {k.split(":", 1)[1]: v.asnumpy() for k, v in mx.nd.load(str(params)).items()}
    # then every learned parameter is saved under its Gluon name with its value (only SSD's anchor
    # constants, fixed by the architecture, are left out)
    learned = {n: p.data().asnumpy() for n, p in net.collect_params().items() if not isinstance(p, mx.gluon.Constant)}
    assert set(learned) <= set(saved), f"missing from the variant: {sorted(set(learned) - set(saved))[:5]}"
    for name, value in learned.items():
        np.testing.assert_array_equal(saved[name], value, err_msg=f"{name}: the variant holds another value")


# --- a package manifest that points outside the package or is malformed ---------------------------


def _package(folder: Path, variants) -> Path:
    """A package folder with its manifest (only the fields init_from reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "schema": "lensops.package/1",
        "name": MODEL,
        "version": "1",
        "task": "classification",
        "labels": ["a", "b"],
        "variants": variants,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_variant_file_outside_the_package_is_refused(tmp_path):
    # given a package whose mxnet variant names an absolute path (with the right sha256) outside it
    from training.errors import ConfigError
    from training.init_source import _sha256

    outside = tmp_path / "elsewhere" / "model-0000.params"
    outside.parent.mkdir()
    mx.nd.save(str(outside), {"arg:dense0_weight": mx.nd.zeros((2, 2))})
    package = _package(
        tmp_path / "pkg",
        [{"id": "mxnet-fp32", "runtime": "mxnet", "precision": "fp32", "files": {str(outside): _sha256(outside)}}],
    )
    # when it is resolved, then it is refused naming the file, and nothing outside is loaded
    with pytest.raises(ConfigError, match=rf"file {outside} of variant mxnet-fp32 is not a path inside the package"):
        resolve_init_from(str(package), tmp_path, tmp_path)


@pytest.mark.parametrize(
    "variants, named",
    [
        (["mxnet-fp32"], r"variants\[0\] is not an object with an 'id'"),
        ([{"runtime": "mxnet", "files": {}}], r"variants\[0\] is not an object with an 'id'"),
        ({"mxnet-fp32": {}}, "'variants' is a dict, not a list"),
        ([{"id": "mxnet-fp32", "runtime": "mxnet", "files": ["model-0000.params"]}], "'files' is not an object"),
    ],
)
def test_a_malformed_variant_is_one_config_error_naming_the_manifest(variants, named, tmp_path):
    from training.errors import ConfigError

    package = _package(tmp_path / "pkg", variants)
    with pytest.raises(ConfigError, match=rf"manifest.json is not a LensOps package manifest .*{named}"):
        resolve_init_from(str(package), tmp_path, tmp_path)


def test_a_registered_archive_that_does_not_match_its_sha256_is_refused(sources, tmp_path, monkeypatch, capsys):
    # given a version whose stored package archive was changed after registration
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # the sqlite store's artifacts go to ./mlartifacts
    _env(monkeypatch, store)
    manifest = json.loads(tarfile.open(sources.package_tar).extractfile("manifest.json").read())
    from edge.package import Manifest

    MlflowRegistryWriter(store).register(
        sources.package_tar,
        Manifest.model_validate(manifest),
        hashlib.sha256(sources.package_tar.read_bytes()).hexdigest(),
        {},
    )
    stored = [p for p in tmp_path.rglob("package.lensops")]
    assert len(stored) == 1, list(tmp_path.rglob("*"))
    stored[0].write_bytes(stored[0].read_bytes() + b"tampered")
    # when fine-tuning from it, then it is refused by name and nothing is trained
    code, meta = _fine_tune(f"models:/{MODEL}/1", sources.data, tmp_path / "out")
    assert code == 2 and meta == {}
    assert "does not match its sha256 tag" in capsys.readouterr().err
