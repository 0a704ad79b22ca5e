"""Fleet at scale: simulated devices (benchmarks/fleet_devices.py) in a few processes against a real
Mosquitto and a real MLflow registry.

`SimulatedFleet` starts the device processes; `Watcher` records, as the broker delivers them, each
device's deployment events and retained status. The benchmark section (`run`) switches N devices
(1,000 by default, 50 in quick mode; tests/pipelines/fleet/test_fleet_scale.py switches 200) with one
retained fleet notice and reports the time until every device serves the new version (from the notice's
publish to the last `activated` event seen on the broker) and the registry calls per device that the
switch cost (goal: at most 1 resolve + 1 download).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import paho.mqtt.client as paho

ROOT = Path(__file__).resolve().parents[1]


def device_ids(n: int, prefix: str = "sim") -> List[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


class SimulatedFleet:
    """`devices` split over `processes` children of `python -m benchmarks.fleet_devices`; a context manager."""

    def __init__(self, work: Path, devices: List[str], processes: int, **spec):
        self.work, self.devices, self.spec = Path(work), list(devices), spec
        self.work.mkdir(parents=True, exist_ok=True)
        self.groups = [self.devices[i::processes] for i in range(processes) if self.devices[i::processes]]
        self.children: List[subprocess.Popen] = []

    def start(self, timeout_s: float = 120.0) -> "SimulatedFleet":
        for index, group in enumerate(self.groups):
            spec_file = self.work / f"group-{index}.json"
            spec = {
                **self.spec,
                "devices": group,
                "state_dir": str(self.work / "state"),
                "counts_file": str(self.work / f"counts-{index}.json"),
            }
            spec_file.write_text(json.dumps(spec))
            log = open(self.work / f"group-{index}.log", "wb")
            # one registry client serves the process's devices (as one runner's managers share one): its
            # SQLAlchemy pool holds a connection per device, as each device's own client would
            env = {
                **os.environ,
                "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(len(group)),
                "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "0",
            }
            self.children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.fleet_devices", str(spec_file)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                )
            )
        deadline = time.monotonic() + timeout_s
        for index, child in enumerate(self.children):
            line = child.stdout.readline() if time.monotonic() < deadline else b""
            if line.strip() != b"started":
                self.stop()
                raise RuntimeError(f"device group {index} did not start: {self.log(index)[-3000:]}")
        return self

    def log(self, index: int) -> str:
        return (self.work / f"group-{index}.log").read_text(errors="replace")

    def counts(self) -> Dict[str, Dict[str, int]]:
        """device -> {resolve, download} so far (each child writes its file every second)."""
        out: Dict[str, Dict[str, int]] = {}
        for index in range(len(self.groups)):
            path = self.work / f"counts-{index}.json"
            if path.exists():
                out.update(json.loads(path.read_text()))
        return out

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
        self.children = []

    def __enter__(self) -> "SimulatedFleet":
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


class Watcher:
    """Subscribes to every device's deployment events and retained status; records when each arrived."""

    def __init__(self, mqtt_url: str, prefix: str = "lensops"):
        host, port = mqtt_url.split("://", 1)[1].rsplit(":", 1)
        self.prefix = prefix
        self.lock = threading.Lock()
        self.events: List[tuple] = []  # (monotonic arrival, wall-clock arrival, device, event dict)
        self.statuses: Dict[str, dict] = {}
        self.subscribed = threading.Event()
        self.refused: Optional[str] = None  # why the broker refused the connection or the subscription
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"fleet-watcher-{time.time_ns()}")
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect  # subscribes again after a reconnect (a clean session)
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(host, int(port))
        self.client.loop_start()
        if not self.subscribed.wait(30) or self.refused:
            self.close()
            raise RuntimeError(f"fleet watcher: {self.refused or 'no SUBACK in 30 s'} ({mqtt_url})")

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self.refused = f"connection refused: {reason_code}"
            self.subscribed.set()
        else:
            client.subscribe([(f"{self.prefix}/+/deployment", 1), (f"{self.prefix}/+/status", 1)])

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties) -> None:
        failed = [str(code) for code in reason_codes if code.is_failure]
        if failed:
            self.refused = f"subscription refused: {', '.join(failed)}"
        self.subscribed.set()

    def _on_message(self, _c, _u, message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        device = message.topic.split("/")[-2]
        with self.lock:
            if message.topic.endswith("/status"):
                self.statuses[device] = body
            else:
                self.events.append((time.monotonic(), time.time(), device, body))

    def activated(self, version: str, model: Optional[str] = None, wall: bool = False) -> Dict[str, float]:
        """device -> arrival time (monotonic, or time.time() with `wall`) of its first `activated` event for
        `version`."""
        out: Dict[str, float] = {}
        with self.lock:
            for at, at_wall, device, event in self.events:
                if event.get("state") == "activated" and event.get("version") == version and device not in out:
                    if model is None or event.get("model") == model:
                        out[device] = at_wall if wall else at
        return out

    def versions_seen(self, device: str) -> List[str]:
        """Every version `device` reported a deployment event for."""
        with self.lock:
            return [e.get("version") for _, _, d, e in self.events if d == device]

    def serving(self, model: str) -> Dict[str, Optional[str]]:
        """device -> the version its latest retained status says it serves."""
        with self.lock:
            return {d: ((s.get("models") or {}).get(model) or {}).get("version") for d, s in self.statuses.items()}

    def wait(self, condition, timeout_s: float, every_s: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(every_s)
        return condition()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def switch_figures(notified: float, activated: Dict[str, float], before: dict, after: dict, devices: List[str]) -> dict:
    """Seconds from the notice to the last activation, and the registry calls per device the switch cost."""
    times = sorted(activated[d] - notified for d in devices if d in activated)
    calls = {
        kind: [after.get(d, {}).get(kind, 0) - before.get(d, {}).get(kind, 0) for d in devices]
        for kind in ("resolve", "download")
    }
    return {
        "devices": len(devices),
        "switched": len(times),
        "first_s": round(times[0], 2) if times else None,
        "median_s": round(times[len(times) // 2], 2) if times else None,
        "all_s": round(times[-1], 2) if len(times) == len(devices) else None,
        "resolve_per_device_max": max(calls["resolve"]),
        "download_per_device_max": max(calls["download"]),
        "resolve_per_device_mean": round(sum(calls["resolve"]) / len(devices), 3),
        "download_per_device_mean": round(sum(calls["download"]) / len(devices), 3),
        "over_one_call": sum(1 for r, d in zip(calls["resolve"], calls["download"]) if r > 1 or d > 1),
    }


def _classifier_versions(work: Path) -> list:
    """Two package archives of one random-weight demo classifier (the manifests differ in their metrics, so
    they register as two versions)."""
    from benchmarks.models import DEMO, DEMO_CLASSES, random_model_dir
    from pipelines.config import PipelineConfig
    from pipelines.optimize.stage import optimize
    from pipelines.package import build_and_pack
    from training.datasets.synth import synth_classification

    task, network, size, name = DEMO["classifier"]
    model_dir = random_model_dir(work / "model", task, network, size, name, DEMO_CLASSES)
    synth_classification(work / "data", n=40, seed=1, size=size)
    cfg = PipelineConfig(variants=("onnx-fp32",), latency_runs=3, golden_samples=2, calibration_images=4)
    optimize(model_dir, work / "data", work / "build", work / "report", cfg)
    packed = []
    for v in (1, 2):
        archive = work / f"package-{v}.tar.gz"
        manifest, sha = build_and_pack(work / "build", work / f"package-{v}", archive, {"accuracy": v / 10})
        packed.append((archive, manifest, sha))
    return packed


def _rss_mb(pids: List[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def run(settings) -> dict:
    """The benchmark section: one retained notice switches the simulated fleet (see the module docstring)."""
    from benchmarks.broker import Mosquitto, available
    from edge.registry import MlflowRegistry, MlflowRegistryWriter
    from pipelines.fleet.notice import notice, publish_notice

    if not available():
        return {"title": "Fleet switch", "skipped": "mosquitto is not installed (apt-get install mosquitto)"}
    n, processes = settings.runs(1000, 50), settings.runs(8, 2)  # tests/pipelines/fleet: 200 devices
    work = settings.work / "fleet"
    packed = _classifier_versions(work / "model")
    store = f"sqlite:///{work / 'mlflow.db'}"
    writer = MlflowRegistryWriter(store)
    versions = [writer.register(archive, manifest, sha, {}).version for archive, manifest, sha in packed]
    model = packed[0][1].name
    writer.set_alias(model, "production", versions[0])
    devices = device_ids(n)
    with Mosquitto(work / "mosquitto") as broker:
        watcher = Watcher(broker.url)
        spec = dict(
            registry_uri=store, mqtt_url=broker.url, model=model, fleet="bench", status_interval_s=10.0, poll_s=600
        )
        started = time.monotonic()
        with SimulatedFleet(work / "devices", devices, processes, **spec).start(timeout_s=600) as fleet:
            if not watcher.wait(lambda: len(watcher.activated(versions[0])) == n, 900):
                raise RuntimeError(f"only {len(watcher.activated(versions[0]))} of {n} devices served version 1")
            boot_s = time.monotonic() - started
            time.sleep(2.0)
            rss = _rss_mb([c.pid for c in fleet.children])
            before = fleet.counts()
            writer.set_alias(model, "production", versions[1])
            resolved = MlflowRegistry(store).resolve(model, "production")
            notified = time.monotonic()
            payload = notice(model, "production", versions[1], resolved.uri, resolved.sha256)
            publish_notice(broker.url, "lensops", "bench", payload.model_copy(update={"fleet": "bench"}))
            watcher.wait(lambda: len(watcher.activated(versions[1])) == n, 900)
            time.sleep(2.0)
            figures = switch_figures(notified, watcher.activated(versions[1]), before, fleet.counts(), devices)
        watcher.close()
    return {
        "title": f"Fleet switch: one retained notice, {n} simulated devices in {processes} processes",
        "devices": n,
        "processes": processes,
        "boot_s": round(boot_s, 1),
        "rss_mb_per_device": round(rss / n, 1),
        **figures,
        "limit": (
            f"{figures['over_one_call']} device(s) called the registry more than once "
            "for a kind: a device polls again when a notice arrives that does not name the version it serves, "
            "or when a call failed"
        ),
        "notes": [
            f"model: a random-weight {model} (demo classifier network), onnx-fp32; registry: MLflow on SQLite; "
            "broker: Mosquitto; devices: edge.runner.Runner without sources (benchmarks/fleet_devices.py)"
        ],
    }
