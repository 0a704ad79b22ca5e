"""The models section 1 measures: the demo classifier and detector, and a MobileNet 1.0 at 224.

The demo models are `models/classifier` and `models/detector` (after `make demo`); without them a
network of the same architecture gets random weights (speed does not depend on the weights) and
the notes say so. Variants come from the pipeline's own build folder (`build/<model>`, the files
the package ships, with their parity verdicts) when it was built from the model measured here;
otherwise `pipelines.optimize.variants.build_variants` builds them into the scratch folder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmarks.macs import count_macs
from benchmarks.machine import Settings
from edge.package.codec import preprocess
from edge.package.manifest import InputSpec, Variant
from pipelines.optimize.export import OUTPUT_NAMES, inference_block
from pipelines.optimize.variants import build_variants, report_variant

log = logging.getLogger(__name__)

# key -> (task, network, input size, name): the demo's recipe (params.yaml train_* sections)
DEMO = {
    "classifier": ("classification", "mobilenet0.25", 64, "shapes-classifier"),
    "detector": ("detection", "ssd_160_mobilenet0.25", 160, "shapes-detector"),
}
MOBILENET = ("classification", "mobilenet1.0", 224, "mobilenet1.0-224")
DEMO_CLASSES = ["circle", "square", "triangle", "star", "cross"]


@dataclass
class ModelUnderTest:
    key: str
    name: str
    task: str
    size: int
    block: Any  # the MXNet-native hybridized inference block (the reference)
    meta: dict
    build_dir: Path
    variants: list[Variant]
    weights: str  # where the weights came from
    variants_from: str  # the pipeline's build folder, or built here
    gate: dict[str, str] = field(default_factory=dict)  # variant id -> parity verdict
    macs: int = 0  # per image

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES[self.task]

    def input_spec(self) -> InputSpec:
        spec = self.meta["input"]
        return InputSpec(
            size=tuple(spec["size"]),
            colour_order=spec["colour_order"],
            mean=tuple(spec["mean"]),
            std=tuple(spec["std"]),
        )


def random_model_dir(out: Path, task: str, network: str, size: int, name: str, classes: list[str]) -> Path:
    """An exported model folder (as training writes it) holding random weights."""
    from training import networks
    from training.config import parse_config
    from training.export import export_model

    spec = networks.parse_network(network, task)
    net = networks.build_network(spec, classes)
    networks.initialize(net, size)
    net.hybridize()
    cfg = parse_config(
        {
            "task": task,
            "network": network,
            "data": out,
            "model_name": name,
            "input_size": size,
            "tracking": "none",
            "progress": False,
        }
    )
    return export_model(net, cfg, classes, size, {}, {"weights": "random"}, out)


def _pipeline_build(build: Path, meta: dict) -> Optional[dict]:
    """The pipeline's optimize report when `build` holds variants of exactly this model."""
    report_path = build / "optimize.json"
    if not report_path.is_file():
        return None
    report = json.loads(report_path.read_text())
    run_id = meta.get("lineage", {}).get("mlflow_run_id")
    if not run_id or report.get("source_model", {}).get("lineage", {}).get("mlflow_run_id") != run_id:
        return None
    return report


def _from_report(report: dict, build: Path) -> tuple[list[Variant], dict[str, str]]:
    variants, gate = [], {}
    for vid, row in report["variants"].items():
        if not all((build / f).is_file() for f in row["files"]):
            continue
        variants.append(report_variant(vid, row))
        gate[vid] = "passed" if row["passed"] else f"failed: {row['reason']}"
    return variants, gate


def _build_here(block, meta: dict, out: Path, calibration_images: int) -> list[Variant]:
    size = meta["input"]["size"][0]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(calibration_images)]
    spec = meta["input"]
    calibration = preprocess(
        frames,
        InputSpec(
            size=tuple(spec["size"]),
            colour_order=spec["colour_order"],
            mean=tuple(spec["mean"]),
            std=tuple(spec["std"]),
        ),
    )
    built = build_variants(block, meta, out, calibration)
    return [report_variant(b.id, b.row()) for b in built]


def prepare(
    settings: Settings, key: str, task: str, network: str, size: int, name: str, classes: list[str], demo: bool
) -> ModelUnderTest:
    model_dir = settings.root / "models" / key
    if demo and (model_dir / "model.json").is_file():
        weights = f"trained (models/{key})"
    else:
        model_dir = random_model_dir(settings.work / "models" / key, task, network, size, name, classes)
        weights = "random (no models/" + key + ": run `make demo` for the trained one)" if demo else "random"
    block, meta = inference_block(model_dir)
    report = _pipeline_build(settings.root / "build" / key, meta) if demo else None
    if report:
        build = settings.root / "build" / key
        variants, gate = _from_report(report, build)
        source = f"build/{key} (the pipeline's gated variants)"
    else:
        build = settings.work / "build" / key
        variants = _build_here(block, meta, build, settings.runs(32, 8))
        gate = {v.id: "not gated (built here, int8 calibrated on noise)" for v in variants}
        source = "built here by pipelines.optimize.variants.build_variants"
    onnx = build / next(v.entry for v in variants if v.id == "onnx-fp32")
    return ModelUnderTest(
        key, meta["name"], task, size, block, meta, build, variants, weights, source, gate, count_macs(onnx)
    )


def models_under_test(settings: Settings) -> list[ModelUnderTest]:
    found = [prepare(settings, key, *spec, classes=DEMO_CLASSES, demo=True) for key, spec in DEMO.items()]
    classes = [f"class{i}" for i in range(1000)]  # ImageNet's head: the FLOPs of the real network
    found.append(prepare(settings, "mobilenet1.0", *MOBILENET, classes=classes, demo=False))
    return found
