"""Network registry: Gluon/GluonCV classifiers and small-input SSD detectors, built by name."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import mxnet as mx

from training.errors import ConfigError, PretrainedWeightsMissing

CLASSIFIERS = (
    "mobilenet0.25",
    "mobilenet0.5",
    "mobilenet0.75",
    "mobilenet1.0",
    "mobilenetv2_0.25",
    "mobilenetv2_0.5",
    "mobilenetv2_0.75",
    "mobilenetv2_1.0",
    "resnet18_v1",
    "resnet18_v2",
    "resnet34_v1",
    "resnet50_v1",
    "cifar_resnet20_v1",
    "cifar_resnet20_v2",
    "cifar_resnet56_v1",
)
# Backbone -> the two internal outputs (stride 16, stride 32) the SSD heads read.
SSD_BACKBONES = {
    "mobilenet0.25": ["relu22_fwd", "relu26_fwd"],
    "mobilenet0.5": ["relu22_fwd", "relu26_fwd"],
    "mobilenet1.0": ["relu22_fwd", "relu26_fwd"],
    "resnet18_v1": ["stage3_activation1", "stage4_activation1"],
}
_SSD_NAME = re.compile(r"^ssd_(\d+)_(.+)$")


@dataclass(frozen=True)
class NetworkSpec:
    """What a network name means: task, GluonCV base model and input size."""

    name: str
    task: str
    base: str
    input_size: Optional[int] = None


def parse_network(name: str, task: str) -> NetworkSpec:
    """Look a network name up; an unknown name lists the valid ones (like GluonCV's get_model)."""
    if task == "classification":
        if name not in CLASSIFIERS:
            raise ConfigError(f"network '{name}' is not among the classification networks: {', '.join(CLASSIFIERS)}")
        return NetworkSpec(name, task, name)
    match = _SSD_NAME.match(name)
    if not match or match.group(2) not in SSD_BACKBONES:
        valid = ", ".join(f"ssd_<size>_{b}" for b in SSD_BACKBONES)
        raise ConfigError(f"network '{name}' is not among the detection networks: {valid} (e.g. ssd_160_mobilenet0.25)")
    return NetworkSpec(name, task, match.group(2), int(match.group(1)))


def default_cache() -> Path:
    return Path(mx.base.data_dir()) / "models"


def pretrained_file(model: str, cache: Optional[Path]) -> Path:
    """The cached GluonCV weights file for `model`; a clear error naming the folder when absent."""
    from gluoncv.model_zoo.model_store import short_hash

    root = Path(cache or default_cache()).expanduser()
    try:
        expected = root / f"{model}-{short_hash(model)}.params"
    except ValueError:
        raise PretrainedWeightsMissing(f"GluonCV publishes no pretrained weights for '{model}'") from None
    if not expected.is_file():
        raise PretrainedWeightsMissing(
            f"pretrained weights for '{model}' are not in the local cache {root} "
            f"(expected {expected.name}); nothing is downloaded here: copy the file there, "
            f"or train from scratch / fine-tune with --init-from"
        )
    return expected


def ssd_layout(size: int) -> dict:
    """Anchors for a small-input SSD: 2 backbone maps (strides 16, 32) + 2 extra layers.

    Anchor sides are 25%..100% of the input (layer k: sizes[k] and sqrt(sizes[k] * sizes[k+1]),
    plus ratios 2 and 1/2 of sizes[k]; Liu et al., "SSD", ECCV 2016, section 2.2). A small-input
    SSD sees a camera frame squeezed to `size` pixels, so the objects it is for fill a good part of
    it: on the demo's training split (`python -m benchmarks.anchors`; object sides 43-90 px at 160,
    5th-95th percentile, as the loader squeezes the stills) every object but 0.9% has an anchor at
    IoU >= 0.5 (4.9 on average); with square stills it was 0.5% (5.3), where sides of 15%..90% left
    13.8% with none, matched only by the bipartite step (one anchor each). Objects under a quarter of
    the input are better served by a larger input size."""
    maps = [math.ceil(size / 16), math.ceil(size / 32)]
    for _ in range(2):
        maps.append(math.ceil(maps[-1] / 2))
    fractions = [0.25, 0.4, 0.6, 0.8, 1.0]
    return {
        "sizes": [round(f * size, 2) for f in fractions],
        "ratios": [[1, 2, 0.5]] * 4,
        "steps": [size / m for m in maps],
        "num_filters": [128, 128],
    }


def build_network(
    spec: NetworkSpec, classes: list[str], pretrained: bool = False, cache: Optional[Path] = None
) -> mx.gluon.HybridBlock:
    """Build an uninitialised network for `classes`; with `pretrained` the base comes from the cache."""
    # A fresh name scope makes parameter names identical in every process and every build,
    # so weights transfer by name between runs (fine-tuning, resume, init-from).
    with mx.name.NameManager():
        return _build(spec, classes, pretrained, cache)


def _build(spec: NetworkSpec, classes: list[str], pretrained: bool, cache: Optional[Path]) -> mx.gluon.HybridBlock:
    import gluoncv

    if spec.task == "classification":
        return gluoncv.model_zoo.get_model(spec.base, classes=len(classes), pretrained=False)
    from gluoncv.model_zoo.ssd.ssd import SSD

    layout = ssd_layout(spec.input_size)
    root = str(Path(cache or default_cache()).expanduser())
    if pretrained:
        pretrained_file(spec.base, cache)
    return SSD(
        spec.base,
        spec.input_size,
        features=SSD_BACKBONES[spec.base],
        num_filters=layout["num_filters"],
        sizes=layout["sizes"],
        ratios=layout["ratios"],
        steps=layout["steps"],
        classes=classes,
        pretrained=pretrained,
        root=root,
    )


def initialize(net: mx.gluon.HybridBlock, input_size: int) -> None:
    """Initialise parameters not yet set: Xavier for weights, GluonCV defaults for the rest.
    Parameters that already hold data (a pretrained SSD backbone) are left as they are."""
    fresh = {name for name, param in net.collect_params().items() if param._data is None}
    net.initialize()
    with mx.autograd.train_mode():
        net(mx.nd.zeros((1, 3, input_size, input_size)))  # materialise deferred shapes
    for name, param in net.collect_params().items():
        if name not in fresh:
            continue
        if name.endswith("weight") and len(param.shape) >= 2:
            param.initialize(mx.init.Xavier(magnitude=2), force_reinit=True)
        # GluonCV's SSD feature expander is built from symbols, whose BatchNorm statistics would
        # otherwise get the global default initializer (uniform +-0.07: a negative variance).
        elif name.endswith(("moving_var", "running_var")):
            param.set_data(mx.nd.ones(param.shape))
        elif name.endswith(("moving_mean", "running_mean")):
            param.set_data(mx.nd.zeros(param.shape))


def load_pretrained_classifier(spec: NetworkSpec, cache: Optional[Path]) -> mx.gluon.HybridBlock:
    """The ImageNet classifier with its cached weights (1000 classes), for transfer into a new head."""
    import gluoncv

    path = pretrained_file(spec.base, cache)
    with mx.name.NameManager():
        net = gluoncv.model_zoo.get_model(spec.base, pretrained=False)
    net.load_parameters(str(path))
    return net
