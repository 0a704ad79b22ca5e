"""Execute the notebooks (papermill) and keep their committed outputs current.

`python -m lensops.notebooks` (`make notebooks`, after `make demo`) runs every notebook top to bottom
in the project root with its own default parameters (the demo data) and writes it back in place, with
the digest of its code cells in its metadata; tests/notebooks checks that the committed notebooks carry
the digest of their current code, so a notebook edited without being re-run fails CI. Name notebooks
to run only those; `-p NAME VALUE` overrides a parameter (YAML value), `--out DIR` writes the executed
copies there instead of in place. The kernel is the project's environment ("python3" of its venv).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import yaml

from common.errors import CLI_ERRORS, RunFailed, UserError, print_error
from common.files import write_json

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
# In the order of the loop, after `make demo` (4_ship ships the model 2_train_and_finetune trains; notebooks/README.md).
NOTEBOOKS = ("1_data", "2_train_and_finetune", "3_experiments", "4_ship", "5_sagemaker", "6_from_the_device")
DIGEST_KEY = "lensops"  # notebook metadata: {"code_sha256": ..., "parameters": ..., "seconds": ...}


class NotebookError(UserError):
    """A notebook that does not exist, or one edited while it ran; the message names it."""


class NotebookFailed(RunFailed):
    """A notebook whose run failed; the message names it, the failing cell and its error."""


def code_digest(notebook: dict) -> str:
    """SHA-256 over the code cells' sources, in order (outputs, counts, metadata and the cell papermill
    injects for overridden parameters left out)."""
    digest = hashlib.sha256()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and "injected-parameters" not in cell.get("metadata", {}).get("tags", []):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            digest.update(source.encode() + b"\0")
    return digest.hexdigest()


def path_of(name: str) -> Path:
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    if name not in NOTEBOOKS or not path.is_file():
        raise NotebookError(f"{name}: no such notebook (known: {', '.join(NOTEBOOKS)})")
    return path


def execute(name: str, out: Path, parameters: Optional[dict] = None, cwd: Path = ROOT, timeout_s: int = 1800) -> dict:
    """Run notebook `name` top to bottom in `cwd` with `parameters` injected after its `parameters`
    cell (papermill) and write the executed notebook to `out`, stamped with its code digest.
    Returns the executed notebook (nbformat JSON). Errors: NotebookFailed naming the notebook and cell."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    source = path_of(name)
    digest = code_digest(json.loads(source.read_text()))  # the code that runs (an edit meanwhile is not it)
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "TQDM_MININTERVAL": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits it (`make` exports MPLBACKEND=Agg for the stages)
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(source),
            str(out),
            parameters=parameters or {},
            cwd=str(cwd),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout_s,
        )
    except PapermillExecutionError as err:
        raise NotebookFailed(
            f"{source.name}: cell {err.exec_count} raised {err.ename}: {err.evalue} "
            f"(the executed copy with the traceback: {out})"
        ) from None
    except (CellTimeoutError, DeadKernelError) as err:
        raise NotebookFailed(f"{source.name}: {type(err).__name__}: {err}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    notebook = json.loads(out.read_text())
    if code_digest(json.loads(source.read_text())) != digest:
        raise NotebookError(
            f"{source.name} changed while it ran: its outputs would not be its code's (the executed copy: {out})"
        )
    notebook["metadata"][DIGEST_KEY] = {
        "code_sha256": digest,
        "parameters": parameters or {},
        "seconds": round(time.monotonic() - started, 1),
    }
    write_json(out, notebook, indent=1, ensure_ascii=False)
    return notebook


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lensops.notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"notebooks to run (default: all: {', '.join(NOTEBOOKS)})")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a parameter of the notebooks' `parameters` cell (YAML value)",
    )
    parser.add_argument("--out", type=Path, help="write executed copies here (default: in place)")
    args = parser.parse_args(argv)
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    if args.out is not None and args.out.resolve() == NOTEBOOK_DIR.resolve():
        args.out = None  # that is in place
    try:
        if parameters and args.out is None:
            raise NotebookError("-p runs need --out DIR: the notebooks keep the outputs of their default parameters")
        for name in args.names or NOTEBOOKS:
            path_of(name)
        for name in args.names or NOTEBOOKS:
            out = (args.out / f"{name}.ipynb") if args.out else path_of(name)
            # in place: the executed copy replaces the notebook only once the whole run succeeded
            target = out if args.out else out.with_name(f".{name}.running.ipynb")
            notebook = execute(name, target, parameters)
            if not args.out:
                os.replace(target, out)
            print(f"{name}: executed in {notebook['metadata'][DIGEST_KEY]['seconds']} s -> {out}", flush=True)
    except CLI_ERRORS as exc:
        return print_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
