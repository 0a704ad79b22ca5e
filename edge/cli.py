"""`lensops edge ...`: the device side of the CLI (imports edge code only).

    lensops edge run --config device.yaml [--max-seconds N] [--print-messages N] [--exit-when-done]
    lensops edge check --config device.yaml

Exit codes (common.errors, the contract of every LensOps CLI): 0 done; 2 a user error (bad config or
usage, an unknown registry backend: restarting will not fix it); 1 the runner could not start (the stream
port is taken) or, with --exit-when-done, sources failed or messages were not delivered. SIGTERM and SIGINT
stop the runner cleanly (the outbox is kept for the next start).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

from common.errors import RUN_FAILED_EXIT, USER_ERROR_EXIT, UserError, print_error
from edge.config import DeviceConfig, load_config
from edge.redact import install_log_redaction, redact

log = logging.getLogger("edge.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lensops edge", description="The LensOps device runner.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve: pull the promoted model, infer on every frame, publish")
    run.add_argument("--config", type=Path, required=True, help="device YAML file")
    run.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    run.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit once every source ended (video files, folders) and the outbox drained",
    )
    run.add_argument(
        "--print-messages",
        type=int,
        default=0,
        metavar="N",
        help="print the first N inference messages as the broker delivers them back",
    )
    run.add_argument("--state-dir", type=Path, default=None, help="outbox and package cache (overrides state_dir)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    check = sub.add_parser("check", help="validate a device config and print what it resolves to")
    check.add_argument("--config", type=Path, required=True, help="device YAML file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
        return int(exc.code or 0)
    try:
        config = load_config(args.config)
    except UserError as exc:
        return print_error(exc, redact=redact)
    if args.command == "check":
        bad = undecodable_sources(config, args.config)
        for line in bad:
            print(redact(f"error: {line}"), file=sys.stderr)
        if bad:
            return USER_ERROR_EXIT
        print(summary(config))
        return 0
    return run(config, args)


def undecodable_sources(config: DeviceConfig, path: Path) -> list[str]:
    """One line per source whose kind is checked by decoding its first frame (`CHECK_FIRST_FRAME`: files and
    folders) and whose first frame does not decode, named like a config error (cameras and streams are not
    opened: they may be offline at check time)."""
    from edge.source_kinds import SourceError, first_frame

    found = []
    for i, source in enumerate(config.sources):
        if source.CHECK_FIRST_FRAME:
            try:
                first_frame(source)
            except SourceError as exc:
                found.append(f"{path}: sources[{i}].uri: {exc}")
    return found


def summary(config: DeviceConfig) -> str:
    sources = ", ".join(f"{s.id} ({s.kind} {s.uri}) -> {config.model_for(s)}" for s in config.sources)
    return redact(
        f"ok: device {config.device_id}, registry {config.registry.type} "
        f"{config.registry.where()} @{config.registry.alias}, sources: {sources}, "
        f"mqtt {config.mqtt.url}, state {config.state_path}"
    )


def run(config: DeviceConfig, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    install_log_redaction()  # camera and registry URLs carry passwords: never into the log
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a progress bar per model download
    for noisy in ("alembic", "mlflow", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    from edge.runner import Runner  # imported here so `check` and config errors stay fast

    try:
        runner = Runner.from_config(config, args.state_dir)
    except UserError as exc:
        return print_error(exc, redact=redact)
    except OSError as exc:  # the state folder cannot be written: not the config's fault, a restart may help
        print(redact(f"error: cannot set up the runner: {exc}"), file=sys.stderr)
        return RUN_FAILED_EXIT
    if args.print_messages > 0:
        print_first(runner, args.print_messages)
    restore = stop_on_signals(runner.stopping)
    try:
        try:
            runner.start()
        except OSError as exc:
            print(redact(f"error: {exc}"), file=sys.stderr)
            runner.stop()
            return RUN_FAILED_EXIT
        if runner.stream is not None:
            print(f"lensops edge: {config.device_id} serving; page at {runner.stream.url}", flush=True)
        exit_when_done = args.exit_when_done or config.exit_when_done
        runner.run(args.max_seconds, exit_when_done=exit_when_done)
        problems = runner.problems() if exit_when_done else []
        for problem in problems:  # the work it was asked to finish is not done: say what, exit non-zero
            print(redact(f"error: {problem}"), file=sys.stderr)
        return RUN_FAILED_EXIT if problems else 0
    finally:
        restore()


def print_first(runner, count: int) -> None:
    """Print the first `count` inference messages the broker delivers back (proof of the round trip)."""
    topics = runner.publisher.topics
    printed = [0]
    lock = threading.Lock()

    def show(topic: str, payload: bytes) -> None:
        with lock:
            if printed[0] >= count:
                return
            printed[0] += 1
        print(f"{topic} {payload.decode('utf-8', 'replace')}", flush=True)

    runner.publisher.subscribe(f"{topics.prefix}/{topics.device}/+/inference", show)


def stop_on_signals(stopping: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT stop the runner; a second one ends the process at once. Returns what restores
    the previous handlers (so `main()` called in-process leaves the caller's handlers as they were)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stopping.set()
        for sig in previous:
            signal.signal(sig, signal.SIG_DFL)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, handle)
    return restore


if __name__ == "__main__":
    sys.exit(main())
