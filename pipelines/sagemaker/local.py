"""Local emulation of a SageMaker script-mode training job, without Docker.

Builds the container's /opt/ml tree under a temporary root, copies the entry point's source to
/opt/ml/code and the channels to /opt/ml/input/data/<channel>, sets the SM_* environment the
SageMaker training toolkit sets, runs `python -m training.train --key value ...` as a subprocess,
and on success leaves `model.tar.gz` (the contents of /opt/ml/model) and `output.tar.gz`
(/opt/ml/output/data) in the output folder, as SageMaker does in S3. On failure it writes
/opt/ml/output/failure and leaves no model.tar.gz behind.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import deque
from pathlib import Path
from typing import Optional, Sequence

import training

HOST = "algo-1"


def hyperparameters_from_args(args: Sequence[str]) -> dict[str, str]:
    """`--epochs 3 --task detection` -> {"epochs": "3", "task": "detection"} (SageMaker passes strings)."""
    params, items = {}, list(args)
    while items:
        key = items.pop(0)
        if not key.startswith("--") or not items or items[0].startswith("--"):
            raise ValueError(f"hyperparameters must be '--name value' pairs; got '{key}'")
        params[key[2:]] = items.pop(0)
    return params


def build_tree(root: Path, channels: dict[str, Path], hyperparameters: dict[str, str]) -> dict[str, str]:
    """Create /opt/ml under root; return the SM_* environment for the job."""
    ml = root / "opt" / "ml"
    for sub in ("input/config", "input/data", "model", "checkpoints", "output/data", "code"):
        (ml / sub).mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path(training.__file__).parent, ml / "code" / "training",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name, source in channels.items():
        shutil.copytree(source, ml / "input" / "data" / name)
    (ml / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    (ml / "input/config/resourceconfig.json").write_text(json.dumps({"current_host": HOST, "hosts": [HOST]}))
    (ml / "input/config/inputdataconfig.json").write_text(
        json.dumps({name: {"TrainingInputMode": "File"} for name in channels}))
    env = {
        "SM_MODEL_DIR": str(ml / "model"),
        "SM_OUTPUT_DATA_DIR": str(ml / "output/data"),
        "SM_OUTPUT_DIR": str(ml / "output"),
        "SM_INPUT_DIR": str(ml / "input"),
        "SM_CHECKPOINT_DIR": str(ml / "checkpoints"),
        "SM_HOSTS": json.dumps([HOST]),
        "SM_CURRENT_HOST": HOST,
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps(hyperparameters),
        "SM_MODULE_DIR": str(ml / "code"),
        "SM_USER_ARGS": json.dumps([x for k, v in hyperparameters.items() for x in (f"--{k}", v)]),
    }
    for name in channels:
        env[f"SM_CHANNEL_{name.upper()}"] = str(ml / "input" / "data" / name)
    return env


def _tar(folder: Path, archive: Path) -> None:
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    os.replace(tmp, archive)


def run_local_training(data: Path, out: Path, user_args: Sequence[str], validation: Optional[Path] = None,
                       keep: bool = False) -> int:
    """Run the job; return its exit code. Output goes to out/model.tar.gz and out/output.tar.gz."""
    try:
        hyperparameters = hyperparameters_from_args(user_args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in (("train", data), ("validation", validation)):
        if path is not None and not Path(path).is_dir():
            print(f"error: channel '{name}': {path} is not a folder", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="lensops-sm-"))
    channels = {"train": Path(data)} | ({"validation": Path(validation)} if validation else {})
    env = {**os.environ, **build_tree(root, channels, hyperparameters)}
    code = root / "opt/ml/code"
    env["PYTHONPATH"] = str(code)
    args = [x for k, v in hyperparameters.items() for x in (f"--{k}", v)]
    print(f"SageMaker local emulation: /opt/ml = {root / 'opt/ml'}", flush=True)
    tail: deque[str] = deque(maxlen=20)
    proc = subprocess.Popen([sys.executable, "-m", "training.train", *args], cwd=code, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        sys.stdout.write(line)
        tail.append(line)
    code_ = proc.wait()
    ml = root / "opt/ml"
    try:
        if code_ != 0:
            (ml / "output/failure").write_text("".join(tail))
            print(f"error: training job failed (exit {code_}); see {ml / 'output/failure'}", file=sys.stderr)
            return code_
        out.mkdir(parents=True, exist_ok=True)
        _tar(ml / "model", out / "model.tar.gz")
        _tar(ml / "output/data", out / "output.tar.gz")
        print(f"model artifact: {out / 'model.tar.gz'}", flush=True)
        return 0
    finally:
        if not keep and code_ == 0:
            shutil.rmtree(root, ignore_errors=True)
