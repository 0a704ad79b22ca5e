"""The machine a run measured: CPU model and flags, thread counts, load; and the run's settings."""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edge.package.runtimes import default_threads
from pipelines.optimize.stage import cpu_info

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    """What every section is given: quick or full, where to write, scratch space and thread count."""

    quick: bool
    out: Path
    work: Path  # scratch (models built here, the video, outboxes); removed after the run
    threads: int
    root: Path = ROOT
    model: Optional[str] = None  # the counts section's detector (--model); None: its default

    def runs(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def versions() -> dict[str, Optional[str]]:
    found: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("numpy", "cv2", "mxnet", "onnxruntime", "openvino", "paho.mqtt"):
        try:
            module = __import__(name, fromlist=["__version__"])
            found[name] = str(getattr(module, "__version__", "?"))
        except ImportError:
            found[name] = None
    return found


def describe(threads: int) -> dict:
    """CPU model, the flags that decide which kernels run, threads used, load now."""
    info = cpu_info()
    return {
        "cpu_model": info["model"],
        "flags": info["flags"],
        "cores": default_threads(),
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _busy_jiffies() -> Optional[int]:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait


def process_cpu_s() -> float:
    """CPU seconds (user + system) of all of this process's threads so far; not its child processes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _own_cpu_s() -> float:
    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


class CpuMeter:
    """How much of the machine's CPU other processes used while this run went on (from /proc/stat)."""

    def __init__(self) -> None:
        self._wall, self._busy, self._own = time.monotonic(), _busy_jiffies(), _own_cpu_s()

    def others_share(self) -> Optional[float]:
        """Cores' time used by other processes since start, as a fraction of all cores' time."""
        busy = _busy_jiffies()
        if busy is None or self._busy is None:
            return None
        wall = time.monotonic() - self._wall
        others = (busy - self._busy) / os.sysconf("SC_CLK_TCK") - (_own_cpu_s() - self._own)
        return round(min(1.0, max(0.0, others) / (wall * (os.cpu_count() or 1))), 3)


def shared_note(others: Optional[float]) -> Optional[str]:
    if others is not None and others > 0.1:
        return (
            f"other processes used {others:.0%} of the cores' time during this run: "
            "read the ratios (measured side by side), not the absolute times"
        )
    return None
