"""Fine-tuning: carry starting weights (found by training/init_source.py) into a network with a new
class list, optionally freeze the backbone."""

from __future__ import annotations

from typing import Optional

import mxnet as mx

from training.errors import ConfigError


def class_layers(net, task: str) -> list[str]:
    """Parameters whose rows are per class: the classifier output, or SSD's class predictors."""
    block = net.output if task == "classification" else net.class_predictors
    return list(block.collect_params().keys())


def transfer_weights(
    net, source: dict, class_params: tuple = (), row_map: Optional[list] = None
) -> tuple[int, list[str]]:
    """Copy every parameter whose name and shape match; return (copied, reinitialised names).

    `class_params` are per-class layers: with a `row_map` (for each target class, its row in the
    source, or -1) their rows are carried over by class name (like GluonCV's reset_class with
    reuse_weights) and new classes keep their fresh initialisation; without one they are left fresh.
    """
    copied, skipped = 0, []
    for name, param in net.collect_params().items():
        value = source.get(name)
        if name in class_params:
            if row_map is None or value is None or value.shape[1:] != param.shape[1:] or max(row_map) >= value.shape[0]:
                skipped.append(name)
                continue
            rows = param.data().asnumpy()
            kept = [i for i, j in enumerate(row_map) if j >= 0]
            rows[kept] = value[[row_map[i] for i in kept]]
            param.set_data(mx.nd.array(rows, dtype=param.dtype))
            copied += 1
            if len(kept) < len(row_map):
                skipped.append(name)  # partly new: its new classes start from scratch
            continue
        if isinstance(param, mx.gluon.Constant):
            # fixed by the architecture (SSD anchors: the layout and input size), never learned; a
            # source's anchors are its own layout's (another input size, or an older ssd_layout)
            continue
        if value is not None and tuple(value.shape) == tuple(param.shape):
            param.set_data(mx.nd.array(value, dtype=param.dtype))
            copied += 1
        else:
            skipped.append(name)
    if copied == 0:
        raise ConfigError(
            "init_from: no parameter of the source model matches this network (different network architecture?)"
        )
    return copied, skipped


def head_parameters(net, task: str) -> list[str]:
    """Names of the parameters that are not backbone: the classifier output / SSD heads and extras."""
    if task == "classification":
        return class_layers(net, task)
    base = set(net.features.collect_params().keys())
    return [n for n in net.collect_params().keys() if n not in base or "expand" in n]


def freeze_backbone(net, task: str) -> int:
    """Stop gradients for backbone parameters; returns how many were frozen."""
    head = set(head_parameters(net, task))
    frozen = 0
    for name, param in net.collect_params().items():
        if name not in head:
            param.grad_req = "null"
            frozen += 1
    return frozen


def named_arrays(net) -> dict:
    return {name: p.data().asnumpy() for name, p in net.collect_params().items()}
