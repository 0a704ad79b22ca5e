"""Section 5: model swaps while a camera-like source streams; the longest gap between published frames.

The runner serves the detector package as version 1 on pre-decoded 1080p frames paced at 30 fps
(drop: newest frame wins, as a camera). After a steady stretch the alias moves to version 2, then
3 and 4 (quick: 2 only), each the same archive under a new version so the full path runs, and
the fleet notice wakes the model manager: download -> verify -> unpack -> load, warm-up and golden
samples -> swap between two frames. Gaps are between consecutive publishes (the clock sink after
the MQTT sink): the longest in the steady stretch, and per swap the longest from the notice until
0.5 s after activation. The stall is the worst swap's longest gap minus one frame interval, in
frame intervals: 0 means no hiccup, 1 means one extra interval (one frame late or dropped).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.broker import Mosquitto, available
from benchmarks.device import MemoryReader, assemble, detector_package, wait_for
from benchmarks.machine import Settings
from benchmarks.video import frames_1080p
from edge.sources import Source, parse_source

FPS = 30.0
AFTER_S = 0.5


def _longest_gap(times: np.ndarray, start: float, end: float) -> float:
    inside = times[(times > start) & (times <= end)]
    before = times[times <= start]
    series = np.concatenate([before[-1:], inside])
    return float(np.diff(series).max() * 1000) if len(series) > 1 else float("nan")


def _swap(device, version: str) -> tuple[float, float]:
    """Move the alias to `version`, send the fleet notice; (notified, activated) monotonic times."""
    manager = device.manager
    notified = time.monotonic()
    device.registry.point("production", version)
    manager.notify(device.registry.notice(manager.model, "production"))

    def activated() -> bool:
        return any(e["state"] == "activated" and e["version"] == version for _, e in device.events)

    if not wait_for(activated, 120):
        raise RuntimeError(f"version {version} not activated: {[e for _, e in device.events]}")
    return notified, next(t for t, e in device.events if e["state"] == "activated" and e["version"] == version)


def run(settings: Settings) -> dict:
    if not available():
        return {"title": "Hot swap", "skipped": "mosquitto is not installed (apt-get install mosquitto)"}
    package = detector_package(settings)
    frames = frames_1080p(settings.root / "data" / "demo" / "video.mp4", 16)
    versions = tuple(str(v) for v in range(1, settings.runs(4, 2) + 1))  # 3 swaps (1 quick)
    memory = MemoryReader(frames, count=10**6, fps=FPS)
    source = Source(
        parse_source(dict(id="camera", uri=str(package.archive), fps=FPS, drop=True)),
        open_reader=lambda _config: memory,
    )
    swaps = []
    with Mosquitto(settings.work / "mosquitto-swap") as broker:
        device = assemble(package, source, broker.url, settings.work / "state-swap", settings.threads, versions)
        device.runner.start()
        try:
            if not wait_for(lambda: len(device.clock.snapshot()) > 5, 120):
                raise RuntimeError(f"no frames published: {device.runner.status()}")
            time.sleep(settings.runs(4.0, 1.5))
            steady_end = time.monotonic()
            for version in versions[1:]:
                drops = source.stats()["drops"]
                notified, activated = _swap(device, version)
                time.sleep(AFTER_S + 0.2)
                swaps.append(
                    {
                        "to": version,
                        "notified": notified,
                        "activated": activated,
                        "drops": source.stats()["drops"] - drops,
                    }
                )
                time.sleep(0.5)
        finally:
            device.runner.stop()
    records = device.clock.snapshot()
    times = np.array([r.at for r in records])
    interval_ms = 1000 / FPS
    steady = _longest_gap(times, times[0] + 0.5, steady_end)
    for swap in swaps:
        if not any(r.version == swap["to"] and r.at >= swap["activated"] for r in records):
            raise RuntimeError(f"no frame was published by version {swap['to']}")
        swap["gap_ms"] = round(_longest_gap(times, swap["notified"], swap["activated"] + AFTER_S), 1)
        swap["swap_s"] = round(swap.pop("activated") - swap.pop("notified"), 2)
    worst = max(swaps, key=lambda s: s["gap_ms"])
    stall = max(0.0, worst["gap_ms"] - interval_ms) / interval_ms
    return {
        "title": f"Hot swap at {FPS:g} fps (1080p frames, newest wins), {package.manifest.name} "
        f"{' -> '.join(versions)}",
        "interval_ms": round(interval_ms, 1),
        "baseline_gap_ms": round(steady, 1),
        "swap_gap_ms": worst["gap_ms"],
        "stall_intervals": round(stall, 2),
        "swaps": swaps,
        "limit": (
            f"while the next version staged ({worst['swap_s']} s: copy, sha256, unpack, verify, load, warm-up and "
            f"golden samples in the manager thread) the worker shared {settings.threads} cores with it: the "
            f"longest gap was {worst['gap_ms']:.0f} ms against {steady:.0f} ms in the steady stretch; "
            f"{worst['drops']} frame(s) dropped"
        ),
        "notes": [f"package: {package.note}"],
    }
