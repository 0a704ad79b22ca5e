"""The benchmark harness runs end to end in quick mode (figures are not judged here: no thresholds in CI)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("variants", "publisher", "training", "end_to_end", "hot_swap")


@pytest.mark.slow
def test_quick_benchmarks_write_every_section_and_the_plot(tmp_path):
    # given: a scratch output folder
    out = tmp_path / "bench"

    # when: the quick mode runs as CI runs it
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)

    # then: every section ran, the targets were checked, the table and both files exist
    assert done.returncode == 0, f"benchmarks failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    result = json.loads((out / "bench.json").read_text())
    for name in SECTIONS:
        section = result["sections"].get(name)
        assert section is not None, f"section {name} missing from bench.json"
        assert "error" not in section, f"section {name} failed:\n{section.get('error')}"
    assert result["targets"] and all(t["status"] in ("met", "missed", "not measured") for t in result["targets"])
    assert result["machine"]["cpu_model"] and "threads" in result["machine"], "CPU and threads not recorded"
    assert (out / "bench.png").stat().st_size > 10_000, "the plot is missing or empty"
    assert "Targets" in done.stdout and "CPU:" in done.stdout, "the table was not printed"
