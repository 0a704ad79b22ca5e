"""`python -m benchmarks [--quick] [--out DIR] [--only SECTION,...] [--model REF]`: measure, print, write JSON + PNG.

Exits non-zero only when a section could not run; missed targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from benchmarks import report, targets
from benchmarks.machine import ROOT, CpuMeter, Settings, describe, shared_note
from edge.package.runtimes import default_threads
from common.cpu import INTERESTING_FLAGS

# section -> module; the runner sections last (they need the most of the device side)
SECTIONS = {
    "variants": "benchmarks.variants",
    "publisher": "benchmarks.publisher",
    "training": "benchmarks.training_loop",
    "end_to_end": "benchmarks.end_to_end",
    "hot_swap": "benchmarks.hot_swap",
    "cameras": "benchmarks.cameras",
    "counts": "benchmarks.counts",
    "fleet": "benchmarks.fleet",
}
# run when --only is not given: the speed sections. `counts` measures the demo detector's quality and
# needs `make demo` (or --model); it runs when named: --only counts
DEFAULT_SECTIONS = ("variants", "publisher", "training", "end_to_end", "hot_swap", "cameras", "fleet")
log = logging.getLogger("benchmarks")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a minute or two: fewer runs and frames (CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench", help="where bench.json/png go")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated sections ({', '.join(SECTIONS)}; default: all but counts)",
    )
    parser.add_argument("--threads", type=int, default=default_threads(), help="inference threads (default: all cores)")
    parser.add_argument(
        "--model",
        default=None,
        help="counts: the detector, models:/NAME@ALIAS (registry: MLFLOW_REGISTRY_URI or "
        "MLFLOW_TRACKING_URI, else the project's mlflow.db) or a package .tar.gz / folder; "
        "default "
        "$LENSOPS_BENCH_MODEL, else models:/shapes-detector@production in the project's mlflow.db",
    )
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    return args


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore")  # MXNet's and GluonCV's UserWarnings on every hybridize
    logging.getLogger("root").setLevel(logging.WARNING)
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:
        pass


def run_sections(settings: Settings, names: list[str]) -> dict:
    sections = {}
    for name in SECTIONS:
        if name not in names:
            continue
        start = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            sections[name] = importlib.import_module(SECTIONS[name]).run(settings)
        except Exception:  # one broken section must not hide the others' figures
            sections[name] = {"title": name, "error": traceback.format_exc()}
        sections[name]["seconds"] = round(time.monotonic() - start, 1)
        print(f"[bench] {name} done in {sections[name]['seconds']} s", file=sys.stderr, flush=True)
    return sections


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MPLBACKEND", "Agg")
    quiet_libraries()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lensops-bench-"))
    meter, start = CpuMeter(), time.monotonic()
    machine = describe(args.threads)
    machine["absent_flags"] = [f for f in INTERESTING_FLAGS if f not in machine["flags"]]
    try:
        settings = Settings(quick=args.quick, out=args.out, work=work, threads=args.threads, model=args.model)
        sections = run_sections(settings, args.only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    others = meter.others_share()
    result = {
        "schema": "lensops.bench/1",
        "quick": args.quick,
        "machine": machine,
        "sections": sections,
        "targets": targets.check(sections, machine["flags"]),
        "others_cpu_share": others,
        "shared": shared_note(others),
        "elapsed_s": round(time.monotonic() - start, 1),
    }
    print(report.render(result))
    json_path = report.write_json(result, args.out)
    png_path = report.write_plot(result, args.out)
    print(f"\nwrote {json_path} and {png_path}")
    return 1 if any("error" in s for s in sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
