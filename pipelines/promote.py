"""`lensops promote`: champion vs challenger on the same held-out split; move the fleet alias or not.

The decision is a pure function (`decide`) of measured metrics, parity figures, latency and the
thresholds in params.yaml; the report (JSON + Markdown) says why. Promotion is idempotent (a
challenger that already holds the alias changes nothing) and `--dry-run` decides without moving.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from common.errors import UserError
from common.files import write_json, write_text
from common.models import StrictModel
from edge.package.runtimes import choose_variant, open_session
from edge.registry import RegistryWriter, Resolved, download_package
from pipelines import evaluate
from pipelines.config import ParityGate, PromoteConfig

log = logging.getLogger(__name__)


class Contender(StrictModel):
    """One registered version as measured for the decision (and as written in the report)."""

    version: str
    metric: float  # the promotion metric on the held-out split, measured now
    metrics: Dict[str, float]
    variant: str  # which variant was scored
    parity: Dict[str, Dict[str, float]]  # per packaged variant
    best_latency_ms: float  # inf when no variant was timed (written as Infinity, as json.dumps does)
    sha256: str = ""
    uri: str = ""


class PromotionReport(StrictModel):
    """`promotion.json`: the decision, its reasons and the figures it was made on."""

    model: str
    alias: str
    metric: str
    split: str  # <data>:<split name>
    decided_at: str  # UTC, ISO 8601 to the second
    dry_run: bool
    promote: bool
    action: Literal["none", "would move", "moved"]
    reasons: List[str]
    challenger: Contender
    champion: Optional[Contender]
    thresholds: Dict[str, Dict[str, Any]]  # promote: PromoteConfig, parity: ParityGate
    production_version: Optional[str]


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def _parity_failures(contender: Contender, task: str, gate: ParityGate) -> list[str]:
    return [
        f"{vid}: {failure}" for vid, figures in contender.parity.items() for failure in gate.failures(task, figures)
    ]


def decide(
    challenger: Contender, champion: Optional[Contender], task: str, metric: str, cfg: PromoteConfig, gate: ParityGate
) -> Decision:
    """Promote iff every packaged variant passed parity, the best latency fits the budget, and the
    challenger beats the champion (if any) by more than `min_improvement` on the same split."""
    reasons, ok = [], True
    failures = _parity_failures(challenger, task, gate)
    if failures:
        ok = False
        reasons += [f"parity gate failed: {f}" for f in failures]
    else:
        reasons.append(f"all {len(challenger.parity)} packaged variants pass the parity gate")
    if challenger.best_latency_ms > cfg.latency_budget_ms:
        ok = False
        reasons.append(
            f"best variant latency {challenger.best_latency_ms:.2f} ms exceeds the budget {cfg.latency_budget_ms} ms"
        )
    else:
        reasons.append(
            f"best variant latency {challenger.best_latency_ms:.2f} ms fits the budget {cfg.latency_budget_ms} ms"
        )
    if champion is None:
        reasons.append(f"no current {cfg.alias} version: challenger {metric} {challenger.metric:.4f} becomes the first")
    elif champion.version == challenger.version:
        reasons.append(f"version {challenger.version} already holds {cfg.alias}")
    else:
        gain = challenger.metric - champion.metric
        text = (
            f"challenger v{challenger.version} {metric} {challenger.metric:.4f} vs champion v{champion.version} "
            f"{champion.metric:.4f} (gain {gain:+.4f}, required > {cfg.min_improvement})"
        )
        if gain > cfg.min_improvement:
            reasons.append(text)
        else:
            ok = False
            reasons.append(text + ": not better")
    return Decision(ok, reasons)


SCORED_VARIANTS = ("onnx-fp32", "openvino-fp32", "mxnet-fp32")  # the same fp32 graph for every contender


def measure(
    registry: RegistryWriter,
    resolved: Resolved,
    split: evaluate.Split,
    metric: str,
    workdir: Path,
    public_key: Optional[Path] = None,
) -> Contender:
    """Download, verify and score one registered package on `split`."""
    package_dir, manifest = download_package(
        registry, resolved, workdir / f"v{resolved.version}.tar.gz", workdir, public_key
    )
    if list(manifest.labels) != split.classes:
        raise UserError(
            f"{resolved.model} v{resolved.version}: labels {list(manifest.labels)} differ from the "
            f"evaluation data's {split.classes}"
        )
    ids = [v.id for v in manifest.variants]
    # Score with an fp32 variant, the same kind for champion and challenger (not whatever is fastest here).
    scored = next((vid for vid in SCORED_VARIANTS if vid in ids), None)
    variant = manifest.variant(scored) if scored else choose_variant(manifest)
    session = open_session(package_dir, manifest, variant)
    predictions = evaluate.predict(session.run, split, manifest.input, manifest.output)
    metrics = evaluate.score(split, predictions)
    if metric not in metrics:
        raise UserError(
            f"pipeline.promote.metric: '{metric}' is not measured for {manifest.task} (measured: {', '.join(metrics)})"
        )
    latencies = [v.latency.median_ms for v in manifest.variants if v.latency]
    return Contender(
        version=resolved.version,
        metric=metrics[metric],
        metrics=metrics,
        variant=variant.id,
        parity={v.id: dict(v.parity) for v in manifest.variants},
        best_latency_ms=min(latencies) if latencies else float("inf"),
        sha256=resolved.sha256,
        uri=resolved.uri,
    )


def promote(
    registry: RegistryWriter,
    model: str,
    data: Path,
    task: str,
    cfg: PromoteConfig,
    gate: ParityGate,
    report_dir: Path,
    dry_run: bool = False,
    candidate_alias: str = "candidate",
    split_name: str = "test",
) -> dict:
    metric = cfg.metric or ("accuracy" if task == "classification" else "map")
    split = evaluate.load_split(data, task, split_name)
    challenger_ref = registry.resolve(model, candidate_alias)
    champion_version = registry.alias_version(model, cfg.alias)
    with tempfile.TemporaryDirectory(prefix="promote-") as tmp:
        challenger = measure(registry, challenger_ref, split, metric, Path(tmp))
        champion = None
        if champion_version is not None:
            champion_ref = registry.resolve(model, cfg.alias)
            champion = (
                challenger
                if champion_ref.version == challenger.version
                else measure(registry, champion_ref, split, metric, Path(tmp))
            )
    decision = decide(challenger, champion, task, metric, cfg, gate)
    already = champion is not None and champion.version == challenger.version
    action = "none"
    if decision.promote and not already:
        action = "would move" if dry_run else "moved"
        if not dry_run:
            registry.set_alias(model, cfg.alias, challenger.version)
    report = PromotionReport(
        model=model,
        alias=cfg.alias,
        metric=metric,
        split=f"{data}:{split_name}",
        decided_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dry_run=dry_run,
        promote=decision.promote,
        action=action,
        reasons=decision.reasons,
        challenger=challenger,
        champion=champion,
        thresholds={"promote": cfg.model_dump(mode="json"), "parity": gate.model_dump()},
        production_version=challenger.version if action == "moved" or already else champion_version,
    )
    data = report.model_dump()
    write_report(data, Path(report_dir))
    return data


def write_report(report: Dict[str, Any], report_dir: Path) -> None:
    """promotion.json (`PromotionReport.model_dump()`) and promotion.md under `report_dir`, each atomically."""
    write_json(report_dir / "promotion.json", report)
    c, ch = report["challenger"], report["champion"]
    lines = [
        f"# Promotion of {report['model']} to `{report['alias']}`",
        "",
        f"**Decision: {'promote' if report['promote'] else 'keep the champion'}** (action: {report['action']}"
        f"{', dry run' if report['dry_run'] else ''}), {report['decided_at']}",
        "",
        f"Held-out data: `{report['split']}`, metric `{report['metric']}`.",
        "",
        "| | version | " + report["metric"] + " | scored variant | best latency (ms) |",
        "|---|---|---|---|---|",
        f"| challenger | {c['version']} | {c['metric']:.4f} | {c['variant']} | {c['best_latency_ms']:.3f} |",
    ]
    if ch:
        lines.append(
            f"| champion | {ch['version']} | {ch['metric']:.4f} | {ch['variant']} | {ch['best_latency_ms']:.3f} |"
        )
    lines += ["", "## Why", ""] + [f"- {r}" for r in report["reasons"]] + [""]
    write_text(report_dir / "promotion.md", "\n".join(lines))
