"""Section 5: a model swap while a camera-like source streams; the longest gap between published frames.

The runner serves the detector package as version 1 on pre-decoded 1080p frames paced at 30 fps
(drop: newest frame wins, as a camera). After a steady stretch the alias moves to version 2 (the
same archive under a new version: the full path runs) and the fleet notice wakes the model
manager: download -> verify -> unpack -> load, warm-up and golden samples -> swap between two
frames. Gaps are between consecutive publishes (the clock sink after the MQTT sink): the longest
in the steady stretch, and the longest from the notice until 0.5 s after the swap. The stall is
the swap's longest gap minus one frame interval, in frame intervals: 0 means the subscriber saw no
hiccup, 1 means it waited one extra interval (one frame late or dropped).
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks.broker import Mosquitto, available
from benchmarks.device import MemoryReader, assemble, detector_package, wait_for
from benchmarks.machine import Settings
from benchmarks.video import frames_1080p
from edge.sources import Source, SourceConfig

FPS = 30.0
AFTER_S = 0.5


def _longest_gap(times: np.ndarray, start: float, end: float) -> float:
    inside = times[(times > start) & (times <= end)]
    before = times[times <= start]
    series = np.concatenate([before[-1:], inside])
    return float(np.diff(series).max() * 1000) if len(series) > 1 else float("nan")


def run(settings: Settings) -> dict:
    if not available():
        return {"title": "Hot swap", "skipped": "mosquitto is not installed (apt-get install mosquitto)"}
    package = detector_package(settings)
    frames = frames_1080p(settings.root / "data" / "demo" / "video.mp4", 16)
    steady_s = settings.runs(4.0, 1.5)
    memory = MemoryReader(frames, count=10 ** 6, fps=FPS)
    source = Source(SourceConfig(id="camera", uri=str(package.archive), fps=FPS, drop=True),
                    open_reader=lambda _kind, _target, _timeout: memory)
    with Mosquitto(settings.work / "mosquitto-swap") as broker:
        device = assemble(package, source, broker.url, settings.work / "state-swap", settings.threads, ("1", "2"))
        runner, manager = device.runner, device.manager
        runner.start()
        try:
            if not wait_for(lambda: len(device.clock.snapshot()) > 5, 120):
                raise RuntimeError(f"no frames published: {runner.status()}")
            time.sleep(steady_s)
            drops_before = source.stats()["drops"]
            notified = time.monotonic()
            device.registry.point("production", "2")
            manager.notify(device.registry.notice(manager.model, "production"))
            if not wait_for(lambda: any(e["state"] == "activated" and e["version"] == "2" for _, e in device.events), 120):
                raise RuntimeError(f"version 2 not activated: {[e for _, e in device.events]}")
            activated = next(t for t, e in device.events if e["state"] == "activated" and e["version"] == "2")
            time.sleep(AFTER_S + 0.2)
            drops = source.stats()["drops"] - drops_before
        finally:
            runner.stop()
    records = device.clock.snapshot()
    times = np.array([r[0] for r in records])
    first_v2 = next((r[0] for r in records if r[3] == "2"), None)
    if first_v2 is None:
        raise RuntimeError("no frame was published by version 2")
    interval_ms = 1000 / FPS
    steady = _longest_gap(times, times[0] + 0.5, notified)
    swap = _longest_gap(times, notified, activated + AFTER_S)
    stall = max(0.0, swap - interval_ms) / interval_ms
    steps = [(e["state"], round(t - notified, 3)) for t, e in device.events if t >= notified]
    return {"title": f"Hot swap at {FPS:g} fps (1080p frames, newest wins) while {package.manifest.name} 1 -> 2 stages",
            "interval_ms": round(interval_ms, 1), "baseline_gap_ms": round(steady, 1), "swap_gap_ms": round(swap, 1),
            "stall_intervals": round(stall, 2), "swap_s": round(activated - notified, 2),
            "first_v2_after_activation_ms": round((first_v2 - activated) * 1000, 1),
            "drops_during_swap": drops, "from_version": "1", "to_version": "2", "events": steps,
            "limit": (f"while version 2 staged ({activated - notified:.2f} s: unpack, verify, load, warm-up and golden "
                      f"samples in the manager thread) the worker shared {settings.threads} cores with it: the longest "
                      f"gap was {swap:.0f} ms against {steady:.0f} ms in the steady stretch; {drops} frame(s) dropped"),
            "notes": [f"package: {package.note}"]}
