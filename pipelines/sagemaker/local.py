"""Local emulation of a SageMaker script-mode training job, without Docker.

Builds the container's /opt/ml tree (one per host) under a temporary root, copies the entry point's source to
/opt/ml/code and the channels to /opt/ml/input/data/<channel>, sets the SM_* environment the
SageMaker training toolkit sets, runs the staged entry point (`python lensops_train.py --key value ...`,
the source_dir a real job uploads: pipelines.sagemaker.job.stage_source) as a subprocess,
and on success leaves `model.tar.gz` (the contents of /opt/ml/model) and `output.tar.gz`
(/opt/ml/output/data) in the output folder, as SageMaker does in S3. On failure it writes
/opt/ml/output/failure and leaves no model.tar.gz behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Optional, Sequence

from common.errors import UserError
from common.files import atomic_path
from pipelines.sagemaker.job import ENTRY_POINT, stage_source

HOST = "algo-1"


def hyperparameters_from_args(args: Sequence[str]) -> dict[str, str]:
    """`--epochs 3 --task detection` -> {"epochs": "3", "task": "detection"} (SageMaker passes strings)."""
    params, items = {}, list(args)
    while items:
        key = items.pop(0)
        if not key.startswith("--") or not items or items[0].startswith("--"):
            raise UserError(f"hyperparameters must be '--name value' pairs; got '{key}'")
        params[key[2:]] = items.pop(0)
    return params


def build_tree(
    root: Path,
    channels: dict[str, Path],
    hyperparameters: dict[str, str],
    hosts: Sequence[str] = (HOST,),
    current_host: str = HOST,
) -> dict[str, str]:
    """Create /opt/ml under root for `current_host` of `hosts`; return the SM_* environment for the job."""
    ml = root / "opt" / "ml"
    for sub in ("input/config", "input/data", "model", "checkpoints", "output/data", "code"):
        (ml / sub).mkdir(parents=True, exist_ok=True)
    stage_source(ml / "code")  # what a real job uploads as its source_dir
    for name, source in channels.items():
        shutil.copytree(source, ml / "input" / "data" / name)
    (ml / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    (ml / "input/config/resourceconfig.json").write_text(
        json.dumps({"current_host": current_host, "hosts": list(hosts)})
    )
    (ml / "input/config/inputdataconfig.json").write_text(
        json.dumps({name: {"TrainingInputMode": "File"} for name in channels})
    )
    env = {
        "SM_MODEL_DIR": str(ml / "model"),
        "SM_OUTPUT_DATA_DIR": str(ml / "output/data"),
        "SM_OUTPUT_DIR": str(ml / "output"),
        "SM_INPUT_DIR": str(ml / "input"),
        "SM_CHECKPOINT_DIR": str(ml / "checkpoints"),
        "SM_HOSTS": json.dumps(list(hosts)),
        "SM_CURRENT_HOST": current_host,
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
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)


def run_local_training(
    data: Path,
    out: Path,
    user_args: Sequence[str],
    validation: Optional[Path] = None,
    keep: bool = False,
    instance_count: int = 1,
) -> int:
    """Run the job on `instance_count` emulated hosts; return its exit code (the first failing host's).

    Output goes to out/model.tar.gz and out/output.tar.gz (the first host's, as the entry point writes
    the model there only). With two or more hosts, each is a process with its own /opt/ml tree and
    `SM_CURRENT_HOST`, all on 127.0.0.1 (`DMLC_PS_ROOT_URI`, `DMLC_NODE_HOST`, a free
    `DMLC_PS_ROOT_PORT`); the entry point brings MXNet's parameter server up itself
    (training.distributed). Their checkpoint folder is shared, as one S3 checkpoint URI is.
    """
    hyperparameters = hyperparameters_from_args(user_args)
    for name, path in (("train", data), ("validation", validation)):
        if path is not None and not Path(path).is_dir():
            raise UserError(f"channel '{name}': {path} is not a folder")
    if instance_count < 1:
        raise UserError(f"--instance-count must be at least 1, got {instance_count}")
    root = Path(tempfile.mkdtemp(prefix="lensops-sm-"))
    channels = {"train": Path(data), **({"validation": Path(validation)} if validation else {})}
    hosts = [f"algo-{i + 1}" for i in range(instance_count)]
    loopback = (
        {"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_NODE_HOST": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(_free_port())}
        if instance_count > 1
        else {}
    )
    args = [x for k, v in hyperparameters.items() for x in (f"--{k}", v)]
    procs: list[subprocess.Popen] = []
    try:
        for host in hosts:
            host_root = root / host if instance_count > 1 else root
            env = {**os.environ, **build_tree(host_root, channels, hyperparameters, hosts, host), **loopback}
            env["PYTHONPATH"] = str(host_root / "opt/ml/code")
            if instance_count > 1:
                env["SM_CHECKPOINT_DIR"] = str(root / "checkpoints")
            # a session of its own: the host's parameter-server roles go with it when it is stopped
            procs.append(
                subprocess.Popen(
                    [sys.executable, ENTRY_POINT, *args],
                    cwd=host_root / "opt/ml/code",
                    env=env,
                    start_new_session=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
    except BaseException:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)
        raise
    ml = (root / hosts[0] if instance_count > 1 else root) / "opt/ml"
    print(
        f"SageMaker local emulation: /opt/ml = {ml}" + (f" (hosts {', '.join(hosts)})" if instance_count > 1 else ""),
        flush=True,
    )
    tails = [deque(maxlen=20) for _ in hosts]
    readers = [
        threading.Thread(target=_relay, args=(proc, tail, f"[{host}] " if instance_count > 1 else ""))
        for proc, tail, host in zip(procs, tails, hosts)
    ]
    for reader in readers:
        reader.start()
    try:
        codes = _wait_all(procs)
    except BaseException:  # Ctrl-C: no host outlives the job
        _stop(procs)
        raise
    for reader in readers:
        reader.join()
    failed = next(((host, code, tail) for host, code, tail in zip(hosts, codes, tails) if code != 0), None)
    try:
        if failed:
            host, code_, tail = failed
            host_ml = (root / host if instance_count > 1 else root) / "opt/ml"
            (host_ml / "output/failure").write_text("".join(tail))
            print(
                f"error: training job failed on {host} (exit {code_}); see {host_ml / 'output/failure'}",
                file=sys.stderr,
            )
            return code_
        out.mkdir(parents=True, exist_ok=True)
        _tar(ml / "model", out / "model.tar.gz")
        _tar(ml / "output/data", out / "output.tar.gz")
        print(f"model artifact: {out / 'model.tar.gz'}", flush=True)
        return 0
    finally:
        if not keep and not failed:
            shutil.rmtree(root, ignore_errors=True)


def _wait_all(procs: list[subprocess.Popen]) -> list[int]:
    """Exit codes of all hosts. When one fails the others are stopped, as SageMaker ends a job whose
    host failed (the rest would wait in dist_sync for it forever)."""
    while True:
        codes = [proc.poll() for proc in procs]
        if all(code is not None for code in codes):
            return codes
        if any(code not in (None, 0) for code in codes):
            _stop([proc for proc, code in zip(procs, codes) if code is None])
            return [proc.wait() for proc in procs]
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process's session (the host and its roles), SIGKILL after 10 s."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _relay(proc: subprocess.Popen, tail: deque, prefix: str) -> None:
    """Copy a host's output to ours line by line (prefixed with the host when there are several)."""
    lock = _PRINT_LOCK
    for line in proc.stdout:
        with lock:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
        tail.append(line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_PRINT_LOCK = threading.Lock()
