"""Tiny models for pipeline tests: flat-colour images a CIFAR ResNet-20 separates in a few epochs.

Which model is better must not depend on how a training run turned out (a bit-identical run on one CPU
is not on another: a 3-epoch MobileNet was at chance on one machine and not on another). So one model is
trained (`strong`, checked to separate the colours) and the others are derived from it with a known
effect: `shifted_copy` (its class rows rotated by one or two places: it predicts class k + shift wherever
the trained model predicts k, so it is right at most where the trained one is wrong).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np

COLOURS = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 40)}


def colour_data(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                noise = rng.normal(0, 40, (32, 32, 3))
                cv2.imwrite(
                    str(folder / f"{i}.png"), np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)
                )
    return root


def train_colour_model(
    data: Path, out: Path, epochs: int, name: str = "colours", network: str = "cifar_resnet20_v1"
) -> Path:
    from tests.training.helpers import quick_config
    from training.runner import train
    from training.sagemaker_env import RunEnvironment

    cfg = quick_config(data, out, epochs=epochs, optimizer="sgd", lr=0.1, model_name=name, network=network)
    return train(cfg, RunEnvironment(), out).model_dir


def shifted_copy(model_dir: Path, out: Path, shift: int = 1) -> Path:
    """A worse model by construction: the output layer's class rows rotated by `shift`, so it predicts
    class (k + shift) mod n wherever `model_dir` predicts k; its accuracy is at most 1 - the source's."""
    shutil.copytree(model_dir, out)
    params = mx.nd.load(str(out / "model-0000.params"))
    changed = [key for key in params if "dense" in key and key.endswith(("weight", "bias"))]
    assert changed, f"no output layer among the parameters {sorted(params)}"
    for key in changed:
        params[key] = mx.nd.array(np.roll(params[key].asnumpy(), shift, axis=0))
    mx.nd.save(str(out / "model-0000.params"), params)
    return out
