"""The model package contract (DESIGN.md): manifest, verification, signatures, codec, runtimes, golden samples.

The pipeline writes packages with these helpers and the device reads them with the same code.
"""

from edge.package.archive import open_package, pack, safe_extract, sha256_file, verify_dir
from edge.package.manifest import (
    MANIFEST,
    SCHEMA,
    SIGNATURE,
    InputSpec,
    Latency,
    Manifest,
    OutputSpec,
    PackageError,
    Sample,
    Variant,
    parse_manifest,
    read_manifest,
)

__all__ = [
    "MANIFEST",
    "SCHEMA",
    "SIGNATURE",
    "InputSpec",
    "Latency",
    "Manifest",
    "OutputSpec",
    "PackageError",
    "Sample",
    "Variant",
    "open_package",
    "pack",
    "parse_manifest",
    "read_manifest",
    "safe_extract",
    "sha256_file",
    "verify_dir",
]
