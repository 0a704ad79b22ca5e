"""Multi-host training with MXNet's parameter server (`dist_sync`), brought up from SageMaker's hosts.

On a SageMaker training job with instance count N, every host runs the entry point with the same
`SM_HOSTS` list and its own `SM_CURRENT_HOST`. Before the worker's first `dist_sync` step, each host
starts the parameter-server roles MXNet's kvstore needs, as the SageMaker MXNet training toolkit does
(sagemaker-mxnet-training-toolkit, `training.py`: `_env_vars_for_role` / `_run_mxnet_process`):

  - the first host (`SM_HOSTS[0]`) starts the **scheduler**;
  - every host starts one **server**;
  - the entry point itself is the **worker**.

A role is a `python -c "import mxnet"` process whose environment says `DMLC_ROLE=scheduler|server`
(importing mxnet with that role runs it until the workers finish). Everyone meets at
`DMLC_PS_ROOT_URI:DMLC_PS_ROOT_PORT`, the scheduler's address: the first host's name resolved to an
address, port 8000 (the toolkit's). `DMLC_NUM_WORKER` = `DMLC_NUM_SERVER` = the number of hosts.

`lensops sagemaker train` leaves the SDK's own parameter-server option off, so these roles always run
with the project's code importable (the servers unpickle the optimizer and its learning-rate
schedule, training.dist_schedule). When a container has brought the roles up anyway
(`DMLC_ROLE` set in the entry point's environment), nothing is started twice. On one machine (the local emulation,
the tests) every
"host" is 127.0.0.1: `DMLC_PS_ROOT_URI` and `DMLC_NODE_HOST` set in the environment win over name
resolution.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Mapping, MutableMapping, Optional

from training.errors import ConfigError
from training.sagemaker_env import RunEnvironment

PS_PORT = 8000  # the SageMaker MXNet toolkit's scheduler port


def role_environment(role: str, env: RunEnvironment, base: Mapping[str, str]) -> dict[str, str]:
    """The DMLC_* variables for `role` (scheduler, server or worker) on `env.current_host`."""
    root = base.get("DMLC_PS_ROOT_URI") or _address(env.hosts[0])
    out = {
        "DMLC_ROLE": role,
        "DMLC_PS_ROOT_URI": root,
        "DMLC_PS_ROOT_PORT": str(base.get("DMLC_PS_ROOT_PORT") or PS_PORT),
        "DMLC_NUM_WORKER": str(len(env.hosts)),
        "DMLC_NUM_SERVER": str(len(env.hosts)),
    }
    if base.get("DMLC_NODE_HOST"):
        out["DMLC_NODE_HOST"] = base["DMLC_NODE_HOST"]
    return out


def start_parameter_server(
    env: RunEnvironment, environ: Optional[MutableMapping[str, str]] = None
) -> list[subprocess.Popen]:
    """Start this host's scheduler (first host only) and server; set the worker role in `environ`.

    Returns the started role processes (empty when the container already started them or the run
    has one host). They exit on their own once every worker has finished. Raises ConfigError when a
    host name in SM_HOSTS does not resolve (naming it).
    """
    environ = os.environ if environ is None else environ
    if not env.is_distributed or environ.get("DMLC_ROLE"):
        return []
    if env.current_host not in env.hosts:
        raise ConfigError(f"SM_CURRENT_HOST '{env.current_host}' is not among SM_HOSTS {env.hosts}")
    roles = (["scheduler"] if env.current_host == env.hosts[0] else []) + ["server"]
    # the servers unpickle the optimizer and its schedule (training.dist_schedule): the project's code
    # must be importable there, wherever the entry point was started from
    code = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (code, environ.get("PYTHONPATH", "")) if p)
    started = []
    for role in roles:
        started.append(
            subprocess.Popen(
                [sys.executable, "-c", "import mxnet"],
                env={**environ, "PYTHONPATH": path, **role_environment(role, env, environ)},
            )
        )
    environ.update(role_environment("worker", env, environ))
    return started


def _address(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise ConfigError(
            f"SM_HOSTS: cannot resolve host '{host}' ({exc}); on one machine set DMLC_PS_ROOT_URI=127.0.0.1"
        ) from None


def stop_roles(processes: list[subprocess.Popen], timeout: float = 60.0, failed: bool = False) -> None:
    """Wait for this host's role processes to finish (they stop once every worker is done); a role
    still running after `timeout` seconds (another host's worker failed) is terminated.

    A worker is done when its dist_sync kvstore is freed (its destructor meets the other workers at a
    barrier and stops the servers). Gluon's Trainer and its Parameters reference each other, so
    the kvstore outlives `train()` until the cycle collector runs: collect first, then wait. With
    `failed` (this worker raised) the roles are stopped at once."""
    if failed:  # the other workers will not meet this one at the barrier: no waiting
        timeout = 0.0
    elif processes:
        gc.collect()
    for proc in processes:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
