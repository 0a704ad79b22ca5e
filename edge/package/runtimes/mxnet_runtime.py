"""MXNet (`mxnet`): variant `mxnet-fp32`, the hybridized Gluon graph the others are gated against; entry
`model-symbol.json`, its parameters the variant's `.params` file. Runs only where mxnet is installed (not
on a device's [edge] install)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Tuple

import numpy as np

from edge.package.runtimes.base import LoadedSession, Runtime, RuntimeOptions

if TYPE_CHECKING:
    from edge.package.manifest import Variant

KEY: Final = "mxnet"  # a manifest variant's `runtime`


class MxnetOptions(RuntimeOptions):
    runtime: Literal[KEY] = KEY
    input_name: str = "data"
    static_alloc: bool = True  # hybridize(static_alloc=..., static_shape=...)
    static_shape: bool = True


class MxnetSession(LoadedSession):
    def _load(self, path: Path, variant: Variant, names: Tuple[str, ...], threads: int, options: MxnetOptions) -> None:
        import mxnet as mx

        params = [f for f in variant.files if f.endswith(".params")]
        self._mx = mx
        self._net = mx.gluon.SymbolBlock.imports(
            str(path), [options.input_name], str(path.parent / Path(params[0]).name)
        )
        self._net.hybridize(static_alloc=options.static_alloc, static_shape=options.static_shape)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        out = self._net(self._mx.nd.array(batch))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o.asnumpy() for o in out]


RUNTIME = Runtime(key=KEY, module="mxnet", variant_prefix="mxnet", options=MxnetOptions, session=MxnetSession)
