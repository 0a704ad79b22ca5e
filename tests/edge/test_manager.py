"""Model manager against a real MLflow (SQLite) registry holding real tiny packages.

The registry is filled once per module (register = what `lensops register` does) and copied per
test, so each test moves aliases on its own copy. The manager reads through edge.registry.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import jsonschema
import numpy as np
import pytest

from edge.manager import ModelManager, RollbackPolicy
from edge.mqtt.payloads import DEPLOYMENT, load_schema
from edge.package.signing import generate_keypair
from edge.predictor import ModelFailure
from edge.registry import MlflowRegistry, RegistryError, Resolved
from tests.edge.packages import BuiltPackage, perturb_onnx_weights, rewrite, tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_setup import wait_until

pytestmark = pytest.mark.slow  # the packages come from a real (tiny) training run

MODEL = "tiny-classifier"


@dataclass(frozen=True)
class Template:
    db: Path
    versions: dict[str, str]  # role -> registry version
    sha256: dict[str, str]  # role -> archive sha256 the registry holds


@pytest.fixture(scope="module")
def template(tiny_packages, tmp_path_factory) -> Template:
    """One registry with: good (v a), good_b, golden-broken, tampered archive, signed by a stranger."""
    from edge.registry import MlflowRegistryWriter

    root = tmp_path_factory.mktemp("registry")
    packages = tiny_packages
    other_private, other_public = root / "other.pem", root / "other.pub"
    generate_keypair(other_private, other_public)
    roles: dict[str, BuiltPackage] = {
        "good": packages.classifier,
        "good_b": packages.classifier_b,
        "golden_broken": rewrite(
            packages.classifier, root / "golden-broken", "onnx-fp32", perturb_onnx_weights, key=packages.private_key
        ),
        "tampered": rewrite(
            packages.classifier,
            root / "to-tamper",
            "onnx-fp32",
            lambda _: None,
            key=packages.private_key,
            evaluation={"accuracy": 0.7},
        ),
        "stranger": rewrite(
            packages.classifier,
            root / "stranger",
            "onnx-fp32",
            lambda _: None,
            key=other_private,
            evaluation={"accuracy": 0.8},
        ),
    }
    writer = MlflowRegistryWriter(f"sqlite:///{root / 'mlflow.db'}")
    versions, shas = {}, {}
    for role, package in roles.items():
        registered = writer.register(package.archive, package.manifest, package.sha256, {})
        versions[role], shas[role] = registered.version, registered.sha256
        if role == "tampered":  # someone swaps the stored archive for another (valid) package
            stored = Path(unquote(urlparse(registered.uri).path))
            shutil.copyfile(roles["golden_broken"].archive, stored)
    return Template(root / "mlflow.db", versions, shas)


@dataclass
class Setup:
    uri: str
    writer: object
    cache: Path
    events: list[dict]
    versions: dict[str, str]
    public_key: Path

    def manager(self, registry=None, **options) -> ModelManager:
        options.setdefault("public_key", self.public_key)
        return ModelManager(
            registry or MlflowRegistry(self.uri),
            MODEL,
            "production",
            self.cache,
            on_event=self.events.append,
            poll_s=3600,
            **options,
        )

    def promote(self, role: str) -> None:
        self.writer.set_alias(MODEL, "production", self.versions[role])

    def states(self) -> list[tuple[str, str]]:
        return [(e["state"], e["version"]) for e in self.events]


@pytest.fixture
def setup(template, tiny_packages, tmp_path) -> Setup:
    from edge.registry import MlflowRegistryWriter

    shutil.copyfile(template.db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    made = Setup(uri, MlflowRegistryWriter(uri), tmp_path / "cache", [], template.versions, tiny_packages.public_key)
    yield made
    schema = load_schema(DEPLOYMENT)
    for event in made.events:  # every event is a valid deployment payload once the publisher adds these
        jsonschema.validate({"schema": DEPLOYMENT, "device": "cam-01", **event}, schema)


def frame() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def test_activates_the_promoted_candidate_then_follows_the_alias(setup):
    # given a registry where nothing is in production yet
    manager = setup.manager()
    assert manager.boot() is None and manager.current() is None, "no production alias yet"
    assert "production" in manager.last_error
    # when the candidate is promoted
    setup.promote("good")
    event = manager.poll_once()
    # then it is downloaded, verified and activated, and serves with the registry's version
    good = setup.versions["good"]
    assert setup.states() == [("downloading", good), ("verifying", good), ("activated", good)], setup.states()
    assert event["variant"] == manager.current().variant
    first = manager.current()
    assert first.predict(frame()).model["version"] == good
    assert manager.poll_once() is None, "same version: nothing to do"
    # when the alias moves to the next version
    setup.promote("good_b")
    manager.poll_once()
    # then the next frame gets the new predictor; the old one still works for a frame in flight
    assert manager.current().version == setup.versions["good_b"]
    assert setup.states()[-1] == ("activated", setup.versions["good_b"])
    assert first.predict(frame()).model["version"] == good
    pointer = json.loads((setup.cache / MODEL / "current.json").read_text())
    assert pointer["current"]["version"] == setup.versions["good_b"] and pointer["previous"]["version"] == good


@pytest.mark.parametrize(
    "role, reason",
    [
        ("tampered", "differs from the registry's"),
        ("golden_broken", "golden output"),
        ("stranger", "signature does not match"),
    ],
)
def test_bad_package_is_rejected_and_the_current_model_keeps_serving(setup, role, reason):
    # given a device serving a good version
    setup.promote("good")
    manager = setup.manager()
    manager.boot()
    serving = manager.current()
    # when the alias moves to a bad package
    setup.promote(role)
    event = manager.poll_once()
    # then it is rejected with the reason, and the good model still serves
    bad = setup.versions[role]
    assert event["state"] == "rejected" and event["version"] == bad and reason in event["reason"], event
    assert manager.current() is serving
    assert not (setup.cache / MODEL / bad).exists(), "a rejected package is not kept"
    # and it is not downloaded again on the next poll
    count = len(setup.events)
    assert manager.poll_once() is None and len(setup.events) == count, setup.events[count:]


def test_boots_offline_from_the_last_known_good(setup):
    # given a device that ran a version (its cache holds it)
    setup.promote("good")
    setup.manager().boot()
    # when it restarts with the registry unreachable
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    offline = setup.manager(registry=MlflowRegistry(f"http://127.0.0.1:{port}"))
    event = offline.boot()
    # then it serves the cached version, saying why
    assert event["state"] == "activated" and event["version"] == setup.versions["good"], event
    assert "cached last-known-good" in event["reason"] and str(port) in event["reason"], event["reason"]
    assert offline.current().predict(frame()).model["version"] == setup.versions["good"]
    assert offline.poll_once() is None and offline.current() is not None, "polling while offline keeps serving"


def test_rolls_back_after_failures_and_ignores_the_bad_version(setup):
    # given version a serving, then version b activated
    setup.promote("good")
    manager = setup.manager(policy=RollbackPolicy(failure_limit=3))
    manager.boot()
    old = manager.current()
    setup.promote("good_b")
    manager.poll_once()
    new = manager.current()
    good, good_b = setup.versions["good"], setup.versions["good_b"]
    assert new.version == good_b
    # when the runner reports failures on the new model (a late report for the old one does not count)
    manager.report_failure(ModelFailure("NaN"), new)
    manager.report_failure(ModelFailure("late"), old)
    manager.report_latency(5.0, new)  # a good frame resets the count
    for _ in range(3):
        manager.report_failure(ModelFailure("output 'probabilities' has NaN"), new)
    # then it swapped back and said why
    assert manager.current().version == good
    event = setup.events[-1]
    assert event["state"] == "rolled_back" and event["version"] == good_b and "NaN" in event["reason"], event
    # and the next polls do not re-activate the bad version while the alias still names it
    assert manager.poll_once() is None and manager.current().version == good
    pointer = json.loads((setup.cache / MODEL / "current.json").read_text())
    assert pointer["current"]["version"] == good and good_b in pointer["bad"], pointer
    assert not (setup.cache / MODEL / good_b).exists(), "the bad package is removed from the cache"
    # until the alias moves on and comes back: then it is tried again
    setup.promote("good")
    assert manager.poll_once() is None
    setup.promote("good_b")
    assert manager.poll_once()["state"] == "activated" and manager.current().version == good_b


def test_rolls_back_when_latency_stays_over_budget(setup):
    setup.promote("good")
    manager = setup.manager(latency_budget_ms=20.0, policy=RollbackPolicy(slow_frames=5))
    manager.boot()
    setup.promote("good_b")
    manager.poll_once()
    new = manager.current()
    for ms in (50, 50, 50, 10, 50, 50, 50, 50):  # the fast frame restarts the count
        manager.report_latency(ms, new)
    assert manager.current() is new, "4 slow frames in a row are within the policy"
    manager.report_latency(50, new)
    assert manager.current().version == setup.versions["good"]
    assert "over the 20 ms budget for 5 consecutive frames" in setup.events[-1]["reason"]


class GatedRegistry:
    """The real registry, but downloads wait until the test opens the gate."""

    def __init__(self, inner: MlflowRegistry):
        self.inner, self.gate, self.waiting = inner, threading.Event(), threading.Event()

    def resolve(self, model: str, alias: str) -> Resolved:
        return self.inner.resolve(model, alias)

    def download(self, resolved: Resolved, dest: Path) -> Path:
        self.waiting.set()
        assert self.gate.wait(60), "test never opened the gate"
        return self.inner.download(resolved, dest)


def test_fleet_notice_triggers_a_deploy_without_blocking_frames(setup):
    # given a running manager (background thread, hour-long poll) serving version a
    setup.promote("good")
    registry = GatedRegistry(MlflowRegistry(setup.uri))
    registry.gate.set()
    manager = setup.manager(registry=registry).start()
    try:
        assert manager.ready.wait(120), f"never activated: {setup.events}"
        old = manager.current()
        registry.gate.clear()
        registry.waiting.clear()
        # when the retained fleet notice names version b
        setup.promote("good_b")
        resolved = MlflowRegistry(setup.uri).resolve(MODEL, "production")
        assert manager.notify(
            {
                "model": MODEL,
                "alias": "production",
                "version": resolved.version,
                "package_uri": resolved.uri,
                "sha256": resolved.sha256,
            }
        )
        assert not manager.notify(
            {"model": "someone-else", "alias": "production", "version": "1", "package_uri": "x", "sha256": "0" * 64}
        ), "another model's notice is ignored"
        # then while the download is stuck, frames are still served by the old model at once
        assert registry.waiting.wait(60), "the notice did not start a download"
        started = time.monotonic()
        assert manager.current() is old and old.predict(frame()).model["version"] == setup.versions["good"]
        assert time.monotonic() - started < 5, "current() and predict never wait for a download"
        # and once the download completes, the new version is activated
        registry.gate.set()
        deadline = time.monotonic() + 120
        while manager.current().version != resolved.version and time.monotonic() < deadline:
            time.sleep(0.05)
        assert manager.current().version == resolved.version, setup.events
    finally:
        registry.gate.set()
        manager.stop()


class FlakyRegistry:
    """The real registry, but the first `resolve_failures` resolves and `download_failures` downloads raise
    RegistryError (a registry that is briefly unreachable or locked); counts the calls."""

    def __init__(self, inner: MlflowRegistry, resolve_failures: int, download_failures: int):
        self.inner, self.resolve_failures, self.download_failures = inner, resolve_failures, download_failures
        self.resolves = self.downloads = 0

    def resolve(self, model: str, alias: str) -> Resolved:
        self.resolves += 1
        if self.resolves <= self.resolve_failures:
            raise RegistryError("registry unreachable: database is locked")
        return self.inner.resolve(model, alias)

    def download(self, resolved: Resolved, dest: Path) -> Path:
        self.downloads += 1
        if self.downloads <= self.download_failures:
            raise RegistryError("download interrupted")
        return self.inner.download(resolved, dest)


def test_a_passing_registry_failure_is_retried_soon_not_at_the_next_poll(setup):
    # given a running manager with an hour-long poll, whose registry fails its first resolve and first download
    setup.promote("good")
    registry = FlakyRegistry(MlflowRegistry(setup.uri), resolve_failures=2, download_failures=1)
    manager = setup.manager(registry=registry).start()
    try:
        # then it retries after 1, 2, 4 ... s (not 3600) and activates the alias's version
        assert manager.ready.wait(60), f"never activated: {setup.events}"
        good = setup.versions["good"]
        assert manager.current().version == good and manager.last_error is None
        assert (registry.resolves, registry.downloads) == (4, 2), (registry.resolves, registry.downloads)
        assert [s for s, v in setup.states() if s == "rejected"] == ["rejected"]
        assert "download failed, will retry: download interrupted" in setup.events[1]["reason"], setup.events
        # and once it serves, it waits for the poll again
        resolves = registry.resolves
        time.sleep(3)
        assert registry.resolves == resolves, "back to the hour-long poll after the step that worked"
    finally:
        manager.stop()


def test_a_fleet_notice_whose_download_failed_is_retried_while_the_registry_is_unreachable(setup):
    # given a running manager whose registry cannot resolve anything, and whose first download fails
    setup.promote("good")
    resolved = MlflowRegistry(setup.uri).resolve(MODEL, "production")
    registry = FlakyRegistry(MlflowRegistry(setup.uri), resolve_failures=10**6, download_failures=1)
    manager = setup.manager(registry=registry).start()
    try:
        # when the retained fleet notice names the version (the device follows it: the registry is down)
        assert manager.notify(
            {"model": MODEL, "alias": "production", "version": resolved.version}
            | {"package_uri": resolved.uri, "sha256": resolved.sha256}
        )
        # then the failed download is tried again from the same notice, and the version is activated
        assert manager.ready.wait(60), f"never activated: {setup.events}"
        assert manager.current().version == resolved.version and registry.downloads == 2, registry.downloads
    finally:
        manager.stop()


def test_a_bad_package_is_not_retried_before_the_alias_moves(setup):
    # given a running manager with an hour-long poll, whose alias names a package that fails verification
    setup.promote("tampered")
    registry = FlakyRegistry(MlflowRegistry(setup.uri), resolve_failures=0, download_failures=0)
    manager = setup.manager(registry=registry).start()
    try:
        assert wait_until(lambda: any(s == "rejected" for s, _ in setup.states()), 60), setup.events
        # then it is rejected once and the manager does not retry it (the package's fault, not a passing one)
        time.sleep(3)
        assert registry.downloads == 1 and registry.resolves == 1, (registry.resolves, registry.downloads)
    finally:
        manager.stop()


def test_cache_keeps_current_previous_and_n_more(tiny_packages, tmp_path):
    from edge.package_cache import CachedPackage, PackageCache

    # given a cache that keeps one package beyond current and previous
    cache = PackageCache(tmp_path, MODEL, keep=1)
    for version in "12345":
        archive = tmp_path / f"{version}.tar.gz"
        shutil.copyfile(tiny_packages.classifier.archive, archive)
        entry = CachedPackage(version, tiny_packages.classifier.sha256)
        cache.unpack(archive, entry, tiny_packages.public_key)
        # when each one becomes current in turn
        cache.record(entry, {"2": "rolled back"} if version == "4" else {})
    # then current, previous and one more stay; the pointer survives a restart
    kept = sorted(p.name for p in (tmp_path / MODEL).iterdir() if p.is_dir())
    assert kept == ["3", "4", "5"], kept
    again = PackageCache(tmp_path, MODEL, keep=1)
    assert (again.current.version, again.previous.version) == ("5", "4")
    assert not list((tmp_path / MODEL).glob(".current.json.*")), "no temp pointer left behind"
