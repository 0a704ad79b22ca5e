"""What the SageMaker Pipeline's processing steps run: the project's own commands, nothing copied.

Each step is `python lensops_pipeline_step.py <step> ...` in a processing job (FrameworkProcessor on
AWS's MXNet 1.9 container, the source staged by `pipelines.sagemaker.pipeline.stage_pipeline_source`
with the `params.yaml` the pipeline was upserted with):

  ship      the training step's model.tar.gz -> model folder (`unpack_model`) -> `lensops evaluate`
            -> `lensops optimize` (variants, parity gate, latency) -> `lensops package build`; writes
            evaluation.json (the property file the condition step reads) and the package.
  register  the package -> `lensops register` (SageMaker Model Registry: group = model name,
            PendingManualApproval, the `candidate` alias) -> `lensops promote` (Approved only when it
            beats the approved champion; the fleet notice when `pipeline.promote.mqtt_url` is set).

evaluation.json:
  {"model": NAME, "metric": "test_accuracy" | "test_map", "value": float,
   "parity_ok": bool (at least one variant passed the parity gate), "variants_passed": [ids],
   "sagemaker_job": training job name}

Run locally the same way (`python -m pipelines.sagemaker.steps ship --model-dir DIR ...`), which is how
the tests run them: moto's pipeline executions do not run steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from common.errors import CLI_ERRORS, print_error

MODEL_KEY = "pipeline_job"  # the `models` key the steps give the trained model


def ship(
    model_dir: Path,
    data: Path,
    out: Path,
    package_out: Path,
    model_name: str,
    job_name: str,
    params: Path = Path("params.yaml"),
) -> dict:
    """Unpack, evaluate, optimize and package the training step's model; write out/evaluation.json."""
    from pipelines.cli import main as lensops  # what `lensops evaluate|optimize|...` runs
    from pipelines.sagemaker.job import SageMakerJobError, unpack_model

    archives = sorted(Path(model_dir).glob("*.tar.gz"))
    if not archives:
        raise SageMakerJobError(f"{model_dir}: no model.tar.gz from the training step")
    work = out.parent / "work"
    model = unpack_model(archives[0], work, job_name, f"{model_dir}/{archives[0].name}")
    models = work / "models.yaml"
    models.write_text(
        yaml.safe_dump({"models": {MODEL_KEY: {"name": model_name, "model_dir": str(model), "data": str(data)}}})
    )
    package = package_out / f"{model_name}.tar.gz"
    package_out.mkdir(parents=True, exist_ok=True)
    common = ["--params", str(params), "--models-from", str(models), "--model", MODEL_KEY]
    # the commands' default folders (reports/, build/ under the working directory), as in a local run
    for command in (["evaluate"], ["optimize"], ["package", "build", "--out", str(package)]):
        code = lensops([*command, *common])
        if code != 0:
            raise SageMakerJobError(f"lensops {command[0]} failed (exit {code})")
    metrics = json.loads((Path("reports/evaluate") / MODEL_KEY / "metrics.json").read_text())
    metric = "test_map" if "test_map" in metrics else "test_accuracy"
    variants = json.loads((Path("build") / MODEL_KEY / "optimize.json").read_text())["variants"]
    passed = sorted(vid for vid, row in variants.items() if row.get("passed"))
    report = {
        "model": model_name,
        "metric": metric,
        "value": float(metrics[metric]),
        "parity_ok": bool(passed),
        "variants_passed": passed,
        "sagemaker_job": job_name,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


def register(package_dir: Path, data: Path, model_name: str, task: str, params: Path = Path("params.yaml")) -> None:
    """Register the package in the pipeline's registry, then let promote decide on `production`
    (promote scores the challenger and the champion on `data`'s test split)."""
    from pipelines.cli import main as lensops  # what `lensops evaluate|optimize|...` runs
    from pipelines.sagemaker.job import SageMakerJobError

    packages = sorted(Path(package_dir).glob("*.tar.gz"))
    if not packages:
        raise SageMakerJobError(f"{package_dir}: no package from the ship step")
    with_params = shutil.copy(params, Path(package_dir).parent / "params-register.yaml")
    config = yaml.safe_load(Path(with_params).read_text())
    config["models"] = {MODEL_KEY: {"name": model_name, "model_dir": str(package_dir), "data": str(data)}}
    Path(with_params).write_text(yaml.safe_dump(config))
    for command in (["register", "--package", str(packages[0])], ["promote", "--task", task]):
        code = lensops([*command, "--params", str(with_params), "--model", MODEL_KEY])
        if code != 0:
            raise SageMakerJobError(f"lensops {command[0]} failed (exit {code})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lensops_pipeline_step.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    steps = parser.add_subparsers(dest="step", required=True)
    s = steps.add_parser("ship")
    s.add_argument("--model-dir", type=Path, required=True)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--package-out", type=Path, required=True)
    s.add_argument("--model-name", required=True)
    s.add_argument("--job-name", default="unknown")
    r = steps.add_parser("register")
    r.add_argument("--package-dir", type=Path, required=True)
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--model-name", required=True)
    r.add_argument("--task", required=True, choices=["classification", "detection"])
    for p in (s, r):
        p.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    try:
        if args.step == "ship":
            report = ship(
                args.model_dir, args.data, args.out, args.package_out, args.model_name, args.job_name, args.params
            )
            print(json.dumps(report), flush=True)
        else:
            register(args.package_dir, args.data, args.model_name, args.task, args.params)
    except CLI_ERRORS as exc:
        return print_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
