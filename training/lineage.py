"""Lineage of a run: the data's content hash (DVC's directory-hash scheme) and the git commit."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Optional


def file_hash(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (Python 3.10 has no hashlib.file_digest)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_hash(root: Path) -> str:
    """md5 over the sorted (relpath, md5) list with a `.dir` suffix, in the style of DVC directory hashes."""
    root = Path(root)
    if root.is_file():
        return file_hash(root)
    entries = [
        {"md5": file_hash(p), "relpath": p.relative_to(root).as_posix()} for p in sorted(root.rglob("*")) if p.is_file()
    ]
    blob = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(blob).hexdigest() + ".dir"


def git_commit(cwd: Optional[Path] = None) -> Optional[str]:
    """The current commit (with `-dirty` when the tree has changes), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None
