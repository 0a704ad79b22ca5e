"""Packages: manifest + sha256 per file + golden samples + lineage + signature; verify names what is wrong."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from edge.package import MANIFEST, PackageError, open_package, read_manifest, safe_extract, verify_dir
from edge.package.signing import generate_keypair
from lensops.cli import main as lensops
from tests.pipelines.packaged import package_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def signed(colour_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    generate_keypair(root / "key.pem", root / "key.pub")
    folder, archive, manifest, sha = package_model(
        colour_models.strong, colour_models.data, root / "p", root / "key.pem"
    )
    return root, folder, archive, manifest


def test_package_holds_variants_samples_lineage_and_metrics(signed):
    root, folder, archive, manifest = signed
    assert manifest.schema_ == "lensops.package/1" and manifest.task == "classification"
    report = json.loads((folder.parent / "build" / "optimize.json").read_text())
    passed = [vid for vid, row in report["variants"].items() if row["passed"]]
    assert [v.id for v in manifest.variants] == passed, "exactly the variants that passed their gate"
    assert {"onnx-fp32", "openvino-fp32"} <= set(passed), "fp32 variants agree with the reference"
    for variant in manifest.variants:
        assert variant.files and all(len(sha) == 64 for sha in variant.files.values())
        assert variant.latency.median_ms > 0 and "top1_agreement" in variant.parity
    assert len(manifest.samples) == 2 and manifest.sample_files
    assert {"data_hash", "git_commit", "training_params"} <= set(manifest.lineage)
    assert "test_accuracy" in manifest.metrics and manifest.labels == ("blue", "green", "red")
    assert not any(p.suffix in (".pkl", ".pickle") for p in folder.rglob("*"))


def test_verify_accepts_the_package_and_its_signature(signed, tmp_path, capsys):
    root, folder, archive, manifest = signed
    assert lensops(["package", "verify", str(archive), "--pubkey", str(root / "key.pub")]) == 0
    assert "OK" in capsys.readouterr().out
    unpacked, again = open_package(archive, tmp_path, root / "key.pub")
    assert again == manifest


def test_a_tampered_file_is_named(signed, tmp_path, capsys):
    root, folder, archive, manifest = signed
    # given a copy of the package with one variant file changed by a byte
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    target = copy / manifest.variants[1].entry
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    # then verify fails with a non-zero exit naming that file
    assert lensops(["package", "verify", str(copy)]) == 2
    err = capsys.readouterr().err
    assert manifest.variants[1].entry in err and "sha256" in err


def test_unlisted_files_missing_files_and_bad_manifests_are_refused(signed, tmp_path):
    root, folder, archive, manifest = signed
    import shutil

    extra = tmp_path / "extra"
    shutil.copytree(folder, extra)
    (extra / "variants" / "evil.py").write_text("print('hi')")
    with pytest.raises(PackageError, match="evil.py: not listed"):
        verify_dir(extra)
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    (missing / manifest.samples[0].image).unlink()
    with pytest.raises(PackageError, match="listed in manifest.json but missing"):
        verify_dir(missing)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    raw = json.loads((broken / MANIFEST).read_text())
    del raw["labels"]
    (broken / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(PackageError, match="field 'labels'"):
        read_manifest(broken)


def test_signature_must_match_the_configured_key(signed, tmp_path):
    root, folder, archive, manifest = signed
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    with pytest.raises(PackageError, match="signature does not match"):
        verify_dir(folder, tmp_path / "other.pub")
    import shutil

    unsigned = tmp_path / "unsigned"
    shutil.copytree(folder, unsigned)
    (unsigned / "manifest.sig").unlink()
    with pytest.raises(PackageError, match="unsigned"):
        verify_dir(unsigned, root / "key.pub")


def _tar_with(tmp_path, name: str, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize(
    "member, expected",
    [
        (tarfile.TarInfo("../escape.txt"), "unsafe path"),
        (tarfile.TarInfo("/etc/evil"), "unsafe path"),
    ],
)
def test_unsafe_archives_are_refused_and_leave_nothing(tmp_path, member, expected):
    archive = _tar_with(tmp_path, "bad.tar.gz", member, b"x")
    with pytest.raises(PackageError, match=expected):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_links_and_oversize_members_are_refused(tmp_path):
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(PackageError, match="link or device"):
        safe_extract(_tar_with(tmp_path, "link.tar.gz", link), tmp_path / "a")
    with pytest.raises(PackageError, match="limit"):
        safe_extract(
            _tar_with(tmp_path, "big.tar.gz", tarfile.TarInfo("big.bin"), b"x" * 100), tmp_path / "b", max_member=10
        )


def test_manifest_paths_a_device_opens_must_be_pinned(signed, tmp_path):
    import shutil

    root, folder, archive, manifest = signed
    for field, value in (("entry", "/etc/hostname"), ("image", "/etc/hostname")):
        copy = tmp_path / field
        shutil.copytree(folder, copy)
        raw = json.loads((copy / MANIFEST).read_text())
        if field == "entry":
            raw["variants"][0]["entry"] = value
        else:
            raw["samples"][0]["image"] = value
        (copy / MANIFEST).write_text(json.dumps(raw))
        with pytest.raises(PackageError, match="not among its files|not listed in sample_files"):
            verify_dir(copy)


def test_a_truncated_archive_is_one_clear_error(signed, tmp_path, capsys):
    root, folder, archive, manifest = signed
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert lensops(["package", "verify", str(cut)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cut.tar.gz" in err and len(err.splitlines()) == 1
