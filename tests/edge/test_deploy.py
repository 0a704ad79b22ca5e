"""The deployment files: the systemd unit passes `systemd-analyze verify`; the Greengrass recipe is a
well-formed v2 recipe that installs lensops[edge] and runs `lensops edge run --config {configuration:/configPath}`."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy/systemd/lensops-edge.service"
RECIPE = ROOT / "deploy/greengrass/recipe.yaml"
GG_CONFIG = ROOT / "deploy/greengrass/device.yaml"
NUCLEUS_ENV = {"AWS_IOT_THING_NAME", "AWS_REGION", "AWS_DEFAULT_REGION", "GG_ROOT_CA_PATH", "GGC_VERSION"}


def unit_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_runs_the_runner_with_a_state_folder_and_restarts():
    unit = unit_sections()
    service = unit["Service"]
    assert re.search(r"/lensops edge run --config \S+\.yaml --state-dir /var/lib/lensops$", service["ExecStart"])
    assert service["StateDirectory"] == "lensops" and service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "always" and service["RestartPreventExitStatus"] == "2", "a bad config is not retried"
    assert "network-online.target" in unit["Unit"]["After"] and unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    # ExecStart must name an existing executable for `verify`: point it at this environment's `lensops`
    lensops = Path(sys.executable).with_name("lensops")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/lensops/bin/lensops", str(lensops)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr
    # and the check is real: an unknown key is reported
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("[Service]", "[Service]\nRestartt=always"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "Restartt" in done.stdout + done.stderr


def test_greengrass_recipe_is_a_v2_recipe_that_installs_and_runs_the_runner():
    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert re.fullmatch(r"[A-Za-z0-9.\-_]+", recipe["ComponentName"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", recipe["ComponentVersion"])
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    (manifest,) = recipe["Manifests"]
    assert manifest["Platform"]["os"] == "linux"
    lifecycle = manifest["Lifecycle"]
    install, run = lifecycle["Install"]["Script"], lifecycle["Run"]["Script"]
    assert "[edge]" in install and "-m venv" in install, install
    assert "lensops edge run --config {configuration:/configPath}" in run, run
    assert lifecycle["Run"]["RequiresPrivilege"] is False, "the runner does not run as root"
    # every {configuration:/key} the recipe uses has a default
    used = set(re.findall(r"\{configuration:/(\w+)\}", RECIPE.read_text()))
    assert used and used <= set(defaults), used - set(defaults)
    # the artifact is unpacked where the install step looks for it
    (artifact,) = manifest["Artifacts"]
    name = Path(artifact["URI"]).name.removesuffix(".zip")
    assert artifact["Unarchive"] == "ZIP" and f"{{artifacts:decompressedPath}}/{name}/" in install
    # the device config for Greengrass reads only what the recipe or the nucleus puts in the environment
    referenced = set(re.findall(r"\$\{(\w+)\}", GG_CONFIG.read_text()))
    assert referenced <= set(lifecycle["Setenv"]) | NUCLEUS_ENV, referenced - set(lifecycle["Setenv"]) - NUCLEUS_ENV
    assert lifecycle["Setenv"]["LENSOPS_DEVICE_ID"].startswith("{iot:thingName}"), "the thing name from the nucleus"
