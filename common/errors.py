"""One error contract for every CLI (`lensops ...`, `lensops edge ...`, `python -m training.train`, the
pipeline stages, `python -m benchmarks`):

- `UserError`: something the user can fix (a file, field or value that is wrong or missing, a name that
  is not registered, a service that does not answer). The command prints one `error: ...` line per line
  of the message on stderr and exits USER_ERROR_EXIT (2, argparse's code for a bad command line; the
  systemd unit does not restart on it).
- `RunFailed`: the input was fine but the work the command started failed (a SageMaker job that failed
  or was stopped). Printed the same way; exit RUN_FAILED_EXIT (1).
- Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, TextIO, Union

USER_ERROR_EXIT = 2
RUN_FAILED_EXIT = 1


class UserError(Exception):
    """Base of every error a user can cause; the message names the file, field or value."""

    exit_code = USER_ERROR_EXIT


class RunFailed(Exception):
    """The work a command started failed for a reason outside its input; the message names it."""

    exit_code = RUN_FAILED_EXIT


CLI_ERRORS = (UserError, RunFailed)  # what a CLI's main() prints (`print_error`) instead of a traceback


def print_error(
    exc: Union[UserError, RunFailed], stream: Optional[TextIO] = None, redact: Callable[[str], str] = lambda line: line
) -> int:
    """Print `error: LINE` on `stream` (stderr) for each line of `exc`, each passed through `redact`
    (which strips secrets); return the exit code the CLI ends with."""
    stream = sys.stderr if stream is None else stream
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(redact(f"error: {line}"), file=stream)
    return exc.exit_code
