"""The device side the runner sections drive: a detector package, a registry over local archives,
in-memory frames, a sink that timestamps each publish, and a `Runner` built from those parts."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.machine import Settings
from edge.package import Manifest, read_manifest, safe_extract, sha256_file
from edge.registry import RegistryError, Resolved

MODEL = "shapes-detector"


@dataclass(frozen=True)
class DetectorPackage:
    archive: Path
    folder: Path  # unpacked
    manifest: Manifest
    note: str


def detector_package(settings: Settings) -> DetectorPackage:
    """The demo's packaged detector, or a package built here around a random-weight detector."""
    archive = settings.root / "packages" / "detector.tar.gz"
    if archive.is_file():
        note = "packages/detector.tar.gz (the demo's detector package)"
    else:
        archive = _build_random_package(settings)
        note = "a package built here around a random-weight detector (no packages/detector.tar.gz: run `make demo`)"
    folder = settings.work / "detector-package"
    shutil.rmtree(folder, ignore_errors=True)
    safe_extract(archive, folder)
    return DetectorPackage(archive, folder, read_manifest(folder), note)


def _build_random_package(settings: Settings) -> Path:
    from benchmarks.models import DEMO, DEMO_CLASSES, random_model_dir
    from pipelines.config import PipelineConfig
    from pipelines.optimize.stage import optimize
    from pipelines.package import build_and_pack
    from training.datasets.synth import synth_detection

    task, network, size, name = DEMO["detector"]
    work = settings.work / "random-detector"
    archive = work / "detector.tar.gz"
    if archive.is_file():  # built by an earlier section of this run
        return archive
    model_dir = random_model_dir(work / "model", task, network, size, name, DEMO_CLASSES)
    synth_detection(work / "data", n=40, seed=1, size=size)
    cfg = PipelineConfig(variants=("onnx-fp32",), latency_runs=3, golden_samples=2, calibration_images=4)
    optimize(model_dir, work / "data", work / "build", work / "report", cfg)
    build_and_pack(work / "build", work / "package", archive)
    return archive


class FolderRegistry:
    """The device's registry interface (resolve + download) over local archives; aliases set by `point`."""

    def __init__(self) -> None:
        self.versions: dict[str, tuple[Path, str]] = {}
        self.aliases: dict[str, str] = {}

    def add(self, version: str, archive: Path) -> None:
        self.versions[version] = (Path(archive), sha256_file(archive))

    def point(self, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def resolve(self, model: str, alias: str) -> Resolved:
        if alias not in self.aliases:
            raise RegistryError(f"{model}@{alias} not found", not_found=True)
        version = self.aliases[alias]
        archive, sha = self.versions[version]
        return Resolved(model, alias, version, str(archive), sha)

    def download(self, resolved: Resolved, dest: Path) -> Path:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resolved.uri, dest)
        return Path(dest)

    def notice(self, model: str, alias: str) -> dict:
        """What `promote` publishes as the retained fleet notice for what `alias` names now."""
        resolved = self.resolve(model, alias)
        return {
            "model": model,
            "alias": alias,
            "version": resolved.version,
            "package_uri": resolved.uri,
            "sha256": resolved.sha256,
        }


class MemoryReader:
    """A reader (edge.source_kinds.Reader) handing out pre-decoded frames, cycling through a pool."""

    def __init__(self, frames: list[np.ndarray], count: int, fps: float = 0.0):
        self.frames, self.count, self.fps = frames, count, fps
        self._next = 0

    def read(self) -> Optional[np.ndarray]:
        if self._next >= self.count:
            return None
        frame = self.frames[self._next % len(self.frames)]
        self._next += 1
        return frame

    def release(self) -> None:
        pass


@dataclass(frozen=True)
class Published:
    at: float  # time.monotonic() when the message was committed to the outbox
    captured: float
    index: int
    version: str
    latency_ms: dict  # the predictor's own preprocess / inference / total for this frame
    source: str = ""  # the frame's source id


class PublishClock:
    """A sink placed after the MQTT sink: when each frame's message was committed to the outbox."""

    def __init__(self) -> None:
        self.records: list[Published] = []
        self._lock = threading.Lock()

    def __call__(self, inferred) -> None:
        record = Published(
            time.monotonic(),
            inferred.frame.captured,
            inferred.frame.index,
            inferred.result.model["version"],
            dict(inferred.result.latency_ms),
            inferred.frame.source_id,
        )
        with self._lock:
            self.records.append(record)

    def snapshot(self) -> list[Published]:
        with self._lock:
            return list(self.records)


def throughput(records: list[Published]) -> dict:
    """Frames/s from the first to the last publish, frame age at publish (capture -> outbox), and the
    predictor's own step times inside the runner (medians)."""
    published = np.array([r.at for r in records])
    ages = np.array([(r.at - r.captured) * 1000 for r in records])
    fps = (len(published) - 1) / (published[-1] - published[0]) if len(published) > 1 else 0.0
    inside = {
        f"{step}_ms": round(float(np.median([r.latency_ms[step] for r in records])), 3)
        for step in ("preprocess", "inference", "total")
    }
    return {
        "frames": len(records),
        "fps": round(float(fps), 1),
        "age_p50_ms": round(float(np.percentile(ages, 50)), 2),
        "age_p99_ms": round(float(np.percentile(ages, 99)), 2),
        "in_runner": inside,
    }


@dataclass
class Device:
    """A runner on one model and its source(s), with a clock after its MQTT sink."""

    runner: object  # edge.runner.Runner
    manager: object  # edge.manager.ModelManager
    registry: FolderRegistry
    clock: PublishClock
    events: list[tuple[float, dict]]


def assemble(
    package: DetectorPackage,
    source,
    broker_url: str,
    state: Path,
    threads: int,
    versions: tuple[str, ...] = ("1",),
    batch=None,
) -> Device:
    """`edge.runner.Runner` from built parts (as `Runner.from_config` builds them), the alias on versions[0].

    `source`: one `edge.sources.Source` or a list of them (all on the package's model); `batch`: the
    runner's `edge.batching.BatchConfig` (None: its default)."""
    from edge.manager import ModelManager
    from edge.mqtt import MqttConfig, Publisher
    from edge.runner import Runner

    registry = FolderRegistry()
    for version in versions:
        registry.add(version, package.archive)
    registry.point("production", versions[0])
    name = package.manifest.name
    manager = ModelManager(registry, name, "production", state / "models", poll_s=3600, threads=threads)
    publisher = Publisher.from_config(MqttConfig(url=broker_url, reconnect_max_s=1.0), "bench", state)
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    runner = Runner(
        "bench", sources, {name: manager}, {s.id: name for s in sources}, publisher, status_interval_s=1.0, batch=batch
    )
    clock = PublishClock()
    for worker in runner.workers:
        worker.sinks.append(("clock", clock))
    events: list[tuple[float, dict]] = []
    forward = manager.on_event  # the runner's: publishes the deployment event

    def record(event: dict) -> None:
        events.append((time.monotonic(), event))
        if forward is not None:
            forward(event)

    manager.on_event = record
    return Device(runner, manager, registry, clock, events)


def wait_for(condition, timeout_s: float, every_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return False
