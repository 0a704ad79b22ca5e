"""What a runtime module declares (one module per runtime under edge/package/runtimes/, collected in
`edge.package.runtimes.RUNTIMES`): its `Runtime`, which names the manifest key, the Python module whose
presence makes it available, the prefix of its variants' ids, its session options and its session."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Tuple, Type

import numpy as np

from common.models import StrictModel

if TYPE_CHECKING:
    from edge.package.manifest import Variant


class Session(Protocol):
    """One loaded variant: `run(batch)` returns the outputs named by the manifest, in that order, as float32
    numpy arrays."""

    variant: Variant

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


class LoadedSession:
    """The base of each runtime's session: keeps the variant and loads it with `_load` (the runtime's own
    code, given its options: the runtime's defaults unless a device config replaced them). `max_batch` is
    the most frames one `run` takes (set by `_load` when the graph fixes the batch), None for any number."""

    max_batch: Optional[int] = None

    def __init__(self, path: Path, variant: Variant, names: Tuple[str, ...], threads: int, options: RuntimeOptions):
        self.variant = variant
        self._load(path, variant, tuple(names), threads, options)

    def _load(self, path: Path, variant: Variant, names: Tuple[str, ...], threads: int, options) -> None:
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


class RuntimeOptions(StrictModel):
    """A runtime's session options. Each runtime's subclass narrows `runtime` to `Literal[KEY]` (so a config
    holding options of several runtimes can tell them apart) and defaults to what a device runs."""

    runtime: str


@dataclass(frozen=True)
class Runtime:
    key: str  # a manifest variant's `runtime`
    module: str  # the Python module whose presence makes it available (imported only by its session)
    variant_prefix: str  # its variants are named `<prefix>-<precision>` (onnx-int8, openvino-bf16)
    options: Type[RuntimeOptions]  # its session options; `options()` is what a device runs
    # (path of the variant's entry file, variant, output names, threads, options) -> a loaded session
    session: Callable[[Path, Variant, Tuple[str, ...], int, RuntimeOptions], Session]

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def open(
        self,
        path: Path,
        variant: Variant,
        output_names: Tuple[str, ...],
        threads: int,
        options: Optional[RuntimeOptions] = None,
    ) -> Session:
        options = self.options() if options is None else options
        if not isinstance(options, self.options):
            raise TypeError(f"{self.key} takes {self.options.__name__}, not {type(options).__name__}")
        return self.session(path, variant, output_names, threads, options)
