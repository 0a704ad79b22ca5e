"""One error contract for every CLI (common.errors): a user error prints `error: ...` lines and exits 2; a
failed run exits 1; anything else is a bug and keeps its traceback. Every error class the library raises
for users belongs to the one family (common.errors.UserError)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import common
import edge
import lensops
import pipelines
import training
from common.errors import USER_ERROR_EXIT, RunFailed, UserError
from lensops.cli import main as lensops_main

MISSING = "/no/such/lensops-path"
# Errors that never reach a user: raised and handled inside the library.
INTERNAL = {
    "PayloadTooLarge": "edge.mqtt.payloads: the publisher drops the message and counts it",
    "ModelFailure": "edge.predictor: the model manager rolls back to the previous version",
    "_DryRun": "pipelines.sagemaker.job: stops the SDK before it sends a request (--dry-run)",
}


@pytest.mark.parametrize(
    "argv, named",
    [
        (["data", "check", MISSING, "--task", "classification"], MISSING),
        (["train", "--params", f"{MISSING}.yaml", "--section", "train_classifier"], MISSING),
        (["optimize", "--params", f"{MISSING}.yaml", "--model", "detector"], MISSING),
        (["edge", "run", "--config", f"{MISSING}.yaml"], MISSING),
        (["sagemaker", "train", "--data", MISSING], "--role"),
    ],
    ids=["data check", "train", "pipeline stage", "edge run", "sagemaker train"],
)
def test_a_user_error_is_one_named_error_and_exit_2(argv, named, capsys):
    assert lensops_main(argv) == USER_ERROR_EXIT
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines and named in err and "Traceback" not in err, err


def test_the_notebook_runner_keeps_the_contract(capsys):
    from lensops.notebooks import main as notebooks_main

    assert notebooks_main(["nosuch"]) == USER_ERROR_EXIT
    assert capsys.readouterr().err.startswith("error: nosuch: no such notebook")


@pytest.mark.parametrize(
    "target, argv",
    [
        ("lensops.cli._data_check", ["data", "check", MISSING, "--task", "classification"]),
        ("pipelines.cli.load_params", ["optimize", "--model", "detector"]),
        ("edge.cli.load_config", ["edge", "check", "--config", f"{MISSING}.yaml"]),
    ],
)
def test_anything_else_is_a_bug_and_keeps_its_traceback(monkeypatch, target, argv):
    def bug(*args, **kwargs):
        raise KeyError("a bug")

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, bug)
    with pytest.raises(KeyError, match="a bug"):
        lensops_main(argv)


def _error_classes():
    for package in (common, training, pipelines, edge, lensops):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.startswith(("pipelines.sagemaker.pipeline",)):
                continue  # imports the SageMaker SDK at module level (tested in tests/pipelines/sagemaker)
            module = importlib.import_module(info.name)
            for name, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == info.name and issubclass(cls, Exception):
                    yield info.name, name, cls


def test_every_error_the_library_defines_is_in_the_one_family():
    stray = [
        f"{module}.{name}"
        for module, name, cls in _error_classes()
        if not issubclass(cls, (UserError, RunFailed)) and name not in INTERNAL
    ]
    assert not stray, f"error classes outside common.errors' family (UserError / RunFailed): {stray}"
