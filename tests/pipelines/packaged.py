"""Build a real package from a trained model (optimize + package), for pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pipelines.config import PipelineConfig
from pipelines.optimize.stage import optimize
from pipelines.package import build_and_pack

QUICK = PipelineConfig(
    variants=("onnx-fp32", "onnx-int8", "openvino-fp32"), latency_runs=3, golden_samples=2, calibration_images=16
)


def package_model(
    model_dir: Path, data: Path, root: Path, sign_key: Optional[Path] = None, cfg: PipelineConfig = QUICK
):
    """(package folder, archive, manifest, sha256) of `model_dir`, evaluated on its test split."""
    from pipelines.evaluate_stage import evaluate_model

    root.mkdir(parents=True, exist_ok=True)
    evaluation = evaluate_model(model_dir, data, root / "evaluate")
    optimize(model_dir, data, root / "build", root / "report", cfg)
    folder = root / "package"
    manifest, sha = build_and_pack(root / "build", folder, root / "package.tar.gz", evaluation, sign_key)
    return folder, root / "package.tar.gz", manifest, sha
