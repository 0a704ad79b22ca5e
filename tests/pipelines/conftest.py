"""Pipeline fixtures: colour data and three tiny classifiers (weak, strong, deliberately worse)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import json

from tests.pipelines.models import colour_data, damaged_copy, shifted_copy, train_colour_model


@dataclass(frozen=True)
class ColourModels:
    data: Path
    weak: Path  # strong with its class rows rotated: worse by construction
    strong: Path  # trained; separates the colours (checked)
    worse: Path  # strong with its output layer replaced by noise


@pytest.fixture(scope="session")
def colour_models(tmp_path_factory) -> ColourModels:
    root = tmp_path_factory.mktemp("colour")
    data = colour_data(root / "data")
    strong = train_colour_model(data, root / "strong", epochs=8)
    accuracy = json.loads((strong / "model.json").read_text())["metrics"]["test_accuracy"]
    assert accuracy >= 0.9, f"the strong colour model reached test accuracy {accuracy:.3f}: training is broken"
    return ColourModels(data=data, weak=shifted_copy(strong, root / "weak"), strong=strong,
                        worse=damaged_copy(strong, root / "worse", seed=5))
