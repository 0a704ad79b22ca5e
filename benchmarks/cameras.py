"""Section "cameras": how many 15 fps cameras one runner keeps in real time with no frame lost, against
the CPU bound.

A camera is a `file` source over an H.264 file (720p, then 1080p, 15 fps; camera i plays the i % PHASES-th
of files that start at different points of the same content, so cameras are not in step) with `fps: 15,
drop: true`: paced like a live camera, the newest frame wins and an overwritten frame counts as a drop. Each camera
opens its own reader (its own decoder); all share one model (the demo detector package), one `Runner`
(batching across sources with the trial's `BatchConfig`) and one Mosquitto; every frame is published at
QoS 1 and a clock sink after the MQTT sink stamps its commit to the outbox.

A trial on N cameras counts only the steady part: from the moment the model serves (the frames and
drops of each source are read then; frames dropped while the model loaded are not the runner's) until
the files end. N is **kept** when, after that moment, no source dropped a frame, every frame captured
was published, and the last publish came at most `MARGIN_S` after the video's length (a decoder that
falls behind drops nothing but runs late). The largest N kept is searched from the CPU bound, each
trial a fresh runner: step up or down from the bound until the verdict flips, then bisect.

CPU bound = cores x 1000 / ((decode + predict CPU-ms per frame, each measured alone) x 15).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np

from benchmarks.broker import Mosquitto, available
from benchmarks.device import DetectorPackage, assemble, detector_package
from benchmarks.end_to_end import timed, timed_decode
from benchmarks.machine import CpuMeter, Settings, process_cpu_s
from benchmarks.video import make_video
from edge.batching import BatchConfig
from edge.package.runtimes import default_threads
from edge.predictor import Predictor
from edge.scaling import inference_threads, with_decode_threads
from edge.sources import Source, parse_source

FPS = 15
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
MARGIN_S = 0.5  # the last publish may come this long after the video's length
# Cameras are not in step: camera i plays file i % PHASES, each starting at another point of the content.
# Identical files started together decode their costly frames at the same moment on every camera, a burst
# no set of real cameras makes (measured: all 16 sources of a run late at once for 0.6 s, 3 s into it).
PHASES = 8
AGE_GOAL_MS = 100.0
RATIO_GOAL = 0.9


def cameras(videos: list, n: int) -> list:
    """The configs of `n` cameras, camera i over videos[i % len(videos)], as `Runner.from_config` completes
    them (`decode_threads`)."""
    configs = [
        parse_source(dict(id=f"cam{i:02d}", uri=str(videos[i % len(videos)]), fps=FPS, drop=True)) for i in range(n)
    ]
    return with_decode_threads(configs, default_threads())


def cpu_alone(video, package: DetectorPackage, threads: int, frames: int) -> dict:
    """CPU-ms per frame of decode (the reader a camera opens on a device with many cameras) and of
    `Predictor.predict` on those frames, each measured alone; the bound in cameras at 15 fps on this
    machine's cores."""
    config = cameras([video], max(default_threads(), 2))[0]
    decoded, pool = timed_decode(config, frames)
    found = {"decode": decoded}
    predictor = Predictor.load(package.folder, package.manifest, threads=threads)
    found["predict"] = timed((lambda f=pool[i % len(pool)]: predictor.predict(f)) for i in range(frames))
    cores = default_threads()
    per_frame = found["decode"]["cpu_ms"] + found["predict"]["cpu_ms"]
    return {
        "stages": found,
        "variant": predictor.variant,
        "decode_threads": getattr(config, "decode_threads", None),
        "cpu_ms_per_frame": round(per_frame, 3),
        "cores": cores,
        "bound": round(cores * 1000 / (per_frame * FPS), 1),
    }


