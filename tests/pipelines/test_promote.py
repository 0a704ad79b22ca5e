"""Promotion: champion vs challenger on the same held-out split; pure decision; report; alias; fleet notice."""

from __future__ import annotations

import json

import pytest

from pipelines.config import ParityGate, PromoteConfig
from pipelines.promote import Contender, decide, promote
from edge.registry import MlflowRegistryWriter
from tests.pipelines.packaged import package_model

GATE = ParityGate()
CFG = PromoteConfig(latency_budget_ms=50)


def _contender(version: str, metric: float, latency: float = 1.0, agreement: float = 1.0) -> Contender:
    return Contender(
        version=version,
        metric=metric,
        metrics={"accuracy": metric},
        variant="onnx-fp32",
        parity={"onnx-fp32": {"top1_agreement": agreement, "accuracy_drop_pt": 0.0}},
        best_latency_ms=latency,
    )


@pytest.mark.parametrize(
    "challenger, champion, promoted, why",
    [
        (_contender("2", 0.90), None, True, "becomes the first"),
        (_contender("2", 0.90), _contender("1", 0.80), True, "gain +0.1000"),
        (_contender("2", 0.70), _contender("1", 0.80), False, "not better"),
        (_contender("2", 0.80), _contender("1", 0.80), False, "not better"),
        (_contender("2", 0.95, latency=80), _contender("1", 0.80), False, "exceeds the budget"),
        (_contender("2", 0.95, agreement=0.9), _contender("1", 0.80), False, "parity gate failed"),
        (_contender("1", 0.90), _contender("1", 0.90), True, "already holds"),
    ],
)
def test_decision_is_a_pure_function_of_metrics_and_thresholds(challenger, champion, promoted, why):
    decision = decide(challenger, champion, "classification", "accuracy", CFG, GATE)
    assert decision.promote is promoted
    assert any(why in reason for reason in decision.reasons), decision.reasons


def test_margin_is_respected():
    cfg = PromoteConfig(min_improvement=0.05, latency_budget_ms=50)
    assert not decide(_contender("2", 0.84), _contender("1", 0.80), "classification", "accuracy", cfg, GATE).promote
    assert decide(_contender("2", 0.86), _contender("1", 0.80), "classification", "accuracy", cfg, GATE).promote


@pytest.mark.slow
def test_better_model_is_promoted_and_worse_one_is_not(colour_models, tmp_path):
    # given the three colour models packaged: weak and worse are the strong one with its class rows rotated
    writer = MlflowRegistryWriter(f"sqlite:///{tmp_path / 'mlflow.db'}")
    packages = {
        name: package_model(getattr(colour_models, name), colour_models.data, tmp_path / name)
        for name in ("weak", "strong", "worse")
    }

    def register_and_promote(name: str, dry_run: bool = False) -> dict:
        folder, archive, manifest, sha = packages[name]
        writer.register(archive, manifest, sha, {})
        return promote(
            writer,
            manifest.name,
            colour_models.data,
            "classification",
            CFG,
            GATE,
            tmp_path / "reports" / name,
            dry_run=dry_run,
        )

    # when the weak one is registered first it becomes production (nothing to beat)
    first = register_and_promote("weak")
    assert first["action"] == "moved" and writer.alias_version("colours", "production") == "1"
    # a better model is registered and promoted
    better = register_and_promote("strong")
    assert better["challenger"]["metric"] > better["champion"]["metric"], better["reasons"]
    assert better["action"] == "moved" and writer.alias_version("colours", "production") == "2"
    # running promote again changes nothing (idempotent)
    again = promote(writer, "colours", colour_models.data, "classification", CFG, GATE, tmp_path / "again")
    assert again["action"] == "none" and writer.alias_version("colours", "production") == "2"
    # a deliberately worse model is registered (candidate) but not promoted
    worse = register_and_promote("worse")
    assert writer.alias_version("colours", "candidate") == "3"
    assert not worse["promote"] and worse["action"] == "none"
    assert writer.alias_version("colours", "production") == "2"
    # the report says why, in JSON and Markdown
    report = json.loads((tmp_path / "reports" / "worse" / "promotion.json").read_text())
    assert any("not better" in r for r in report["reasons"])
    assert "keep the champion" in (tmp_path / "reports" / "worse" / "promotion.md").read_text()


@pytest.mark.slow
def test_dry_run_moves_nothing(colour_models, tmp_path):
    writer = MlflowRegistryWriter(f"sqlite:///{tmp_path / 'mlflow.db'}")
    folder, archive, manifest, sha = package_model(colour_models.strong, colour_models.data, tmp_path / "p")
    writer.register(archive, manifest, sha, {})
    report = promote(
        writer, manifest.name, colour_models.data, "classification", CFG, GATE, tmp_path / "r", dry_run=True
    )
    assert report["promote"] and report["action"] == "would move"
    assert writer.alias_version(manifest.name, "production") is None
