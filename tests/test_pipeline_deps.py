"""dvc.yaml: each stage's deps list exactly the project .py files its command runs, and its params keys exist.

Static (ast, DVC's own dvc.yaml parser): nothing is trained or run. `python -m pipelines.stage_deps` prints
the code deps each stage should have (docs/architecture.md, "Pipeline dependencies").
"""

import shlex
from pathlib import Path

import pytest
import yaml
from dvc.dependency.param import ParamsDependency

from pipelines import stage_deps
from pipelines.stage_deps import ROOT, closure, entry_points, is_code_dep

SHARED_SECTIONS = ("data", "models", "pipeline")  # each stage reads a part of these, never the whole


@pytest.fixture(scope="module")
def stages():
    found = stage_deps.stages()
    assert found, "no stages in dvc.yaml"
    return found


def test_each_stage_lists_exactly_the_code_it_runs(stages):
    problems = []
    for stage in stages:
        runs = set(closure(entry_points(stage.cmd)))
        listed = {d.def_path for d in stage.deps if not isinstance(d, ParamsDependency) and is_code_dep(d.def_path)}
        problems += [f"{stage.addressing}: runs {path}, missing from its deps" for path in sorted(runs - listed)]
        problems += [
            f"{stage.addressing}: deps list {path}, which it does not run"
            + (" (a code folder: list its files)" if (ROOT / path).is_dir() else "")
            for path in sorted(listed - runs)
        ]
    assert not problems, (
        "\n".join(problems) + "\n(`python -m pipelines.stage_deps STAGE` prints the code deps a stage should have)"
    )


def test_entry_points_are_the_handlers_the_clis_dispatch_to(stages):
    """ENTRY_POINTS (what the closure follows into the CLIs) against the CLIs' own argument parsers."""
    from lensops import cli as lensops_cli
    from pipelines import cli as pipelines_cli

    for stage in stages:
        words = shlex.split(stage.cmd)
        if words[0] != "lensops":
            continue
        args, rest = lensops_cli.build_parser().parse_known_args(words[1:])
        chain = ["lensops.cli:main", f"lensops.cli:{args.func.__name__}"]
        if args.func is lensops_cli._pipeline:  # hands its arguments over to pipelines.cli unchanged
            handler = pipelines_cli.build_parser().parse_args([args.command, *rest]).func
            chain += ["pipelines.cli:main", f"pipelines.cli:{handler.__name__}"]
        assert list(entry_points(stage.cmd)) == chain, stage.addressing


def test_params_keys_exist_and_are_not_whole_shared_sections(stages):
    problems = []
    for stage in stages:
        for dep in (d for d in stage.deps if isinstance(d, ParamsDependency)):
            doc = yaml.safe_load((ROOT / dep.def_path).read_text())
            for key in dep.params:
                value = doc
                for part in key.split("."):
                    value = value.get(part, KeyError) if isinstance(value, dict) else KeyError
                if value is KeyError:
                    problems.append(f"{stage.addressing}: params key {key} is not in {dep.def_path}")
                if key in SHARED_SECTIONS:
                    problems.append(f"{stage.addressing}: lists all of `{key}`; list the keys it reads")
    assert not problems, "\n".join(problems)


def _write(root: Path, files: dict) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_closure_follows_a_cli_into_the_chosen_handler_only(tmp_path):
    _write(
        tmp_path,
        {
            "lensops/__init__.py": "",
            "lensops/cli.py": "import sys\n\n"
            "def _one(args):\n    from training.one import run\n    return _helper()\n\n"
            "def _helper():\n    from training import helper\n\n"
            "def _two(args):\n    from training.two import run\n",
            "training/__init__.py": "",
            "training/one.py": "from .shared import x\n\ndef run():\n    from training import lazy\n",
            "training/two.py": "",
            "training/shared.py": "x = 1\n",
            "training/lazy.py": "",
            "training/helper.py": "",
            "training/notebook.py": "from training.one import run\n",  # runs for no command: a file split
        },
    )
    assert closure(["lensops.cli:_one"], tmp_path) == [
        "lensops/__init__.py",
        "lensops/cli.py",
        "training/__init__.py",
        "training/helper.py",
        "training/lazy.py",
        "training/one.py",
        "training/shared.py",
    ]
    # `python -m MODULE`: the whole module runs (imports inside its functions too), not what imports it
    assert closure(["training.one"], tmp_path) == [
        "training/__init__.py",
        "training/lazy.py",
        "training/one.py",
        "training/shared.py",
    ]


def test_write_puts_back_what_a_stage_runs_and_keeps_the_rest(tmp_path):
    """`python -m pipelines.stage_deps --write` on a copy of the project with a stage's code deps edited."""
    import shutil
    import subprocess
    import sys

    for item in ("dvc.yaml", "params.yaml", *stage_deps.PACKAGES):
        (tmp_path / item).symlink_to(ROOT / item) if item in stage_deps.PACKAGES else shutil.copy(ROOT / item, tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    original = (tmp_path / "dvc.yaml").read_text()
    edited = original.replace("      - training/datasets/synth.py\n", "      - training/notebook.py\n", 1)
    assert edited != original
    (tmp_path / "dvc.yaml").write_text(edited)
    assert stage_deps.write_code_deps(tmp_path) == ["prepare_classification"]
    assert (tmp_path / "dvc.yaml").read_text() == original
    assert stage_deps.write_code_deps(tmp_path) == []
