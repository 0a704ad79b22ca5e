"""Pipeline subcommands (`lensops evaluate|optimize|package|register|promote`), driven by params.yaml.

Each reads `pipeline` and `models.<key>` from params.yaml, so `dvc.yaml` stages name exactly the
keys they use; with --models-from FILE, `models` comes from FILE (the retrain models of
params-retrain.yaml, which `dvc repro` does not run). Errors print one line naming the file, field
or value and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from common.errors import CLI_ERRORS, UserError, print_error
from common.files import write_json
from pipelines.config import Params, load_params
from pipelines.stages import STAGES


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, data: dict) -> None:
    write_json(path, data)


def cmd_evaluate(args, params: Params) -> int:
    from pipelines.evaluate_stage import evaluate_model

    entry = params.model(args.model)
    metrics = evaluate_model(
        entry.model_dir, entry.data, Path(args.out or f"reports/evaluate/{args.model}"), args.split
    )
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_optimize(args, params: Params) -> int:
    from pipelines.optimize.stage import optimize

    entry = params.model(args.model)
    report = optimize(
        entry.model_dir,
        entry.data,
        Path(args.build or f"build/{args.model}"),
        Path(args.report or f"reports/optimize/{args.model}"),
        params.pipeline,
    )
    from pipelines.report import variant_table

    print(variant_table(report))
    return 0


def cmd_package(args, params: Optional[Params]) -> int:
    if args.action == "verify":
        return _package_verify(args)
    if args.action == "keygen":
        from edge.package.signing import generate_keypair

        generate_keypair(args.private, args.public)
        print(f"wrote {args.private} (keep it secret) and {args.public} (give it to devices)")
        return 0
    from pipelines.package import build_and_pack

    params.model(args.model)  # an unknown key is an error naming the models file
    evaluation = Path(f"reports/evaluate/{args.model}/metrics.json")
    if not evaluation.is_file():
        raise UserError(f"{evaluation}: missing metrics file (run `lensops evaluate --model {args.model}` first)")
    archive = Path(args.out or f"packages/{args.model}.tar.gz")
    manifest, sha = build_and_pack(
        Path(args.build or f"build/{args.model}"),
        archive.with_suffix("").with_suffix(""),
        archive,
        _load_json(evaluation),
        params.pipeline.sign_key,
    )
    _write_json(
        Path(f"reports/package/{args.model}.json"),
        {
            "name": manifest.name,
            "version": manifest.version,
            "archive": str(archive),
            "sha256": sha,
            "variants": [v.id for v in manifest.variants],
            "signed": params.pipeline.sign_key is not None,
        },
    )
    print(
        f"{archive}: {manifest.name} {manifest.version}, "
        f"variants {', '.join(v.id for v in manifest.variants)}, sha256 {sha}"
    )
    return 0


def _package_verify(args) -> int:
    import tempfile

    from edge.package import open_package

    with tempfile.TemporaryDirectory() as tmp:
        _, manifest = open_package(args.path, Path(tmp), args.pubkey)
    signed = " and signature" if args.pubkey else ""
    print(
        f"{args.path}: OK ({manifest.name} {manifest.version}, "
        f"{len(manifest.all_files())} files match their sha256{signed})"
    )
    return 0


def cmd_register(args, params: Params) -> int:
    import tempfile

    from edge.package import open_package, sha256_file
    from edge.registry import open_writer

    cfg = params.pipeline.registry
    entry = params.model(args.model)
    archive = Path(args.package or f"packages/{args.model}.tar.gz")
    if not archive.is_file():
        raise UserError(f"{archive}: no such package archive")
    with tempfile.TemporaryDirectory() as tmp:  # register what the archive holds, verified
        _, manifest = open_package(archive, Path(tmp))
    if manifest.name != entry.name:
        raise UserError(
            f"{archive}: package name '{manifest.name}' differs from {params.models_file} "
            f"models.{args.model}.name '{entry.name}'"
        )
    writer = open_writer(cfg)
    registered = writer.register(archive, manifest, sha256_file(archive), {"dvc_stage": f"register@{args.model}"})
    _write_json(
        Path(args.out or f"reports/register/{args.model}.json"),
        {
            "model": registered.model,
            "version": registered.version,
            "sha256": registered.sha256,
            "uri": registered.uri,
            "alias": "candidate",
            "newly_registered": registered.created,
        },
    )
    print(
        f"{registered.model} version {registered.version} -> alias candidate"
        f"{'' if registered.created else ' (already registered)'}"
    )
    return 0


def cmd_promote(args, params: Params) -> int:
    from pipelines.fleet import notice as fleet
    from pipelines.promote import promote
    from edge.registry import open_writer

    entry = params.model(args.model)
    cfg = params.pipeline
    writer = open_writer(cfg.registry)
    task = args.task or _load_json(Path(entry.model_dir) / "model.json").get("task")
    if task not in ("classification", "detection"):
        raise UserError(f"{Path(entry.model_dir) / 'model.json'}: task {task!r} is not classification or detection")
    report = promote(
        writer,
        entry.name,
        entry.data,
        task,
        cfg.promote,
        cfg.parity,
        Path(args.out or f"reports/promote/{args.model}"),
        dry_run=args.dry_run,
    )
    print(
        "\n".join(
            [f"{entry.name}: {'PROMOTE' if report['promote'] else 'KEEP'} ({report['action']})"]
            + [f"  - {r}" for r in report["reasons"]]
        )
    )
    # Re-published while the challenger holds the alias, so a notice lost to a broker outage is sent next time.
    holds = report["production_version"] == report["challenger"]["version"]
    if cfg.promote.mqtt_url and holds and not args.dry_run:
        c = report["challenger"]
        topic = fleet.publish_notice(
            cfg.promote.mqtt_url,
            cfg.promote.topic_prefix,
            cfg.promote.fleet,
            fleet.notice(entry.name, cfg.promote.alias, c["version"], c["uri"], c["sha256"]),
        )
        print(f"  published the retained fleet notice on {topic}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lensops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def params_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--params", type=Path, default=Path("params.yaml"), help="`pipeline` (and `models`) from here")
        p.add_argument(
            "--models-from",
            type=Path,
            metavar="FILE",
            help="read `models` from this file instead of --params "
            "(params-retrain.yaml: the retrain models, kept out of dvc repro)",
        )
        p.add_argument("--model", required=True, help="key under `models` (e.g. classifier)")

    def stage(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        params_options(p)
        p.set_defaults(func=func)
        return p

    p = stage("evaluate", cmd_evaluate, STAGES["evaluate"])
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="report folder (default reports/evaluate/MODEL)")
    p = stage("optimize", cmd_optimize, STAGES["optimize"])
    p.add_argument("--build", help="build folder (default build/MODEL)")
    p.add_argument("--report", help="report folder (default reports/optimize/MODEL)")
    pkg = sub.add_parser("package", help=STAGES["package"])
    pkg_sub = pkg.add_subparsers(dest="action", required=True)
    b = pkg_sub.add_parser("build", help="package the variants that passed (needs optimize + evaluate)")
    params_options(b)
    b.add_argument("--build", help="optimize build folder (default build/MODEL)")
    b.add_argument("--out", help="archive (default packages/MODEL.tar.gz)")
    b.set_defaults(func=cmd_package)
    v = pkg_sub.add_parser("verify", help="check every file against the manifest (and the signature)")
    v.add_argument("path", type=Path, help="package folder or .tar.gz")
    v.add_argument("--pubkey", type=Path, help="Ed25519 public key (PEM): the package must be signed by it")
    v.set_defaults(func=cmd_package, no_params=True)
    k = pkg_sub.add_parser("keygen", help="make an Ed25519 key pair for signing packages")
    k.add_argument("--private", type=Path, required=True)
    k.add_argument("--public", type=Path, required=True)
    k.set_defaults(func=cmd_package, no_params=True)
    p = stage("register", cmd_register, STAGES["register"])
    p.add_argument("--package", help="archive (default packages/MODEL.tar.gz)")
    p.add_argument("--out", help="record (default reports/register/MODEL.json)")
    p = stage("promote", cmd_promote, STAGES["promote"])
    p.add_argument("--dry-run", action="store_true", help="decide and report, move nothing")
    p.add_argument("--task", choices=["classification", "detection"], help="default: from the model folder")
    p.add_argument("--out", help="report folder (default reports/promote/MODEL)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        params = None if getattr(args, "no_params", False) else load_params(args.params, args.models_from)
        return args.func(args, params)
    except CLI_ERRORS as exc:  # common.errors: the one error contract; anything else is a bug (traceback)
        return print_error(exc)


if __name__ == "__main__":
    sys.exit(main())
