"""The project files each `dvc.yaml` stage runs: its command's import closure within the project packages.

A stage lists exactly these files as deps (and no code folder), so moving code between files a stage does
not run reruns nothing. The closure is computed from the source with `ast`; no project module is imported:

- `python -m MODULE ...` runs MODULE: the file and, for every project module it reaches, all of that
  module's imports (top-level and inside functions: any of its functions may run), and the `__init__.py`
  of each package on the way.
- `lensops ...` goes through the CLIs, which import a subcommand's modules inside its handler function.
  `ENTRY_POINTS` names the handlers a command runs through; of a CLI module only its top-level imports and
  the imports in those handlers (and the module's functions they call) count. tests/test_pipeline_deps.py
  checks `ENTRY_POINTS` against the CLIs' own argument parsers.

`python -m pipelines.stage_deps` prints, per stage, the code deps it should have (docs/architecture.md,
"Pipeline dependencies").
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence

from pipelines.stages import STAGES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("training", "pipelines", "edge", "lensops", "common")

_LENSOPS = ("lensops.cli:main",)
_PIPELINES = _LENSOPS + ("lensops.cli:_pipeline", "pipelines.cli:main")
# A command's first words -> the "module:function" handlers it runs through (the longest match wins).
_SUBCOMMAND = {"package": ("package", "build")}  # a stage whose dvc command is a subcommand of its own
ENTRY_POINTS = {
    ("lensops", "data", "synth"): _LENSOPS + ("lensops.cli:_data_synth",),
    # each pipeline stage runs through pipelines.cli's cmd_<stage>
    **{("lensops", *_SUBCOMMAND.get(name, (name,))): _PIPELINES + (f"pipelines.cli:cmd_{name}",) for name in STAGES},
}
# Modules that import per subcommand: reached by an import, only their top-level imports count.
DISPATCHERS = frozenset(entry.split(":")[0] for chain in ENTRY_POINTS.values() for entry in chain)


def module_file(module: str, root: Path = ROOT) -> Optional[Path]:
    """The file of a project module (`a/b.py` or `a/b/__init__.py`), or None outside the project packages."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _walk(node: ast.AST, into_functions: bool) -> Iterable[ast.AST]:
    """`ast.walk`, optionally without entering function bodies (code that runs only when called)."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        for child in ast.iter_child_nodes(current):
            if into_functions or not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                todo.append(child)


def _imported(nodes: Iterable[ast.AST], module: str, root: Path) -> set[str]:
    """Project modules the import statements among `nodes` (code of `module`) load."""
    package = module if root.joinpath(*module.split("."), "__init__.py").is_file() else module.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}", root))
    return {name for name in found if module_file(name, root)}


def _function_nodes(module: str, function: str, root: Path) -> list[ast.AST]:
    """The code of `function` in `module` and of the module's top-level functions it calls, transitively."""
    tree = _parse(module_file(module, root))
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if function not in defs:
        raise LookupError(f"{module} has no top-level function {function}")
    seen, todo = {function}, [function]
    while todo:
        for node in ast.walk(defs[todo.pop()]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defs:
                if node.func.id not in seen:
                    seen.add(node.func.id)
                    todo.append(node.func.id)
    return [node for name in seen for node in ast.walk(defs[name])]


def closure(entries: Sequence[str], root: Path = ROOT) -> list[str]:
    """Project files (paths relative to `root`) that run for the entry points `entries`: "module" (run as
    `python -m module`) or "module:function" (a CLI handler)."""
    files: set[str] = set()
    done: set[str] = set()
    todo: list[str] = []

    def add(module: str, nodes: Iterable[ast.AST]) -> None:
        path = module_file(module, root)
        files.add(path.relative_to(root).as_posix())
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages on the way
        todo.extend(_imported(nodes, module, root))

    for entry in entries:
        module, _, function = entry.partition(":")
        if module_file(module, root) is None:
            raise LookupError(f"{entry}: no such project module")
        done.add(module)
        tree = _parse(module_file(module, root))
        if function:  # the module's top level runs too (it is imported), its other functions need not
            add(module, [*_walk(tree, into_functions=False), *_function_nodes(module, function, root)])
        else:
            add(module, _walk(tree, into_functions=True))
    while todo:
        module = todo.pop()
        if module not in done:
            done.add(module)
            add(module, _walk(_parse(module_file(module, root)), into_functions=module not in DISPATCHERS))
    return sorted(files)


def entry_points(cmd: str) -> tuple[str, ...]:
    """The entry points of a stage command: `python -m MODULE ...` -> (MODULE,); `lensops ...` -> its
    `ENTRY_POINTS` handlers."""
    words = shlex.split(cmd)
    if len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1] == "-m":
        main = f"{words[2]}.__main__"  # `python -m PACKAGE` runs its __init__.py and __main__.py
        return (words[2], main) if module_file(main) else (words[2],)
    matches = [key for key in ENTRY_POINTS if tuple(words[: len(key)]) == key]
    if not matches:
        raise LookupError(
            f"`{cmd}`: unknown entry point (a `python -m MODULE` command, or add its handlers to "
            "pipelines.stage_deps.ENTRY_POINTS)"
        )
    return ENTRY_POINTS[max(matches, key=len)]


