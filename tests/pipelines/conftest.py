"""Pipeline fixtures: colour data and three tiny classifiers (weak, strong, deliberately worse)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pipelines.models import colour_data, damaged_copy, train_colour_model


@dataclass(frozen=True)
class ColourModels:
    data: Path
    weak: Path  # 1 epoch: chance
    strong: Path  # 3 epochs: the changed param that trains a better model
    worse: Path  # strong with its output layer replaced by noise


@pytest.fixture(scope="session")
def colour_models(tmp_path_factory) -> ColourModels:
    root = tmp_path_factory.mktemp("colour")
    data = colour_data(root / "data")
    strong = train_colour_model(data, root / "strong", epochs=3)
    return ColourModels(data=data, weak=train_colour_model(data, root / "weak", epochs=1), strong=strong,
                        worse=damaged_copy(strong, root / "worse", seed=5))