def trial(
    package: DetectorPackage,
    videos: list,
    frames_in_file: int,
    n: int,
    broker_url: str,
    state,
    batch: BatchConfig,
) -> dict:
    """N cameras on one fresh runner with `batch` and the inference threads a device picks for N sources
    (`edge.sources.inference_threads`); the steady part's figures and whether N was kept."""
    sources = [Source(config) for config in cameras(videos, n)]
    threads = inference_threads(None, n, default_threads()) or default_threads()
    device = assemble(package, sources, broker_url, state, threads, batch=batch)
    runner, video_s = device.runner, frames_in_file / FPS
    started = time.monotonic()
    runner.start()
    if not device.manager.ready.wait(120):
        runner.stop()
        raise RuntimeError(f"the model did not serve within 120 s: {runner.status()}")
    base_at, base_cpu, meter = time.monotonic(), process_cpu_s(), CpuMeter()
    base = {s.id: s.stats() for s in sources}
    batcher = runner.batchers[package.manifest.name]
    base_batch = batcher.stats()
    base_failed = sum(w.stats()["failed"] for w in runner.workers)
    limit_s = video_s * 1.5 + 10  # a runner far behind is cut off (and not kept)
    runner.run(max_seconds=limit_s, exit_when_done=True)
    ended_at, cpu_s, others = time.monotonic(), process_cpu_s() - base_cpu, meter.others_share()
    after = {s.id: s.stats() for s in sources}
    failed = sum(w.stats()["failed"] for w in runner.workers) - base_failed
    records = device.clock.snapshot()
    steady = [r for r in records if r.index >= base[r.source]["frames"]]
    published = {s.id: {r.index for r in steady if r.source == s.id} for s in sources}
    frames = sum(after[s]["frames"] - base[s]["frames"] for s in after)
    drops = sum(after[s]["drops"] - base[s]["drops"] for s in after)
    lost = sum(len(set(range(base[s]["frames"], after[s]["frames"])) - published[s]) for s in after)
    wall_s = (max(r.at for r in records) if records else ended_at) - started
    ages = np.array([(r.at - r.captured) * 1000 for r in steady]) if steady else np.array([np.nan])
    batches = batcher.stats()
    in_batches = batches["frames"] - base_batch["frames"]
    mean_batch = round(in_batches / (batches["batches"] - base_batch["batches"]), 2) if in_batches else 1.0
    late_s = wall_s - video_s
    why = []
    if drops:
        why.append(f"{drops} dropped")
    if failed:
        why.append(f"{failed} not inferred (model failure)")
    if lost > drops + failed:  # a dropped frame is never published, nor one the model failed on
        why.append(f"{lost - drops - failed} more not published")
    if late_s > MARGIN_S:
        why.append(f"{late_s:.2f} s late")
    if not runner.done:
        why.append(f"cut off after {limit_s:.0f} s")
    return {
        "n": n,
        "batch": f"{batch.max_size}/{batch.deadline_ms:g}ms" if batch.max_size > 1 else "off",
        "frames": frames,
        "drops": drops,
        "published": len(steady),
        "lost": lost,  # frames captured after the baseline and not published (drops included)
        "not_inferred": failed,
        "ready_s": round(base_at - started, 1),
        "wall_s": round(wall_s, 2),
        "video_s": round(video_s, 2),
        "age_p50_ms": round(float(np.percentile(ages, 50)), 1),
        "age_p99_ms": round(float(np.percentile(ages, 99)), 1),
        "cpu_cores": round(cpu_s / max(ended_at - base_at, 1e-6), 2),
        "cpu_ms_per_frame": round(cpu_s * 1000 / frames, 2) if frames else None,
        "mean_batch": mean_batch,
        "others_cpu": others,  # share of all cores' time other processes used meanwhile
        "kept": not why,
        "why": ", ".join(why) or "kept",
    }


def search(check: Callable[[int], bool], start: int, max_trials: int, ceiling: int) -> tuple[int, Optional[int]]:
    """(largest n kept, smallest n not kept or None) by `check(n)`, at most `max_trials` calls: from `start`
    step up (x1.25, at least +1, up to `ceiling`) or down (x0.7) until the verdict flips, then bisect."""
    kept, failed, n, trials = 0, None, max(1, min(start, ceiling)), 0
    while trials < max_trials:
        trials += 1
        if check(n):
            kept = n
        else:
            failed = n
        if failed is not None and failed - kept <= 1:
            break
        if failed is None:
            if n >= ceiling:
                break
            n = min(ceiling, max(n + 1, math.ceil(n * 1.25)))
        elif kept == 0:
            n = max(1, min(failed - 1, math.floor(failed * 0.7)))
        else:
            n = (kept + failed) // 2
    return kept, failed


