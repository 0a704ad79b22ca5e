"""Atomic writes: a reader sees the old file or the new one, never half of one; a failed write leaves the
old file (or nothing) and no temporary file behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(path: PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary path beside `path` (same folder, so the rename is atomic); when the block
    ends without an exception, flush it to disk (`fsync`) and rename it onto `path`; otherwise remove it.

    The block may write the temporary path any way it likes (a JSON dump, `tarfile`, `np.save`, a download).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not created here (mkstemp would make it 0600): the writer creates it with the usual permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: nothing was written")
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_path(path, fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str, fsync: bool = True) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    return write_bytes(path, text.encode("utf-8"), fsync)


def write_json(path: PathLike, data: Any, indent: int = 2, fsync: bool = True, **dumps: Any) -> Path:
    """Write `data` as JSON (with a final newline) to `path` atomically; returns `path`."""
    return write_text(path, json.dumps(data, indent=indent, **dumps) + "\n", fsync)


@contextmanager
def atomic_dir(out: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `out`; when the block ends without an exception, it replaces
    `out` (an old `out` is moved aside first and removed after); otherwise it is removed and `out` is kept."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
