"""One error contract for every CLI (`lensops ...`, `lensops edge ...`, `python -m training.train`, the
pipeline stages): a `UserError` is something the user can fix (a file, field or value that is wrong or
missing, a service that does not answer); the command prints one `error: MESSAGE` per line of it on stderr
and exits `USER_ERROR_EXIT` (2, argparse's code for a bad command line). Any other exception is a bug and
keeps its traceback. Exit 1 is left for a command that ran but whose work failed (a SageMaker job that
failed, sources that did not finish), which each command reports itself.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, TextIO

USER_ERROR_EXIT = 2


class UserError(Exception):
    """Base of every error a user can cause; the message names the file, field or value."""

    exit_code = USER_ERROR_EXIT


def report(exc: UserError, stream: Optional[TextIO] = None,
           redact: Callable[[str], str] = lambda line: line) -> int:
    """Print `error: LINE` for each line of `exc` (through `redact`, which strips secrets); return its exit code."""
    stream = sys.stderr if stream is None else stream
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(redact(f"error: {line}"), file=stream)
    return exc.exit_code
