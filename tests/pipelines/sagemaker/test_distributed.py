"""Multi-host training with MXNet's parameter server: real dist_sync processes on 127.0.0.1.

`lensops sagemaker train --local --instance-count 2` runs two hosts (algo-1, algo-2) as separate
processes with SageMaker's SM_HOSTS / SM_CURRENT_HOST; the entry point's own bring-up
(training.distributed) starts one scheduler and a server per host: 2 workers, 2 servers, 1 scheduler.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from lensops.cli import main as lensops_main
from training.distributed import role_environment, start_parameter_server
from training.errors import ConfigError
from training.sagemaker_env import RunEnvironment

pytestmark = pytest.mark.slow


def test_two_hosts_train_in_sync_and_the_first_host_writes_the_model(tiny_cls, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "job"
    code = lensops_main(
        [
            "sagemaker",
            "train",
            "--local",
            "--instance-count",
            "2",
            "--data",
            str(tiny_cls),
            "--out",
            str(out),
            "--task",
            "classification",
            "--network",
            "cifar_resnet20_v1",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--input-size",
            "32",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--num-workers",
            "0",
            "--tracking",
            "none",
        ]
    )
    printed = capfd.readouterr().out
    assert code == 0, printed[-3000:]
    # both workers end with the same trainable weights (dist_sync: the servers hold one copy)
    digests = dict(re.findall(r"\[(algo-\d)\] trainable parameters digest: ([0-9a-f]{16})", printed))
    assert set(digests) == {"algo-1", "algo-2"}, printed[-3000:]
    assert digests["algo-1"] == digests["algo-2"]
    # each host trained on its own shard, and its training loss fell
    for host in ("algo-1", "algo-2"):
        losses = [float(v) for v in re.findall(rf"\[{host}\] \[metric\] train_loss=([0-9.]+)", printed)]
        assert len(losses) == 3 and losses[-1] < losses[0], (host, losses)
    # only the first host exports the model
    assert re.search(r"\[algo-2\] model: None", printed)
    with tarfile.open(out / "model.tar.gz") as tar:
        assert {"model-symbol.json", "model-0000.params", "model.json"} <= set(tar.getnames())


def test_role_environment_follows_the_sagemaker_toolkit():
    env = RunEnvironment(in_sagemaker=True, hosts=["algo-1", "algo-2", "algo-3"], current_host="algo-2")
    roles = role_environment("server", env, {"DMLC_PS_ROOT_URI": "10.0.0.5"})
    assert roles == {
        "DMLC_ROLE": "server",
        "DMLC_PS_ROOT_URI": "10.0.0.5",
        "DMLC_PS_ROOT_PORT": "8000",
        "DMLC_NUM_WORKER": "3",
        "DMLC_NUM_SERVER": "3",
    }


def test_nothing_starts_for_one_host_or_when_the_container_started_the_roles():
    one = RunEnvironment(in_sagemaker=True, hosts=["algo-1"], current_host="algo-1")
    assert start_parameter_server(one, {}) == []
    two = RunEnvironment(in_sagemaker=True, hosts=["algo-1", "algo-2"], current_host="algo-1")
    environ = {"DMLC_ROLE": "worker"}
    assert start_parameter_server(two, environ) == [] and environ == {"DMLC_ROLE": "worker"}


def test_an_unresolvable_host_is_named():
    env = RunEnvironment(in_sagemaker=True, hosts=["algo-nowhere.invalid", "algo-2"], current_host="algo-2")
    with pytest.raises(ConfigError, match="algo-nowhere.invalid"):
        start_parameter_server(env, {})
    stray = RunEnvironment(in_sagemaker=True, hosts=["algo-1", "algo-2"], current_host="algo-9")
    with pytest.raises(ConfigError, match="algo-9"):
        start_parameter_server(stray, {"DMLC_PS_ROOT_URI": "127.0.0.1"})


def test_a_failing_multi_host_job_ends_and_leaves_no_role_running(tiny_cls, tmp_path, capfd):
    import time

    started = time.monotonic()
    code = lensops_main(
        [
            "sagemaker",
            "train",
            "--local",
            "--instance-count",
            "2",
            "--data",
            str(tiny_cls),
            "--out",
            str(tmp_path / "job"),
            "--task",
            "classification",
            "--network",
            "nope_net",
            "--epochs",
            "1",
            "--num-workers",
            "0",
            "--tracking",
            "none",
        ]
    )
    out = capfd.readouterr()
    assert code != 0 and "nope_net" in out.out + out.err
    assert time.monotonic() - started < 120, "the hosts and their roles stop instead of waiting for each other"
    assert not (tmp_path / "job" / "model.tar.gz").exists()
    assert _role_processes() == [], "a scheduler or server was left running"


def _role_processes() -> list[int]:
    """PIDs of `python -c "import mxnet"` processes (parameter-server roles), from /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args[1:3] == [b"-c", b"import mxnet"]:
            found.append(int(cmdline.parent.name))
    return found


def test_the_schedule_travels_to_the_servers_with_the_optimizer():
    # the servers unpickle the optimizer inside `import mxnet`: the schedule must not need mxnet to load
    import pickle

    from training.dist_schedule import StepSchedule
    from training.schedule import lr_at

    schedule = pickle.loads(pickle.dumps(StepSchedule(100, 0.5, 10, "cosine", offset=20), 0))
    assert "mxnet" not in type(schedule).__module__
    assert [schedule(n) for n in (1, 2, 50)] == [lr_at(s, 100, 0.5, 10, "cosine") for s in (20, 21, 69)]
