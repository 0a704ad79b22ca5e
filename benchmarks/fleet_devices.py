"""Many simulated devices in one process: `python -m benchmarks.fleet_devices SPEC.json` (benchmarks/fleet.py
starts a few of these).

Each device is a real `edge.runner.Runner`: its own `ModelManager` (download, verify, stage, hot swap),
its own `Publisher` (outbox, retained status, last will, the fleet and ring notices) and, with `fps` > 0,
one source handing out an in-memory frame at `fps` (no video decoding) so its inference, latency and
drops are real; with `shadow` ({alias, rate, report_s}) the candidate runs beside it (edge/shadow.py).
The devices of a process share one registry client (as the managers of one runner do);
each device counts its own registry calls (resolve, download) and the counts are written to
`counts_file` every second and at exit (SIGTERM), as JSON {device: {resolve, download}}.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Dict

import numpy as np

from common.files import write_json
from edge.registry import Registry, Resolved

PYTHON_SWITCH_INTERVAL_MS = 5.0  # sys.getswitchinterval()'s default


class CountingRegistry:
    """A device's view of the shared registry that counts its calls (the registry itself is real)."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.counts: Dict[str, int] = {"resolve": 0, "download": 0}

    def resolve(self, model: str, alias: str) -> Resolved:
        self.counts["resolve"] += 1
        return self.registry.resolve(model, alias)

    def download(self, resolved: Resolved, dest: Path) -> Path:
        self.counts["download"] += 1
        return self.registry.download(resolved, dest)


def build_device(spec: dict, device: str, registry: Registry):
    from benchmarks.device import MemoryReader
    from edge.manager import ModelManager
    from edge.mqtt import MqttConfig, Publisher
    from edge.runner import Runner
    from edge.sources import Source, parse_source

    state = Path(spec["state_dir"]) / device
    counting = CountingRegistry(registry)
    manager = ModelManager(
        counting,
        spec["model"],
        spec.get("alias", "production"),
        state / "models",
        public_key=Path(spec["public_key"]) if spec.get("public_key") else None,
        poll_s=spec.get("poll_s", 3600),
        latency_budget_ms=spec.get("latency_budget_ms"),
        threads=1,
    )
    mqtt = MqttConfig(url=spec["mqtt_url"], topic_prefix=spec.get("prefix", "lensops"), reconnect_max_s=2.0)
    publisher = Publisher.from_config(mqtt, device, state)
    sources = []
    if spec.get("fps"):
        size = spec.get("frame_size", 64)
        frame = np.random.default_rng(len(device)).integers(0, 255, (size, size, 3), dtype=np.uint8)
        config = parse_source(dict(id="cam", uri=spec["frame_uri"], fps=spec["fps"], drop=True))
        sources.append(Source(config, lambda _c: MemoryReader([frame], count=10**9, fps=spec["fps"])))
    shadow = None
    if spec.get("shadow"):  # shadow mode (edge/shadow.py): the candidate alias on a share of the frames
        from edge.shadow import ShadowConfig, ShadowRunner

        config = ShadowConfig(**spec["shadow"])
        candidate = ModelManager(
            CountingRegistry(registry),
            spec["model"],
            config.alias,
            state / "shadow-models",
            public_key=manager.public_key,
            poll_s=spec.get("poll_s", 3600),
            threads=1,
        )
        shadow = ShadowRunner({spec["model"]: candidate}, config, publisher.publish_shadow)
    runner = Runner(
        device,
        sources,
        {spec["model"]: manager},
        {s.id: spec["model"] for s in sources},
        publisher,
        fleet=spec.get("fleet"),
        status_interval_s=spec.get("status_interval_s", 2.0),
        latency_budget_ms=spec.get("latency_budget_ms"),
        shadow=shadow,
        # many runners share this interpreter: keep Python's own switch interval (a device's 1 ms serves one
        # runner's sources; here it made every process switch threads five times as often)
        switch_interval_ms=PYTHON_SWITCH_INTERVAL_MS,
    )
    return runner, counting


def main(argv=None) -> int:
    from edge.registry import registry_config, open_registry

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {Path(argv[0]).stem} %(name)s: %(message)s")
    registry = open_registry(registry_config({"type": "mlflow", "uri": spec["registry_uri"]}))
    devices = [build_device(spec, d, registry) for d in spec["devices"]]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def write_counts() -> None:
        write_json(spec["counts_file"], {r.device_id: dict(c.counts) for r, c in devices}, fsync=False)

    for runner, _ in devices:
        runner.start()
    print("started", flush=True)
    while not stop.wait(1.0):
        write_counts()
    stoppers = [threading.Thread(target=runner.stop, daemon=True) for runner, _ in devices]
    for thread in stoppers:  # in parallel: each drains its outbox and says offline
        thread.start()
    for thread in stoppers:
        thread.join(20)
    write_counts()
    return 0


if __name__ == "__main__":
    sys.exit(main())
