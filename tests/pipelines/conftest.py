"""Pipeline fixtures: colour data and three tiny classifiers (weak, strong, deliberately worse)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import json

from tests.pipelines.models import colour_data, shifted_copy, train_colour_model


@dataclass(frozen=True)
class ColourModels:
    data: Path
    weak: Path  # strong with its class rows rotated by one: worse by construction
    strong: Path  # trained; right on more than half the test images (checked)
    worse: Path  # strong with its class rows rotated by two: worse by construction


@pytest.fixture(scope="session")
def colour_models(tmp_path_factory) -> ColourModels:
    root = tmp_path_factory.mktemp("colour")
    data = colour_data(root / "data")
    strong = train_colour_model(data, root / "strong", epochs=8)
    accuracy = json.loads((strong / "model.json").read_text())["metrics"]["test_accuracy"]
    # a setup check, not a quality bar: the rotated copies are worse than the trained model whenever the
    # trained one is right more than half the time (three flat colours: a CIFAR ResNet-20 reaches 1.0)
    assert accuracy > 0.5, f"setup: the trained colour model reached test accuracy {accuracy:.3f} (needs > 0.5)"
    return ColourModels(
        data=data,
        weak=shifted_copy(strong, root / "weak"),
        strong=strong,
        worse=shifted_copy(strong, root / "worse", shift=2),
    )
