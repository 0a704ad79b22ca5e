"""At fleet scale: one retained notice switches 200 simulated devices (real runners: model manager, publisher,
outbox) in four processes, against a real Mosquitto and a real MLflow registry. The figures are printed, not
judged by time; what is asserted is that every device switched and what each switch cost the registry."""

from __future__ import annotations

import time

from benchmarks.fleet import SimulatedFleet, Watcher, device_ids, switch_figures
from pipelines.fleet.notice import notice, publish_notice
from edge.registry import MlflowRegistry
from tests.edge.conftest import mosquitto  # noqa: F401 (fixture)
from tests.edge.packages import tiny_packages  # noqa: F401 (fixture)
from tests.edge.runner_fixtures import registry_template  # noqa: F401 (fixture)
from tests.edge.runner_setup import MODEL, copy_registry

FLEET = "sim"


def test_one_retained_notice_switches_200_devices_with_one_resolve_and_one_download_each(
    registry_template, tiny_packages, mosquitto, tmp_path
):
    # given: 200 devices serving v1 of the tiny detector (production), in four processes
    registry = copy_registry(registry_template, tmp_path / "registry")
    v1 = registry.promote("v1")
    devices = device_ids(200)
    watcher = Watcher(mosquitto.url)
    spec = dict(
        registry_uri=registry.uri,
        mqtt_url=mosquitto.url,
        model=MODEL,
        fleet=FLEET,
        public_key=str(tiny_packages.public_key),
        status_interval_s=5.0,
    )
    with SimulatedFleet(tmp_path / "fleet", devices, processes=4, **spec).start() as fleet:
        assert watcher.wait(lambda: len(watcher.activated(v1)) == len(devices), 240), (
            f"only {len(watcher.activated(v1))} of {len(devices)} devices activated v1"
        )
        time.sleep(1.5)  # every child has written its counts since
        before = fleet.counts()

        # when: production moves to v2 and one retained fleet notice says so
        v2 = registry.promote("v2")
        resolved = MlflowRegistry(registry.uri).resolve(MODEL, "production")
        notified = time.monotonic()
        publish_notice(
            mosquitto.url,
            "lensops",
            FLEET,
            notice(MODEL, "production", v2, resolved.uri, resolved.sha256).model_copy(update={"fleet": FLEET}),
        )

        # then: every device serves v2, each after at most one resolve and one download
        switched = watcher.wait(lambda: len(watcher.activated(v2)) == len(devices), 240)
        time.sleep(1.5)
        figures = switch_figures(notified, watcher.activated(v2), before, fleet.counts(), devices)
        print(f"\nfleet switch, {len(devices)} devices: {figures}")
        assert switched, f"{figures['switched']} of {len(devices)} devices activated v2"
        assert figures["resolve_per_device_max"] <= 1 and figures["download_per_device_max"] <= 1, figures
    watcher.close()
