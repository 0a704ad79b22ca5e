"""Training entry point: `python -m training.train` for dvc repro, Jupyter and SageMaker script mode.

Precedence: params.yaml section (--params/--section) < command-line hyperparameters <
SageMaker channels/dirs for paths not given. SageMaker passes hyperparameters as `--key value`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

from training.config import TrainConfig, load_section, parse_config
from training.distributed import start_parameter_server, stop_roles
from common.errors import CLI_ERRORS, UserError, print_error
from training.sagemaker_env import RunEnvironment, read_environment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, help="params.yaml to read a section from")
    parser.add_argument("--section", help="section of the params file (e.g. train_classifier)")
    for name, field in TrainConfig.model_fields.items():
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        parser.add_argument(*flags, dest=name, default=None, metavar=name.upper(), help=field.description)
    return parser


def config_from_args(argv: Optional[Sequence[str]], env: RunEnvironment) -> TrainConfig:
    args = build_parser().parse_args(argv)
    values: dict = {}
    source = "command line"
    if args.params or args.section:
        params = args.params or Path("params.yaml")
        if not args.section:
            raise UserError("--params needs --section (which part of the params file to use)")
        values.update(load_section(params, args.section))
        source = f"{params}[{args.section}]"
    values.update({k: v for k, v in vars(args).items() if v is not None and k in TrainConfig.model_fields})
    if env.in_sagemaker:
        values.setdefault("data", env.train_channel)
        if env.validation_channel:
            values.setdefault("val_data", env.validation_channel)
        values.setdefault("model_dir", env.model_dir)
        values.setdefault("checkpoint_dir", env.checkpoint_dir)
        values.setdefault("progress", False)
        values.setdefault("model_name", f"{values.get('task', 'model')}-sagemaker")
        if env.output_data_dir:
            values.setdefault("plots_dir", env.output_data_dir / "plots")
            values.setdefault("metrics_file", env.output_data_dir / "metrics.json")
    return parse_config({k: v for k, v in values.items() if v is not None}, source)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env = read_environment()
    roles: list = []
    try:
        cfg = config_from_args(argv, env)
        # multi-host: this host's parameter-server roles, before mxnet creates the dist_sync kvstore
        roles = start_parameter_server(env)
        from training.runner import train  # heavy imports (mxnet) only once the config is valid

        result = train(cfg, env)
    except CLI_ERRORS as exc:
        return _failed(env, roles, print_error(exc))
    except Exception:
        if not env.is_distributed:
            raise
        traceback.print_exc()
        return _failed(env, roles, 1)
    stop_roles(roles)
    print(f"model: {result.model_dir}  epochs: {result.epochs_run}  run: {result.run_id}", flush=True)
    return 0


def _failed(env: RunEnvironment, roles: list, code: int) -> int:
    """A multi-host worker that failed never meets the others at the end-of-run barrier: its roles
    are stopped at once and the process ends without running the kvstore's destructor (which would
    wait for that barrier)."""
    stop_roles(roles, failed=True)
    if env.is_distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
