"""`lensops optimize`: build every variant, gate each on parity with the MXNet FP32 reference
(validation split), measure batch-1 latency, and record golden samples.

Writes into the build folder: variants/<id>/..., samples/NNN.png + NNN.json, optimize.json.
Writes the report folder: variants.json (the full table), metrics.json, latency.csv (plot data).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import cv2
import mxnet as mx
import numpy as np

from common.cpu import INTERESTING_FLAGS, cpu_model
from common.errors import UserError
from common.files import atomic_dir, write_text
from edge.package.codec import decode, preprocess
from edge.package.manifest import InputSpec, OutputSpec
from edge.package.runtimes import cpu_features, default_threads, open_variant
from pipelines import evaluate
from pipelines.config import PipelineConfig
from pipelines.optimize.export import OUTPUT_NAMES, inference_block
from pipelines.optimize.variants import build_variants, report_variant

log = logging.getLogger(__name__)


def cpu_info() -> dict:
    """The CPU model, the flags of INTERESTING_FLAGS it has, and the threads a session uses."""
    flags = cpu_features()
    return {"model": cpu_model(), "flags": [f for f in INTERESTING_FLAGS if f in flags], "threads": default_threads()}


def specs(meta: dict, score_threshold: float, hold_threshold: Optional[float] = None) -> tuple[InputSpec, OutputSpec]:
    spec = meta["input"]
    input_spec = InputSpec(
        size=tuple(spec["size"]), colour_order=spec["colour_order"], mean=tuple(spec["mean"]), std=tuple(spec["std"])
    )
    task = meta["task"]
    output_spec = OutputSpec(
        type="probabilities" if task == "classification" else "scores_boxes",
        names=OUTPUT_NAMES[task],
        score_threshold=score_threshold,
        hold_threshold=hold_threshold if task == "detection" else None,
    )
    return input_spec, output_spec


def parity(
    task: str, ref_metrics: dict, metrics: dict, ref_preds: list, preds: list, cfg: PipelineConfig
) -> tuple[dict, str | None]:
    """Parity figures and the reason a variant fails the gate (None when it passes)."""
    if task == "classification":
        figures = {
            "top1_agreement": round(evaluate.top1_agreement(ref_preds, preds), 5),
            "accuracy_drop_pt": round((ref_metrics["accuracy"] - metrics["accuracy"]) * 100, 3),
            "accuracy": metrics["accuracy"],
        }
    else:
        figures = {"map_drop_pt": round((ref_metrics["map"] - metrics["map"]) * 100, 3), "map": metrics["map"]}
    failures = cfg.parity.failures(task, figures)
    return figures, "; ".join(failures) if failures else None


def _reference_run(block):
    def run(batch: np.ndarray) -> list[np.ndarray]:
        out = block(mx.nd.array(batch))
        return [o.asnumpy() for o in (out if isinstance(out, (list, tuple)) else [out])]

    return run


def optimize(model_dir: Path, data: Path, build_dir: Path, report_dir: Path, cfg: PipelineConfig) -> dict:
    """Build into a sibling folder and swap it in at the end: a failure leaves the last good build."""
    build_dir, report_dir = Path(build_dir), Path(report_dir)
    model_json = Path(model_dir) / "model.json"
    if not model_json.is_file():
        raise UserError(f"{model_json}: missing (is {model_dir} a trained model folder?)")
    with atomic_dir(build_dir) as work:
        report = _optimize(Path(model_dir), Path(data), work, cfg)
    _write(report_dir / "variants.json", json.dumps(report, indent=2))
    _write_plot_and_metrics(report, report_dir)
    return report


def _write(path: Path, text: str) -> None:
    write_text(path, text)


def _optimize(model_dir: Path, data: Path, build_dir: Path, cfg: PipelineConfig) -> dict:
    block, meta = inference_block(model_dir)
    task, labels = meta["task"], meta["classes"]
    input_spec, output_spec = specs(meta, cfg.score_threshold, cfg.hold_threshold)
    train = evaluate.load_split(data, task, "train")
    val = evaluate.load_split(data, task, "val")
    if train.classes != labels:
        raise UserError(f"{data}: classes {train.classes} differ from the model's {labels}")
    calibration = preprocess(train.sample(cfg.calibration_images), input_spec)
    built = build_variants(block, meta, build_dir, calibration, cfg.variants)

    one = preprocess(val.images(1), input_spec)
    reference = _reference_run(block)
    ref_preds = evaluate.predict(reference, val, input_spec, output_spec)
    ref_metrics = evaluate.score(val, ref_preds)
    ref_latency = evaluate.latency(reference, one, runs=cfg.latency_runs)
    log.info("reference (mxnet hybridized fp32): %s, %.3f ms", ref_metrics, ref_latency["median_ms"])

    sample_frames = val.sample(cfg.golden_samples, seed=1)
    samples = {
        "reference": [decode(reference(preprocess([f], input_spec)), labels, output_spec)[0] for f in sample_frames],
        "variants": {},
    }
    rows = {}
    for b in built:
        row = b.row()
        variant = report_variant(b.id, row)
        try:
            session = open_variant(build_dir, variant, output_spec.names)
            preds = evaluate.predict(session.run, val, input_spec, output_spec)
            metrics = evaluate.score(val, preds)
            row["parity"], reason = parity(task, ref_metrics, metrics, ref_preds, preds, cfg)
            row["latency"] = evaluate.latency(session.run, one, runs=cfg.latency_runs)
            row["latency"].update(batch=1, threads=default_threads())
            row["speedup_vs_mxnet"] = round(ref_latency["median_ms"] / row["latency"]["median_ms"], 3)
            samples["variants"][b.id] = [
                decode(session.run(preprocess([f], input_spec)), labels, output_spec)[0] for f in sample_frames
            ]
        except Exception as exc:  # a variant that cannot even run fails its gate, with the reason
            log.exception("variant %s failed", b.id)
            reason = f"{type(exc).__name__}: {exc}"
        missing = set(b.cpu_features) - cpu_features()
        if missing and reason is None:
            # Figures of the runtime's fallback, not of this precision: the golden outputs and parity
            # would not hold on a CPU that runs it natively, so it is not packaged from this machine.
            row["note"] = "measured with the runtime's fallback"
            reason = f"not measured natively: this CPU lacks {', '.join(sorted(missing))}"
        row["passed"], row["reason"] = reason is None, reason
        rows[b.id] = row
        log.info("variant %s: %s", b.id, "passed" if reason is None else f"FAILED: {reason}")

    sample_dir = build_dir / "samples"
    sample_dir.mkdir()
    for k, frame in enumerate(sample_frames):
        cv2.imwrite(str(sample_dir / f"{k:03d}.png"), frame)
        expected = {  # the package format: predictions as in the inference payload, {label, score[, box]}
            "reference": [p.to_dict() for p in samples["reference"][k]],
            "variants": {vid: [p.to_dict() for p in outs[k]] for vid, outs in samples["variants"].items()},
        }
        (sample_dir / f"{k:03d}.json").write_text(json.dumps(expected, indent=1))

    built_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = {
        "model": meta["name"],
        "task": task,
        "labels": labels,
        "cpu": cpu_info(),
        "built_at": built_at,
        "input": input_spec.model_dump(mode="json"),
        "output": output_spec.model_dump(mode="json"),
        "reference": {
            "variant": "mxnet-native-fp32 (hybridized, oneDNN)",
            "metrics": ref_metrics,
            "latency": ref_latency,
        },
        "gate": cfg.parity.model_dump(),
        "variants": rows,
        "source_model": {
            "metrics": meta.get("metrics", {}),
            "lineage": meta.get("lineage", {}),
            "params": meta.get("params", {}),
        },
    }
    (build_dir / "optimize.json").write_text(json.dumps(report, indent=2))
    return report


def _write_plot_and_metrics(report: dict, report_dir: Path) -> None:
    key = "accuracy" if report["task"] == "classification" else "map"
    lines = [f"variant,latency_ms,{key},passed"]
    lines.append(
        f"mxnet-native,{report['reference']['latency']['median_ms']},{report['reference']['metrics'][key]},True"
    )
    metrics = {
        f"reference_{key}": report["reference"]["metrics"][key],
        "reference_latency_ms": report["reference"]["latency"]["median_ms"],
    }
    passed = {vid: row for vid, row in report["variants"].items() if row["passed"]}
    for vid, row in report["variants"].items():
        if "latency" in row:
            lines.append(f"{vid},{row['latency']['median_ms']},{row['parity'][key]},{row['passed']}")
            metrics[f"{vid}_latency_ms"] = row["latency"]["median_ms"]
    if passed:
        best = min(passed, key=lambda v: passed[v]["latency"]["median_ms"])
        metrics["best_speedup_vs_mxnet"] = passed[best]["speedup_vs_mxnet"]
    metrics["variants_passed"] = len(passed)
    _write(report_dir / "latency.csv", "\n".join(lines) + "\n")
    _write(report_dir / "metrics.json", json.dumps(metrics, indent=2))
