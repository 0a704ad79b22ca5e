"""Verify, pack and safely unpack model packages.

A package travels as one `.tar.gz`. Unpacking rejects absolute paths, `..`, links, devices and
oversize members; verification checks every file against the manifest's sha256 (and the
signature when a public key is given) before anything is loaded, and refuses unlisted files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Optional

from common.files import atomic_path
from edge.package.manifest import MANIFEST, SIGNATURE, Manifest, PackageError, read_manifest

MAX_MEMBER_BYTES = 1 << 30
MAX_TOTAL_BYTES = 4 << 30


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (Python 3.10 has no hashlib.file_digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_dir(package_dir: Path, public_key: Optional[Path] = None) -> Manifest:
    """The manifest of a package folder whose files all match it; PackageError naming the first bad file."""
    root = Path(package_dir)
    manifest = read_manifest(root)
    if public_key is not None:
        from edge.package.signing import verify_signature

        verify_signature(root, public_key)
    listed = manifest.all_files()
    for rel, expected in sorted(listed.items()):
        path = root / rel
        if path.is_symlink() or not path.is_file():
            raise PackageError(f"{path}: listed in {MANIFEST} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise PackageError(f"{path}: sha256 {actual[:16]}... does not match {MANIFEST} ({expected[:16]}...)")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        if rel not in listed and rel not in (MANIFEST, SIGNATURE):
            raise PackageError(f"{path}: not listed in {MANIFEST}")
    return manifest


def pack(package_dir: Path, out: Path) -> Path:
    """A reproducible .tar.gz (sorted members, zeroed owners and times), written atomically."""
    root = Path(package_dir)
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", mtime=0
    ) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o644
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return out


def safe_extract(
    archive: Path, dest: Path, max_member: int = MAX_MEMBER_BYTES, max_total: int = MAX_TOTAL_BYTES
) -> Path:
    """Unpack `archive` into the new folder `dest`; nothing is left behind when a member is refused."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise PackageError(f"{dest}: already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            tar = tarfile.open(archive, "r:*")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PackageError(f"{archive}: not a readable tar archive ({first})") from None
        try:
            _extract_members(tar, archive, tmp, max_member, max_total)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PackageError(f"{archive}: corrupt archive ({first})") from None
        os.replace(tmp, dest)
        return dest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _extract_members(tar: tarfile.TarFile, archive: Path, tmp: Path, max_member: int, max_total: int) -> None:
    """Copy regular files and folders of `tar` into `tmp`; PackageError for anything unsafe."""
    total = 0
    with tar:
        for member in tar:
            name = member.name
            parts = Path(name).parts
            if member.isdir() and not parts:  # "." of `tar -C dir -czf x.tgz .`
                continue
            if name.startswith("/") or ".." in parts or not parts:
                raise PackageError(f"{archive}: member '{name}' has an unsafe path")
            if not (member.isfile() or member.isdir()):
                raise PackageError(f"{archive}: member '{name}' is a link or device")
            if member.size > max_member:
                raise PackageError(f"{archive}: member '{name}' is {member.size} bytes (limit {max_member})")
            total += member.size
            if total > max_total:
                raise PackageError(f"{archive}: more than {max_total} bytes unpacked")
            target = tmp / name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            with open(target, "wb") as fh:
                shutil.copyfileobj(src, fh)


def open_package(path: Path, workdir: Path, public_key: Optional[Path] = None) -> tuple[Path, Manifest]:
    """A verified package folder from a folder or a .tar.gz (unpacked under `workdir`)."""
    path = Path(path)
    if path.is_dir():
        return path, verify_dir(path, public_key)
    if not path.is_file():
        raise PackageError(f"{path}: no such package")
    dest = Path(tempfile.mkdtemp(prefix="pkg-", dir=workdir)) / "package"
    safe_extract(path, dest)
    return dest, verify_dir(dest, public_key)