def measure(settings: Settings, package: DetectorPackage, name: str, broker_url: str, batch: BatchConfig) -> dict:
    """One resolution: the video, the CPU bound, the search, and the largest N kept again without batching."""
    seconds = settings.runs(12, 4)
    frames_in_file = seconds * FPS
    phases = settings.runs(PHASES, 2)
    made = [
        make_video(
            settings.work / f"cameras-{name}-{k}.mp4",
            frames_in_file,
            settings.root / "data" / "demo" / "video.mp4",
            size=SIZES[name],
            fps=FPS,
            start_s=k * seconds / phases,
        )
        for k in range(phases)
    ]
    videos, codec = [path for path, _ in made], f"{made[0][1]}; {phases} files, each from another point of it"
    # predict alone on the inference threads the runner uses for as many cameras as the bound allows (>= cores)
    threads = inference_threads(None, default_threads(), default_threads()) or default_threads()
    alone = cpu_alone(videos[0], package, threads, settings.runs(150, 45))
    trials: list[dict] = []

    def run_trial(n: int, config: BatchConfig) -> dict:
        found = trial(
            package,
            videos,
            frames_in_file,
            n,
            broker_url,
            settings.work / f"cameras-{name}-{len(trials)}",
            config,
        )
        trials.append(found)
        return found

    kept, failed = search(
        lambda n: run_trial(n, batch)["kept"],
        start=max(1, round(alone["bound"])),
        max_trials=settings.runs(7, 2),
        ceiling=max(2, math.ceil(2 * alone["bound"])),
    )
    at_kept = next((t for t in reversed(trials) if t["n"] == kept and t["kept"]), None)
    unbatched = run_trial(kept, BatchConfig(max_size=1)) if kept > 1 and batch.max_size > 1 else None
    out = {
        "video": codec,
        **alone,
        "kept": kept,
        "failed": failed,
        "ratio": round(kept / alone["bound"], 2),
        "trials": trials,
        "at_kept": at_kept,
        "unbatched": unbatched,
    }
    out["limit"] = _limit(out)
    out["age_limit"] = _age_limit(out)
    return out


def _limit(found: dict) -> str:
    """What holds the count below the bound: which stage dominates the CPU-ms, and whether the first N not
    kept had saturated the cores."""
    decode, predict = found["stages"]["decode"]["cpu_ms"], found["stages"]["predict"]["cpu_ms"]
    heavier = "decode" if decode >= predict else "predict"
    text = (
        f"alone a frame needs decode {decode} + predict {predict} CPU-ms ({heavier} "
        f"{max(decode, predict) / found['cpu_ms_per_frame']:.0%}): {found['cores']} cores allow "
        f"{found['bound']} cameras"
    )
    failing = next((t for t in found["trials"] if t["n"] == found["failed"]), None)
    if failing is not None:
        busy = failing["cpu_cores"] + (failing["others_cpu"] or 0.0) * found["cores"]
        saturated = busy >= 0.9 * found["cores"]
        text += (
            f"; at {failing['n']} cameras ({failing['why']}) the runner used {failing['cpu_cores']} of "
            f"{found['cores']} cores"
            + (
                f" (other processes used {failing['others_cpu']:.0%} of the cores meanwhile)"
                if failing.get("others_cpu")
                else ""
            )
            + (
                f", {failing['cpu_ms_per_frame']} CPU-ms per frame against {found['cpu_ms_per_frame']} alone: "
                "the runner's own per-frame work (threads, queues, delivery, MQTT) and other processes fill "
                "the cores"
                if saturated
                else ": frames were lost before the CPU saturated (a serial step, the GIL or a decoder "
                "falling behind, not the cores, limits it)"
            )
        )
    elif found["kept"] and found["kept"] >= found["bound"]:
        text += "; the search reached its ceiling"
    return text


def _age_limit(found: dict) -> str:
    at = found["at_kept"]
    if at is None:
        return "no camera count was kept"
    text = (
        f"at {at['n']} cameras: age p50 {at['age_p50_ms']} / p99 {at['age_p99_ms']} ms, mean batch "
        f"{at['mean_batch']}, the runner on {at['cpu_cores']} of {found['cores']} cores"
    )
    if found["unbatched"] is not None:
        text += f"; without batching p99 {found['unbatched']['age_p99_ms']} ms"
    return text


def run(settings: Settings, batch: Optional[BatchConfig] = None) -> dict:
    if not available():
        return {"title": "Cameras per box", "skipped": "mosquitto is not installed (apt-get install mosquitto)"}
    batch = batch or BatchConfig()
    package = detector_package(settings)
    names = ("720p",) if settings.quick else ("720p", "1080p")
    with Mosquitto(settings.work / "mosquitto-cameras") as broker:
        found = {name: measure(settings, package, name, broker.url, batch) for name in names}
    first = next(iter(found.values()))
    return {
        "title": f"Cameras per box: {package.manifest.name} ({first['variant']}, inference threads as a device "
        f"picks them: 1 from {default_threads()} cameras on), H.264 files at {FPS} fps, drop: true, every frame "
        "published at QoS 1",
        "fps": FPS,
        "batch": batch.model_dump(),
        "resolutions": found,
        "notes": [f"video: {v['video']}" for v in found.values()]
        + [
            f"package: {package.note}",
            f"kept = after the model serves: no drop, every frame published, last publish <= video + {MARGIN_S} s",
            "frame age = capture -> message committed to the outbox; CPU = this process (Mosquitto not counted)",
        ],
    }