def is_code_dep(path: str, root: Path = ROOT) -> bool:
    """Whether a stage dep is project code: a `.py` file or a folder under a project package."""
    top = Path(path).parts[0] if Path(path).parts else ""
    return top in PACKAGES and (path.endswith(".py") or (root / path).is_dir())


def stages(root: Path = ROOT) -> list:
    """The stages of `root`/dvc.yaml, `foreach` expanded (DVC's own parser), in file order."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [s for s in repo.index.stages if Path(s.path) == root / "dvc.yaml"]


_LIST_ITEM = re.compile(r"^(\s+)- (\S+)$")
_STAGE = re.compile(r"^  ([A-Za-z0-9_-]+):\s*$")


def write_code_deps(root: Path = ROOT) -> list[str]:
    """Rewrite each stage's code deps in `root`/dvc.yaml to its closure (the run of project `.py` lines in
    its deps; everything else, comments included, is kept); returns the names of the stages changed.

    A `foreach` stage gets one list for all its items; LookupError when the items run different code."""
    wanted: dict[str, list[str]] = {}
    for stage in stages(root):
        name, deps = stage.name.split("@")[0], closure(entry_points(stage.cmd), root)
        if wanted.setdefault(name, deps) != deps:
            raise LookupError(f"dvc.yaml: the items of `foreach` stage {name} run different code")
    lines = (root / "dvc.yaml").read_text().split("\n")
    out: list[str] = []
    changed: list[str] = []
    current, i = None, 0
    while i < len(lines):
        stage = _STAGE.match(lines[i])
        current = stage.group(1) if stage else current
        item = _LIST_ITEM.match(lines[i])
        if current in wanted and item and is_code_dep(item.group(2), root):
            end = i
            while end < len(lines) and (m := _LIST_ITEM.match(lines[end])) and is_code_dep(m.group(2), root):
                end += 1
            new = [f"{item.group(1)}- {path}" for path in wanted[current]]
            if new != lines[i:end]:
                changed.append(current)
            out.extend(new)
            i = end
            continue
        out.append(lines[i])
        i += 1
    if changed:
        from common.files import write_text

        write_text(root / "dvc.yaml", "\n".join(out))
    return changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print, per dvc.yaml stage, the code deps it should have (in YAML list form); --write puts them there."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.stage_deps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", nargs="*", help="stage names (e.g. train_detector, evaluate@classifier); default all")
    parser.add_argument(
        "--write",
        action="store_true",
        help="rewrite every stage's code deps in dvc.yaml (other lines and comments kept)",
    )
    args = parser.parse_args(argv)
    if args.write:
        changed = write_code_deps()
        print(f"dvc.yaml: code deps of {', '.join(changed)} rewritten" if changed else "dvc.yaml: up to date")
        return 0
    for stage in stages():
        if args.stage and not {stage.addressing, stage.addressing.split("@")[0]} & set(args.stage):
            continue
        print(f"{stage.addressing}:  # {stage.cmd}")
        for path in closure(entry_points(stage.cmd)):
            print(f"  - {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
