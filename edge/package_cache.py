"""The device's package cache: `<root>/<model>/<version>/` folders and a `current.json` pointer.

`current.json` names the last-known-good version (what to boot from when the registry is
unreachable), the one before it (where a rollback goes), the versions marked bad and every
kept folder with the archive sha256 it was verified against. It is replaced atomically, so a
power cut leaves either the old pointer or the new one. Disk stays bounded: current +
previous + `keep` other versions. One thread (the model manager's) owns a cache.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common.files import write_json
from edge.package import Manifest, PackageError, safe_extract, verify_dir

log = logging.getLogger(__name__)

POINTER = "current.json"
INCOMING = ".incoming"


@dataclass(frozen=True)
class CachedPackage:
    version: str
    sha256: str  # of the archive the folder was unpacked from


def path_part(value: str, what: str) -> str:
    """`value` as one folder name; ValueError for names that would escape the cache."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ValueError(f"{what} {value!r} cannot be used as a folder name")
    return value


class PackageCache:
    def __init__(self, root: Path, model: str, keep: int = 1):
        self.folder = Path(root) / path_part(model, "model name")
        self.keep = keep
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.folder / INCOMING, ignore_errors=True)  # half-done downloads of an earlier run
        self.current: Optional[CachedPackage] = None
        self.previous: Optional[CachedPackage] = None
        self.bad: dict[str, str] = {}  # version -> reason
        self.packages: list[CachedPackage] = []  # oldest first
        self._read()

    # -- the pointer --------------------------------------------------------------------------

    def _read(self) -> None:
        path = self.folder / POINTER
        if not path.is_file():
            return
        try:
            raw = json.loads(path.read_text())
            self.current = _entry(raw.get("current"))
            self.previous = _entry(raw.get("previous"))
            self.bad = {str(k): str(v) for k, v in raw.get("bad", {}).items()}
            self.packages = [e for e in (_entry(p) for p in raw.get("packages", [])) if e is not None]
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("%s: unreadable (%s); starting with an empty cache", path, exc)
            self.current = self.previous = None
            self.bad, self.packages = {}, []

    def save(self) -> None:
        """Write `current.json` atomically (temp file, fsync, rename)."""
        data = {
            "current": _raw(self.current),
            "previous": _raw(self.previous),
            "bad": self.bad,
            "packages": [_raw(p) for p in self.packages],
            "updated": time.time(),
        }
        write_json(self.folder / POINTER, data)

    # -- package folders ----------------------------------------------------------------------

    def package_dir(self, version: str) -> Path:
        return self.folder / path_part(version, "version")

    def incoming(self, version: str) -> Path:
        """Where to download the archive of `version` (removed by `unpack`)."""
        (self.folder / INCOMING).mkdir(exist_ok=True)
        return self.folder / INCOMING / f"{path_part(version, 'version')}.tar.gz"

    def find(self, version: str, sha256: str) -> Optional[CachedPackage]:
        for entry in self.packages:
            if entry.version == version and entry.sha256 == sha256 and self.package_dir(version).is_dir():
                return entry
        return None

    def unpack(self, archive: Path, entry: CachedPackage, public_key: Optional[Path] = None) -> tuple[Path, Manifest]:
        """Safely extract and verify `archive` into the folder of `entry.version`; nothing kept on failure."""
        dest = self.package_dir(entry.version)
        if any(p.version == entry.version for p in (self.current, self.previous) if p):
            raise PackageError(
                f"version {entry.version} is already installed with another archive "
                f"(sha256 {entry.sha256[:16]}...); refusing to replace a package in use"
            )
        shutil.rmtree(dest, ignore_errors=True)
        self.packages = [p for p in self.packages if p.version != entry.version]
        try:
            safe_extract(archive, dest)
            manifest = verify_dir(dest, public_key)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        finally:
            Path(archive).unlink(missing_ok=True)
        self.packages.append(entry)
        self.save()
        return dest, manifest

    def record(self, current: Optional[CachedPackage], bad: dict[str, str]) -> None:
        """Note what serves now (the package it replaced becomes previous unless bad) and prune."""
        current = current or self.current
        if current == self.current and bad == self.bad:
            return
        if current != self.current:
            good = self.current is not None and self.current.version not in bad
            self.previous = self.current if good else None
            self.current = current
        self.bad = dict(bad)
        self.prune()

    def forget(self, entry: CachedPackage) -> None:
        """A cached package that no longer loads: neither current nor previous any more, and removed."""
        self.current = None if self.current == entry else self.current
        self.previous = None if self.previous == entry else self.previous
        self.discard(entry.version)

    def discard(self, version: str) -> None:
        """Remove a package that failed (unless it is current or previous)."""
        if any(p.version == version for p in (self.current, self.previous) if p):
            return
        shutil.rmtree(self.package_dir(version), ignore_errors=True)
        self.packages = [p for p in self.packages if p.version != version]
        self.save()

    def prune(self) -> None:
        """Keep current, previous and the `keep` newest other packages; remove every other folder."""
        pinned = [p for p in (self.current, self.previous) if p]
        others = [p for p in self.packages if p not in pinned and p.version not in self.bad]
        kept = pinned + (others[-self.keep :] if self.keep > 0 else [])
        self.packages = [p for p in self.packages if p in kept]
        names = {p.version for p in self.packages}
        for path in self.folder.iterdir():
            if path.is_dir() and not path.name.startswith(".") and path.name not in names:
                log.info("%s: removing cached package %s", self.folder.name, path.name)
                shutil.rmtree(path, ignore_errors=True)
        self.save()


def _entry(raw) -> Optional[CachedPackage]:
    if not raw:
        return None
    return CachedPackage(str(raw["version"]), str(raw["sha256"]))


def _raw(entry: Optional[CachedPackage]) -> Optional[dict]:
    return None if entry is None else {"version": entry.version, "sha256": entry.sha256}
