"""`lensops fleet ...`: the operator's commands against a fleet over MQTT.

Each command is a module of this package with `add_parser(subparsers)`, which registers the command
and sets `func(args) -> int`; `COMMANDS` lists them. Errors print one line naming the file, field or
value and exit non-zero (common.errors).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from common.errors import CLI_ERRORS, print_error

# module names under pipelines.fleet, in the order `lensops fleet --help` lists them
COMMANDS = ("status", "rollout", "report", "acl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lensops fleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="fleet_command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pipelines.fleet.{name}").add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLI_ERRORS as exc:
        return print_error(exc)


if __name__ == "__main__":
    sys.exit(main())
