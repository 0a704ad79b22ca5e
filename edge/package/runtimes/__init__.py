"""Open a package variant with its runtime behind one `run(batch)`.

Runtimes are plugins: each is one module here (`onnx_runtime`, `openvino_runtime`, `mxnet_runtime`) that
declares its `Runtime` (base.py: manifest key, Python module, variant id prefix, session options, session),
and `RUNTIMES` below collects them. A manifest's variant names its runtime by key; the manifest accepts
only the keys collected here. To add a runtime: a module like the others, one line in `_COLLECTED`, and its
case in tests/edge/package/test_runtimes.py (docs/architecture.md, "Backends are plugins", "Runtimes").

Every session returns the outputs named by the manifest, in that order, as float32 numpy arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Union

from pydantic import Field
from typing_extensions import Annotated  # typing.Annotated is 3.9+ (the SageMaker pipeline steps run 3.8)

from common.cpu import cpu_features
from edge.package.errors import PackageError
from edge.package.runtimes import mxnet_runtime, onnx_runtime, openvino_runtime
from edge.package.runtimes.base import Runtime, RuntimeOptions, Session
from edge.package.runtimes.openvino_runtime import import_openvino

if TYPE_CHECKING:
    from edge.package.manifest import Manifest, Variant

__all__ = [
    "RUNTIMES",
    "Runtime",
    "RuntimeOptions",
    "RuntimeOptionsConfig",
    "Session",
    "choose_variant",
    "cpu_features",
    "default_threads",
    "get_runtime",
    "import_openvino",
    "open_session",
    "open_variant",
    "runtime_available",
    "supported",
    "unknown_runtime",
]

_COLLECTED = (
    onnx_runtime.RUNTIME,
    openvino_runtime.RUNTIME,
    mxnet_runtime.RUNTIME,
)
RUNTIMES: Dict[str, Runtime] = {runtime.key: runtime for runtime in _COLLECTED}
# one runtime's session options, tagged by `runtime` (the device config's `runtimes` section)
RuntimeOptionsConfig = Annotated[
    Union[tuple(runtime.options for runtime in _COLLECTED)], Field(discriminator="runtime")
]


def unknown_runtime(key: str) -> str:
    """The one message for a runtime key that is not collected here, listing the valid ones."""
    return f"unknown runtime {key!r} (valid: {', '.join(sorted(RUNTIMES))})"


def get_runtime(key: str) -> Runtime:
    """The runtime collected under `key`; PackageError listing the valid keys for any other."""
    try:
        return RUNTIMES[key]
    except KeyError:
        raise PackageError(unknown_runtime(key)) from None


def runtime_available(runtime: str) -> bool:
    return get_runtime(runtime).available()


def supported(variant: Variant, features: frozenset[str] | None = None) -> Optional[str]:
    """None when this machine can run `variant`, else the reason it cannot."""
    if not runtime_available(variant.runtime):
        return f"{variant.runtime} is not installed"
    missing = set(variant.cpu_features) - (cpu_features() if features is None else features)
    if missing:
        return f"CPU lacks {', '.join(sorted(missing))}"
    return None


def choose_variant(manifest: Manifest, prefer: Optional[str] = None, features: frozenset[str] | None = None) -> Variant:
    """`prefer` if given and runnable, else the runnable variant with the lowest measured latency."""
    if prefer:
        variant = manifest.variant(prefer)
        reason = supported(variant, features)
        if reason:
            raise PackageError(f"variant '{prefer}' cannot run here: {reason}")
        return variant
    runnable = [v for v in manifest.variants if supported(v, features) is None]
    if not runnable:
        reasons = "; ".join(f"{v.id}: {supported(v, features)}" for v in manifest.variants)
        raise PackageError(f"no variant of {manifest.name} {manifest.version} can run here ({reasons})")
    return min(runnable, key=lambda v: (v.latency.median_ms if v.latency else float("inf"), v.id))


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def open_session(
    package_dir: Path,
    manifest: Manifest,
    variant: Variant,
    threads: Optional[int] = None,
    options: Optional[Mapping[str, RuntimeOptions]] = None,
) -> Session:
    """A session on a package's variant; `options` maps a runtime key to the options that replace its
    defaults (the device config's `runtimes`); a runtime it does not name runs with its defaults."""
    return open_variant(package_dir, variant, manifest.output.names, threads, (options or {}).get(variant.runtime))


def open_variant(
    package_dir: Path,
    variant: Variant,
    output_names: tuple[str, ...],
    threads: Optional[int] = None,
    options: Optional[RuntimeOptions] = None,
) -> Session:
    """A session on one variant's files under `package_dir` (a package or a build folder), with `options`
    (its runtime's options class; None: the runtime's defaults)."""
    # CPU features are the chooser's business (choose_variant): the pipeline measures every variant.
    runtime = get_runtime(variant.runtime)
    if not runtime.available():
        raise PackageError(f"variant '{variant.id}' cannot run here: {variant.runtime} is not installed")
    path = Path(package_dir) / variant.entry
    try:
        return runtime.open(path, variant, tuple(output_names), threads or default_threads(), options)
    except PackageError:
        raise
    except Exception as exc:  # runtimes raise their own types; name the file
        raise PackageError(f"{path}: {variant.runtime} could not load it ({type(exc).__name__}: {exc})") from None
