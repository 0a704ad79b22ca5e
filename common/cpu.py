"""What the CPU is and can do, from Linux's /proc/cpuinfo (empty where unknown, as on macOS)."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that decide which model variants run fast (VNNI: int8, BF16 / AMX: bf16); benchmarks print them
INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _field(*keys: str) -> str:
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith(keys):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@lru_cache(maxsize=1)
def cpu_features() -> frozenset[str]:
    """The CPU flags Linux reports (avx2, avx512_vnni, amx_bf16, ...; `Features` on Arm); empty where unknown."""
    return frozenset(_field("flags", "Features").split())


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (e.g. "AMD EPYC 9R14 96-Core Processor"), else platform.processor()."""
    return _field("model name") or platform.processor()
