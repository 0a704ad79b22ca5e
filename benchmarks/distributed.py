"""Multi-host training throughput on this machine: `python -m benchmarks.distributed`.

Runs the same job through the SageMaker container emulation (`lensops sagemaker train --local`) with
1 and with 2 hosts, side by side in one run; the 2-host run is MXNet's parameter server for real
(2 workers, 2 servers and a scheduler as processes on 127.0.0.1, `dist_sync`). Each host prints
`[metric] train_images_per_s=...` per epoch (its shard, data loading included); the table gives the
median over epochs after the first (warm-up) per host, their sum, and the ratio to one host.

On one machine the hosts share its cores, so the ratio shows the parameter server's overhead, not a
speed-up; on SageMaker each host has its own instance. Example:

  python -m benchmarks.distributed --epochs 4 --n 1200
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from edge.package.runtimes import default_threads


def run_job(data: Path, hosts: int, epochs: int, work: Path, network: str, size: int, batch: int) -> dict:
    from pipelines.sagemaker.local import run_local_training

    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = run_local_training(
            data,
            work / f"job-{hosts}",
            [
                "--task",
                "classification",
                "--network",
                network,
                "--input-size",
                str(size),
                "--epochs",
                str(epochs),
                "--batch-size",
                str(batch),
                "--optimizer",
                "adam",
                "--lr",
                "0.001",
                "--num-workers",
                "0",
                "--tracking",
                "none",
                "--progress",
                "false",
            ],
            instance_count=hosts,
        )
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the {hosts}-host job failed (exit {code}):\n{out.getvalue()[-3000:]}")
    per_host: dict[str, list[float]] = {}
    for host, value in re.findall(
        r"^(?:\[(algo-\d+)\] )?\[metric\] train_images_per_s=([0-9.]+)", out.getvalue(), re.M
    ):
        per_host.setdefault(host or "algo-1", []).append(float(value))
    medians = {host: statistics.median(values[1:] or values) for host, values in sorted(per_host.items())}
    return {"hosts": hosts, "per_host": medians, "total": sum(medians.values()), "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n", type=int, default=1200, help="synthetic classification images (64 px)")
    parser.add_argument("--network", default="mobilenet0.25")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    from training.datasets.synth import synth_classification

    with tempfile.TemporaryDirectory(prefix="lensops-bench-dist-") as tmp:
        work = Path(tmp)
        synth_classification(work / "data", n=args.n, seed=11, size=64)
        rows = [run_job(work / "data", hosts, args.epochs, work, args.network, 64, args.batch_size) for hosts in (1, 2)]
    machine = describe(default_threads())
    print(f"CPU {machine['cpu_model']}, {machine['cores']} cores, flags {' '.join(machine['flags'])}")
    print(
        f"{args.network} @ 64 px, batch {args.batch_size} per host, {args.n} images, {args.epochs} epochs, "
        f"Adam; images/s = median over epochs 2..{args.epochs}, per host (its shard)"
    )
    print(f"{'hosts':>5}  {'images/s per host':<24} {'total images/s':>14} {'vs 1 host':>9} {'job wall s':>10}")
    base = rows[0]["total"]
    for row in rows:
        hosts = ", ".join(f"{v:.0f}" for v in row["per_host"].values())
        print(
            f"{row['hosts']:>5}  {hosts:<24} {row['total']:>14.0f} {row['total'] / base:>8.2f}x {row['wall_s']:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
