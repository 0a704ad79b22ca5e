"""`lensops fleet rollout` against a real Mosquitto, a real MLflow registry and simulated devices (real runners):
rings move one after the other, a bad canary is rolled back on its ring and never reaches the others, a killed
controller resumes, and bad input moves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from edge.registry import MlflowRegistryWriter
from edge.rings import ring_of
from pipelines.fleet.cli import main as fleet_main
from pipelines.fleet.mqtt import read_retained
from tests.edge.conftest import mosquitto  # noqa: F401 (fixture)
from tests.edge.packages import relabel, rewrite, tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import registry_template  # noqa: F401 (fixture)
from tests.edge.runner_setup import CLASSIFIER, MODEL, copy_registry
from tests.pipelines.fleet.rollout_setup import DEVICES, FLEET, setup_report, slow_onnx, start_fleet, write_params

RINGS = [10, 50, 100]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def fleet_v1(registry_template, tiny_packages, mosquitto, tmp_path):
    """12 devices serving v1 (production) at 4 fps; yields (registry, fleet, watcher, params path)."""
    registry = copy_registry(registry_template, tmp_path / "registry")
    v1 = registry.promote("v1")
    fleet, watcher = start_fleet(tmp_path / "fleet", registry.uri, mosquitto.url, tiny_packages.public_key)
    try:
        on_v1 = watcher.wait(lambda: len(watcher.activated(v1)) == len(DEVICES), 120)
        assert on_v1, f"setup: not every device on v1: {setup_report(fleet, watcher, v1)}"
        yield registry, fleet, watcher, write_params(tmp_path, registry.uri, mosquitto.url)
    finally:
        fleet.stop()
        watcher.close()


def _state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "rollout" / MODEL / "rollout.json").read_text())


def _rollout(tmp_path: Path, params: Path, *extra: str) -> int:
    state_dir = str(tmp_path / "rollout")
    return fleet_main(["rollout", "--model", MODEL, "--params", str(params), "--state-dir", state_dir, *extra])


def _wall(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_a_healthy_candidate_moves_ring_by_ring_and_then_the_alias(fleet_v1, tmp_path, mosquitto):
    registry, fleet, watcher, params = fleet_v1
    v2 = registry.versions["v2"]

    # when: v2 is rolled out over rings of 10%, 50% and 100%
    code = _rollout(tmp_path, params, "--version", v2)

    # then: completed; production names v2; every device serves it
    state = _state(tmp_path)
    assert code == 0, state["decisions"]
    assert state["phase"] == "completed"
    assert [d["action"] for d in state["decisions"]] == [
        "started",
        "advanced",
        "started",
        "advanced",
        "started",
        "completed",
    ]
    assert MlflowRegistryWriter(registry.uri).alias_version(MODEL, "production") == v2
    assert watcher.wait(lambda: len(watcher.activated(v2)) == len(DEVICES), 60)
    # and: no device moved before its own ring started (the others did not move)
    started = [_wall(d["ts"]) for d in state["decisions"] if d["action"] == "started"]
    for device, at in watcher.activated(v2, wall=True).items():
        assert at >= started[ring_of(device, RINGS)], f"{device} (ring {ring_of(device, RINGS)}) moved early"
    # and: every decision judged the devices of the rings so far, all healthy
    upto = [sum(ring_of(d, RINGS) <= ring for d in DEVICES) for ring in range(len(RINGS))]
    assert [len(d["devices"]) for d in state["decisions"] if d["action"] != "started"] == upto
    # and: the report is written (JSON + Markdown) and published, retained
    assert "completed" in (tmp_path / "rollout" / MODEL / "rollout.md").read_text()
    retained = read_retained(mosquitto.url, f"lensops/fleets/{FLEET}/rollout")
    assert json.loads(retained[f"lensops/fleets/{FLEET}/rollout"])["phase"] == "completed"


@pytest.mark.parametrize("bad", ["nan", "slow"])
def test_a_bad_canary_is_rolled_back_on_its_ring_and_never_reaches_the_others(fleet_v1, tmp_path, tiny_packages, bad):
    registry, fleet, watcher, params = fleet_v1
    if bad == "nan":  # loads, but its warm-up outputs NaN: every canary device rejects it
        candidate = registry.versions["nan"]
    else:  # passes staging; ~24 chained 512x512 products per frame: over the devices' 30 ms budget
        slow = rewrite(tiny_packages.detector, tmp_path / "slow", "onnx-fp32", slow_onnx, key=tiny_packages.private_key)
        candidate = MlflowRegistryWriter(registry.uri).register(slow.archive, slow.manifest, slow.sha256, {}).version
        params = write_params(tmp_path, registry.uri, fleet.spec["mqtt_url"], max_latency_p99_ms=30, hold_s=6)

    # when: the bad version is rolled out
    code = _rollout(tmp_path, params, "--version", candidate)

    # then: rolled back on ring 0; production still names v1; exit 1 naming why
    state = _state(tmp_path)
    assert code == 1 and state["phase"] == "rolled_back" and state["ring"] == 0, state["decisions"]
    assert MlflowRegistryWriter(registry.uri).alias_version(MODEL, "production") == registry.versions["v1"]
    # and: no device outside ring 0 ever heard of the candidate
    outside = [d for d in DEVICES if ring_of(d, RINGS) > 0]
    assert all(candidate not in watcher.versions_seen(d) for d in outside)
    # and: the whole fleet serves v1 again
    v1 = registry.versions["v1"]
    assert watcher.wait(lambda: set(watcher.serving(MODEL).values()) == {v1}, 60), watcher.serving(MODEL)


def test_a_canary_whose_outputs_differ_from_the_champion_in_shadow_is_rolled_back(tiny_packages, mosquitto, tmp_path):
    # given: 12 devices serving the tiny classifier with shadow mode on; the candidate reports every label
    # rotated by one (it stages fine: its golden samples are rotated too), so it never agrees with the champion
    writer = MlflowRegistryWriter(f"sqlite:///{tmp_path / 'mlflow.db'}")
    champion_pkg = tiny_packages.classifier
    candidate_pkg = relabel(champion_pkg, tmp_path / "relabelled", tiny_packages.private_key)
    champion = writer.register(champion_pkg.archive, champion_pkg.manifest, champion_pkg.sha256, {}).version
    candidate = writer.register(candidate_pkg.archive, candidate_pkg.manifest, candidate_pkg.sha256, {}).version
    writer.set_alias(CLASSIFIER, "production", champion)
    fleet, watcher = start_fleet(
        tmp_path / "fleet",
        writer.uri,
        mosquitto.url,
        tiny_packages.public_key,
        model=CLASSIFIER,
        shadow={"rate": 0.5, "report_s": 0.5},
    )
    try:
        on_it = watcher.wait(lambda: len(watcher.activated(champion)) == len(DEVICES), 120)
        assert on_it, f"setup: not every device on the champion: {setup_report(fleet, watcher, champion)}"
        params = write_params(
            tmp_path, writer.uri, mosquitto.url, min_shadow_agreement=0.9, min_shadow_frames=4, shadow_report_s=1
        )

        # when: it is rolled out
        code = fleet_main(
            ["rollout", "--model", CLASSIFIER, "--version", candidate, "--params", str(params)]
            + ["--state-dir", str(tmp_path / "rollout")]
        )

        # then: ring 0 served it, every device stayed healthy, but the shadow agreement rolled it back there
        state = json.loads((tmp_path / "rollout" / CLASSIFIER / "rollout.json").read_text())
        last = state["decisions"][-1]
        assert code == 1 and state["phase"] == "rolled_back" and state["ring"] == 0, state["decisions"]
        assert all(d["healthy"] for d in last["devices"]), last
        assert any("shadow" in r and "agreement 0.0000 is below the 0.9" in r for r in last["reasons"]), last
        assert all(candidate not in watcher.versions_seen(d) for d in DEVICES if ring_of(d, RINGS) > 0)
        assert watcher.wait(lambda: set(watcher.serving(CLASSIFIER).values()) == {champion}, 60)
    finally:
        fleet.stop()
        watcher.close()


def test_a_killed_controller_resumes_where_it_was(fleet_v1, tmp_path):
    registry, fleet, watcher, params = fleet_v1
    v2 = registry.versions["v2"]
    command = [sys.executable, "-m", "lensops.cli", "fleet", "rollout", "--model", MODEL, "--params", str(params)]
    command += ["--state-dir", str(tmp_path / "rollout")]

    # given: a controller killed (SIGKILL) while ring 1 holds
    child = subprocess.Popen([*command, "--version", v2], cwd=tmp_path, env=os.environ.copy())
    state_file = tmp_path / "rollout" / MODEL / "rollout.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state_file.exists() and _state(tmp_path)["ring"] == 1):
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert _state(tmp_path)["ring"] == 1 and _state(tmp_path)["phase"] in ("starting", "holding")

    # when: the same command runs again without --version
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)

    # then: it resumed at ring 1 (ring 0 was not started again) and completed
    state = _state(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming rollout" in done.stderr
    assert [d["ring"] for d in state["decisions"] if d["action"] == "started"] == [0, 1, 2]
    assert state["phase"] == "completed"


def test_bad_input_moves_nothing(registry_template, mosquitto, tmp_path, capsys):
    registry = copy_registry(registry_template, tmp_path / "registry")
    v1 = registry.promote("v1")
    writer = MlflowRegistryWriter(registry.uri)

    def refused(params: Path, *extra: str) -> str:
        capsys.readouterr()
        assert _rollout(tmp_path, params, *extra) == 2
        return capsys.readouterr().err

    # a ring spec that does not add up
    params = write_params(tmp_path, registry.uri, mosquitto.url, rings=[5, 25, 90])
    error = refused(params, "--version", registry.versions["v2"])
    assert "pipeline.rollout.rings" in error and "the last ring must be 100" in error
    params = write_params(tmp_path, registry.uri, mosquitto.url, rings=[25, 5, 100])
    assert "must increase" in refused(params, "--version", registry.versions["v2"])
    # a version that is not registered
    params = write_params(tmp_path, registry.uri, mosquitto.url)
    assert "has no registered version '99'" in refused(params, "--version", "99")
    # a broker that cannot be reached
    unreachable = write_params(tmp_path, registry.uri, "mqtt://127.0.0.1:9")
    assert "unreachable" in refused(unreachable, "--version", registry.versions["v2"])
    # nothing to resume
    assert "no rollout of tiny-detector in progress" in refused(params)

    # and: nothing moved: production still v1, no ring alias, no ring notice, no state file
    assert writer.alias_version(MODEL, "production") == v1
    assert writer.alias_version(MODEL, "production-ring-0") is None
    assert read_retained(mosquitto.url, f"lensops/fleets/{FLEET}/#") == {}
    assert not (tmp_path / "rollout" / MODEL / "rollout.json").exists()


def test_a_controller_killed_between_a_decision_and_its_notices_publishes_them_when_run_again(
    registry_template, mosquitto, tmp_path
):
    from pipelines.fleet.rollout_state import RolloutState, Target, now_ts

    # given: the state of a completed rollout whose notices were never acknowledged (the process died between)
    registry = copy_registry(registry_template, tmp_path / "registry")
    registry.promote("v2")
    sha = "0" * 64
    state = RolloutState(
        id="tiny-detector-2-x",
        model=MODEL,
        alias="production",
        fleet=FLEET,
        topic_prefix="lensops",
        candidate=Target(version=registry.versions["v2"], package_uri="file:///v2", sha256=sha),
        champion=Target(version=registry.versions["v1"], package_uri="file:///v1", sha256=sha),
        rings=RINGS,
        hold_s=4,
        ring=2,
        phase="completed",
        ring_started=now_ts(),
        unpublished=True,
    )
    state_file = tmp_path / "rollout" / MODEL / "rollout.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text(state.model_dump_json(by_alias=True))

    # when: the command runs again without --version
    code = _rollout(tmp_path, write_params(tmp_path, registry.uri, mosquitto.url))

    # then: the fleet notice and every ring notice (naming the base alias) are retained; the state says so
    retained = read_retained(mosquitto.url, f"lensops/fleets/{FLEET}/#")
    assert code == 0
    assert json.loads(retained[f"lensops/fleets/{FLEET}/deployment"])["version"] == registry.versions["v2"]
    rings = [json.loads(retained[f"lensops/fleets/{FLEET}/rings/{i}/deployment"]) for i in range(3)]
    assert [(r["alias"], r["ring"], r["share"]) for r in rings] == [
        ("production", 0, [0, 10]),
        ("production", 1, [10, 50]),
        ("production", 2, [50, 100]),
    ]
    assert _state(tmp_path)["unpublished"] is False
