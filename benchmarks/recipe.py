"""How a training recipe starts and ends, per seed: `python -m benchmarks.recipe`.

Trains a params.yaml section (default `train_classifier`, the demo classifier) once per seed with the
project's own training loop (`training.runner.train`), optionally with overrides, and prints one row
per seed:

  first above chance   the first epoch whose validation accuracy is above chance: above
                       1/k + 3 * sqrt((1/k)(1 - 1/k) / n_val) for k classes and n_val validation
                       images (three binomial standard deviations of a guessing model)
  val@1, val@2         validation accuracy after the first and second epoch
  best val / test      the best epoch's validation figure and the exported model's test figure
  minutes              wall time of the run

For a detection section the figure is VOC mAP@0.5 and "above chance" means above 0.05.
Quality figures depend on the run; they belong here (figures per seed, printed side by side), never in
unit tests. Examples:

  python -m benchmarks.recipe --seeds 0,1,2                       # the demo classifier as make demo trains it
  python -m benchmarks.recipe --seeds 0,1,2 --set lr=0.2 --set epochs=15
  python -m benchmarks.recipe --section train_detector --seeds 0,1,2   # make demo's three trainings per seed

A section whose `init_from` is the `model_dir` of another section of the params file (the demo's
curriculum: train_silhouettes -> train_classifier -> train_detector) is trained after that section,
with the same seed, as `dvc repro` would; one table per section. `--no-chain` starts from `init_from`
as it is. `--set` changes the named section only.

The data sets the sections name must exist (`dvc repro prepare_silhouettes prepare_classification
prepare_detection`, or `make demo`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]


def chance_bar(classes: int, n_val: int) -> float:
    """Accuracy a guessing model stays under with ~99.9% probability: 1/k + 3 binomial std devs."""
    p = 1.0 / classes
    return p + 3.0 * math.sqrt(p * (1 - p) / max(n_val, 1))


def parse_overrides(items: Sequence[str]) -> dict:
    """`key=value` pairs; values are parsed as YAML scalars (0.2 -> float, true -> bool)."""
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --set expects key=value, got '{item}'")
        values[key.strip()] = yaml.safe_load(raw)
    return values


def resolve(section: dict) -> dict:
    """The section with its data and local init_from made absolute (relative to the project root)."""
    section = dict(section)
    if "data" in section and not Path(section["data"]).is_absolute():
        section["data"] = str(ROOT / section["data"])
    init_from = section.get("init_from")
    if init_from and not str(init_from).startswith(("models:/", "runs:/")) and not Path(init_from).is_absolute():
        section["init_from"] = str(ROOT / init_from)
    return section


def chain(params: dict, name: str) -> list[str]:
    """Section names from the first one trained to `name`, following init_from to another section's model_dir.

    Raises UserError on a cycle.
    """
    from common.errors import UserError

    by_dir = {str(ROOT / v["model_dir"]): k for k, v in params.items() if isinstance(v, dict) and "model_dir" in v}
    names = [name]
    while True:
        source = resolve(params.get(names[0]) or {}).get("init_from")
        before = by_dir.get(str(source)) if source else None
        if before is None:
            return names
        if before in names:
            raise UserError(f"init_from of section '{names[0]}' loops back to section '{before}'")
        names.insert(0, before)


def run_seed(section: dict, seed: int, workdir: Path) -> dict:
    """Train one seed into `workdir` (nothing of the project's outputs is touched); return its row."""
    from training.config import parse_config
    from training.runner import train
    from training.sagemaker_env import RunEnvironment

    values = {
        **section,
        "seed": seed,
        "model_dir": workdir / f"model-{seed}",
        "checkpoint_dir": workdir / f"ckpt-{seed}",
        "metrics_file": None,
        "plots_dir": workdir / f"plots-{seed}",
        "tracking": "none",
        "progress": False,
        "resume": False,
    }
    cfg = parse_config({k: v for k, v in values.items() if v is not None}, f"recipe seed {seed}")
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the loop's [metric] lines; stdout keeps the table
        result = train(cfg, RunEnvironment(), ROOT)
    minutes = (time.perf_counter() - started) / 60
    return {
        "seed": seed,
        "minutes": round(minutes, 2),
        "metrics": result.metrics,
        "epochs_run": result.epochs_run,
        "curves": curves(workdir / f"plots-{seed}"),
    }


def curves(plots_dir: Path) -> list[dict]:
    """The per-epoch rows `training.plots.write_curves` wrote (curves.csv)."""
    import csv

    with open(plots_dir / "curves.csv", newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def summarise(task: str, rows: list[dict], bar: float) -> list[dict]:
    key = "val_accuracy" if task == "classification" else "val_map"
    test_key = "test_accuracy" if task == "classification" else "test_map"
    table = []
    for row in rows:
        hist = row["curves"]
        above = next((int(r["epoch"]) for r in hist if r.get(key, 0) > bar), None)
        at = {int(r["epoch"]): r.get(key) for r in hist}
        table.append(
            {
                "seed": row["seed"],
                "first_above_chance": above,
                "val@1": at.get(0),
                "val@2": at.get(1),
                "best_val": row["metrics"].get(f"best_{key}"),
                "test": row["metrics"].get(test_key),
                "epochs": row["epochs_run"],
                "minutes": row["minutes"],
            }
        )
    return table


def print_table(name: str, table: list[dict], bar: float, figure: str) -> None:
    print(f"\n{name}: {figure} per seed (above chance = {bar:.3f}; epochs counted from 1)")
    print(
        f"{'seed':>5} {'first above chance':>19} {'val@1':>7} {'val@2':>7} {'best val':>9} {'test':>7} "
        f"{'epochs':>7} {'minutes':>8}"
    )
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "-"  # noqa: E731
    for r in table:
        first = "never" if r["first_above_chance"] is None else str(r["first_above_chance"] + 1)
        print(
            f"{r['seed']:>5} {first:>19} {fmt(r['val@1']):>7} {fmt(r['val@2']):>7} {fmt(r['best_val']):>9} "
            f"{fmt(r['test']):>7} {r['epochs']:>7} {r['minutes']:>8.1f}"
        )
    tests = [r["test"] for r in table if isinstance(r["test"], float)]
    if tests:
        print(f"{'min':>5} {'':>19} {'':>7} {'':>7} {'':>9} {min(tests):>7.3f}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="params file (default params.yaml)")
    parser.add_argument(
        "--section", default="train_classifier", help="params section to train (default train_classifier)"
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the section (repeatable), e.g. --set lr=0.2",
    )
    parser.add_argument(
        "--no-chain",
        dest="chain",
        action="store_false",
        help="do not train the sections init_from names first; start from init_from as it is",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the tables as JSON here")
    args = parser.parse_args(argv)

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    from training.config import load_section
    from training.datasets.formats import load_dataset
    from common.errors import UserError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds takes whole numbers separated by commas, got '{args.seeds}'", file=sys.stderr)
        return 2
    try:
        sections = {args.section: {**load_section(args.params, args.section), **parse_overrides(args.overrides)}}
        if args.chain:
            params = yaml.safe_load(args.params.read_text()) or {}
            params[args.section] = sections[args.section]
            sections = {
                name: sections.get(name) or load_section(args.params, name) for name in chain(params, args.section)
            }
        indexes = {}
        for name, section in sections.items():
            missing = [key for key in ("task", "data") if key not in section]
            if missing:
                raise UserError(f"{args.params}: section '{name}' has no {', '.join(repr(k) for k in missing)}")
            sections[name] = section = resolve(section)
            indexes[name] = load_dataset(Path(section["data"]), section["task"], section.get("data_format", "auto"))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows: dict[str, list] = {name: [] for name in sections}
    with tempfile.TemporaryDirectory(prefix="lensops-recipe-") as tmp:
        for seed in seeds:
            before = None
            for name, section in sections.items():
                workdir = Path(tmp, name)
                if before is not None:
                    section = {**section, "init_from": str(Path(tmp, before, f"model-{seed}"))}
                try:
                    row = run_seed(section, seed, workdir)
                except UserError as exc:  # bad config (unknown network, bad value): one line naming it
                    print(f"error: seed {seed}, section {name}: {exc}", file=sys.stderr)
                    return 2
                rows[name].append(row)
                before = name
                print(f"seed {seed}, {name}: done in {row['minutes']:.1f} min", file=sys.stderr, flush=True)
    report = {"overrides": args.overrides, "sections": {}}
    for name, section in sections.items():
        index = indexes[name]
        bar = chance_bar(len(index.classes), len(index.split("val"))) if section["task"] == "classification" else 0.05
        figure = "accuracy" if section["task"] == "classification" else "VOC mAP@0.5"
        table = summarise(section["task"], rows[name], bar)
        changed = (
            ", ".join(f"{k}={v}" for k, v in parse_overrides(args.overrides).items()) if name == args.section else ""
        ) or "as in the params file"
        print_table(f"{name} ({changed})", table, bar, figure)
        report["sections"][name] = {
            "chance_bar": bar,
            "rows": table,
            "curves": {r["seed"]: r["curves"] for r in rows[name]},
        }
    if args.out:
        from common.files import write_json

        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
