"""Real tiny model packages for edge tests: a classifier and a detector trained, optimized and packaged here.

`tiny_packages` (session scope) trains both in seconds on synthetic data, optimizes them to three
variants and packs them (signed). Helpers make the bad packages the device must refuse: a model
file altered but re-hashed in the manifest (golden mismatch), garbage weights (cannot load).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from edge.package import Manifest, pack, read_manifest, sha256_file
from edge.package.manifest import MANIFEST
from edge.package.signing import generate_keypair, sign_manifest

VARIANTS = ("onnx-fp32", "onnx-int8", "openvino-fp32")


@dataclass(frozen=True)
class BuiltPackage:
    folder: Path
    archive: Path
    sha256: str
    manifest: Manifest


@dataclass(frozen=True)
class TinyPackages:
    classifier: BuiltPackage
    classifier_b: BuiltPackage  # same network, different manifest metrics: a second registrable version
    detector: BuiltPackage
    private_key: Path
    public_key: Path
    classifier_build: Path
    root: Path


def build(build_dir: Path, out: Path, evaluation: dict, key: Optional[Path]) -> BuiltPackage:
    from pipelines.package import build_and_pack

    manifest, sha = build_and_pack(build_dir, out, out.with_suffix(".tar.gz"), evaluation, key)
    return BuiltPackage(out, out.with_suffix(".tar.gz"), sha, manifest)


def make_tiny_packages(root: Path, cls_data: Path, det_data: Path) -> TinyPackages:
    from pipelines.config import PipelineConfig
    from pipelines.optimize.stage import optimize
    from tests.training.helpers import quick_config
    from training.runner import train
    from training.sagemaker_env import RunEnvironment

    root.mkdir(parents=True, exist_ok=True)
    private_key, public_key = root / "signing.pem", root / "signing.pub"
    generate_keypair(private_key, public_key)
    cfg = PipelineConfig(variants=VARIANTS, latency_runs=5, golden_samples=2, calibration_images=16)
    built = {}
    for task, data, name, extra in (
        ("classification", cls_data, "tiny-classifier", {}),
        ("detection", det_data, "tiny-detector", {"input_size": 96, "batch_size": 8}),
    ):
        result = train(
            quick_config(data, root / task, task=task, model_name=name, epochs=1, **extra), RunEnvironment(), root
        )
        optimize(result.model_dir, data, root / f"build-{task}", root / f"report-{task}", cfg)
        built[task] = root / f"build-{task}"
    return TinyPackages(
        classifier=build(built["classification"], root / "pkg-cls-a", {"accuracy": 0.5}, private_key),
        classifier_b=build(built["classification"], root / "pkg-cls-b", {"accuracy": 0.6}, private_key),
        detector=build(built["detection"], root / "pkg-det", {"map": 0.5}, private_key),
        private_key=private_key,
        public_key=public_key,
        classifier_build=built["classification"],
        root=root,
    )


_made: dict[str, TinyPackages] = {}


@pytest.fixture(scope="session")
def tiny_packages(tmp_path_factory, tiny_cls, tiny_det) -> TinyPackages:
    """Built once per session, however many test modules import this fixture."""
    if "packages" not in _made:  # each importing module defines its own fixture: share the result
        _made["packages"] = make_tiny_packages(tmp_path_factory.mktemp("packages"), tiny_cls, tiny_det)
    return _made["packages"]


def rewrite(
    package: BuiltPackage,
    out: Path,
    variant_id: str,
    change,
    key: Optional[Path] = None,
    evaluation: Optional[dict] = None,
) -> BuiltPackage:
    """A copy of `package` with only `variant_id`, its entry file changed by `change(path)`, the manifest
    re-hashed (so sha256 verification passes) and re-signed with `key`; packed next to `out`."""
    shutil.copytree(package.folder, out)
    raw = json.loads((out / MANIFEST).read_text())
    raw["variants"] = [v for v in raw["variants"] if v["id"] == variant_id]
    variant = raw["variants"][0]
    change(out / variant["entry"])
    variant["files"] = {rel: sha256_file(out / rel) for rel in variant["files"]}
    if evaluation:
        raw["metrics"].update(evaluation)
    for sub in (out / "variants").iterdir():
        if sub.name != variant_id:
            shutil.rmtree(sub)
    (out / MANIFEST).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    (out / "manifest.sig").unlink(missing_ok=True)
    if key:
        sign_manifest(out, key)
    archive = pack(out, out.with_suffix(".tar.gz"))
    return BuiltPackage(out, archive, sha256_file(archive), read_manifest(out))


def perturb_onnx_weights(path: Path) -> None:
    """Still a valid ONNX model, but every float weight is shuffled: it computes something else."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for i, init in enumerate(model.graph.initializer):
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 8:
            changed = rng.permutation(array.ravel()).reshape(array.shape) * 3.0
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(changed.astype(np.float32), init.name))
    onnx.save(model, str(path))


def garble(path: Path) -> None:
    path.write_bytes(b"not a model" * 100)


def relabel(package: BuiltPackage, out: Path, key: Path) -> BuiltPackage:
    """The same network with its labels rotated by one: class i is reported as label i+1. The golden samples
    are relabelled the same way, so the package verifies and stages like any other."""
    shutil.copytree(package.folder, out)
    raw = json.loads((out / MANIFEST).read_text())
    labels = raw["labels"]
    moved = {label: labels[(i + 1) % len(labels)] for i, label in enumerate(labels)}
    raw["labels"] = [moved[label] for label in labels]
    for sample in raw["samples"]:
        path = out / sample["expected"]
        expected = json.loads(path.read_text())
        for predictions in [expected["reference"], *expected["variants"].values()]:
            for prediction in predictions:
                prediction["label"] = moved[prediction["label"]]
        path.write_text(json.dumps(expected, indent=1))
    raw["sample_files"] = {rel: sha256_file(out / rel) for rel in raw["sample_files"]}
    (out / MANIFEST).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    (out / "manifest.sig").unlink(missing_ok=True)
    sign_manifest(out, key)
    archive = pack(out, out.with_suffix(".tar.gz"))
    return BuiltPackage(out, archive, sha256_file(archive), read_manifest(out))
