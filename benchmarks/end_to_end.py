"""Section 2: the device runner end to end, against each of its stages measured alone.

The real `edge.runner.Runner` (capture thread -> inference thread -> delivery thread -> MQTT outbox -> Mosquitto)
serves the demo detector package on (a) a 1080p H.264 file decoded by its own reader, as fast as
it goes, and (b) pre-decoded 1080p frames from memory on `FRAME_SOURCES` sources sharing the model (so
the runner batches across them, with its default `edge.batching.BatchConfig`). A sink placed after the MQTT
sink stamps each frame when its message is committed to the outbox. Frames/s = frames / (first -> last
publish); frame age = capture -> outbox. Stages alone, on the same frames and the same variant and
threads: decode (edge.source_kinds.video.VideoReader), preprocess (edge.package.codec), inference (the session) at
batch 1 and at the best of `BATCHES` (frames/s = batch / time per batch) and the whole predict (preprocess +
inference + output decoding). Efficiency = end-to-end frames/s / frames/s of the slowest stage among decode,
preprocess and inference (file: batch 1, one source; frames: inference at its best batch).
"""

from __future__ import annotations

import time

from benchmarks.broker import Mosquitto, available
from benchmarks.device import DetectorPackage, MemoryReader, assemble, detector_package, throughput
from benchmarks.machine import Settings, process_cpu_s
from benchmarks.video import make_video
from edge.batching import BatchConfig
from edge.package.codec import preprocess
from edge.predictor import Predictor
from edge.package.runtimes import default_threads
from edge.sources import Source, parse_source

POOL = 24  # pre-decoded frames kept (1080p: 6 MB each)
BATCHES = (1, 2, 4, 8, 16)  # inference alone is timed at each; its best is what the pre-decoded runner is held to
FRAME_SOURCES = BatchConfig().max_size  # pre-decoded sources: enough for full batches at the default


def timed(calls) -> dict:
    """Median wall ms per call, frames/s over all calls, and CPU ms per call (all threads of this process)."""
    times, cpu, start = [], process_cpu_s(), time.perf_counter()
    for call in calls:
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - start
    times.sort()
    return {
        "median_ms": round(times[len(times) // 2], 3),
        "fps": round(len(times) / wall, 1),
        "cpu_ms": round((process_cpu_s() - cpu) / len(times) * 1000, 3),
        "calls": len(times),
    }


def timed_decode(config, runs: int) -> tuple[dict, list]:
    """`timed` figures of `runs` reads of the source `config`'s own reader, and its first POOL frames."""
    reader = config.open_reader()
    frames: list = []

    def decode():
        frame = reader.read()
        if frame is not None and len(frames) < POOL:
            frames.append(frame)

    try:
        return timed(decode for _ in range(runs)), frames
    finally:
        reader.release()


def stages(video, package: DetectorPackage, threads: int, runs: int) -> tuple[dict, list]:
    decoded, frames = timed_decode(parse_source({"id": "decode", "uri": str(video)}), runs)
    found = {"decode": decoded}
    spec = package.manifest.input
    predictor = Predictor.load(package.folder, package.manifest, threads=threads)
    pool = [frames[i % len(frames)] for i in range(runs)]
    found["preprocess"] = timed((lambda f=f: preprocess([f], spec)) for f in pool)
    batch = preprocess(frames[:1], spec)
    found["inference"] = timed((lambda: predictor.session.run(batch)) for _ in range(runs))
    found["predict"] = timed((lambda f=f: predictor.predict(f)) for f in pool)
    found["inference"]["variant"] = predictor.variant
    found["inference_batched"] = best_batch(predictor, frames, runs)
    return found, frames


def best_batch(predictor: Predictor, frames: list, runs: int) -> dict:
    """Inference alone at each of BATCHES: the best batch's figures per frame, and frames/s at every batch."""
    per_batch = {}
    for size in BATCHES:
        batch = preprocess([frames[i % len(frames)] for i in range(size)], predictor.manifest.input)
        figures = timed((lambda: predictor.session.run(batch)) for _ in range(max(runs // size, 10)))
        per_batch[size] = {
            "median_ms": round(figures["median_ms"] / size, 3),
            "fps": round(figures["fps"] * size, 1),
            "cpu_ms": round(figures["cpu_ms"] / size, 3),
        }
    best = max(per_batch, key=lambda size: per_batch[size]["fps"])
    return {**per_batch[best], "batch": best, "fps_by_batch": {str(k): v["fps"] for k, v in per_batch.items()}}


def serve(package, source, url: str, state, threads: int, timeout_s: float) -> dict:
    """Throughput of a runner on `source` (one Source or a list), and its batches' mean size (None: none ran)."""
    device = assemble(package, source, url, state, threads)
    device.runner.start()
    device.runner.run(max_seconds=timeout_s, exit_when_done=True)
    records = device.clock.snapshot()
    if len(records) < 2:
        raise RuntimeError(f"the runner published {len(records)} frame(s): {device.runner.status()}")
    (batcher,) = device.runner.batchers.values()
    return {**throughput(records), "mean_batch": batcher.stats()["mean"]}


def efficiency(label: str, measured: dict, found: dict, names: tuple[str, ...], cores: int) -> dict:
    """End-to-end frames/s against the slowest stage alone, and the bounds that explain the gap."""
    slowest = min(names, key=lambda n: found[n]["fps"])
    predict = found["predict"]
    cpu_ms = predict["cpu_ms"] + (found["decode"]["cpu_ms"] if "decode" in names else 0.0)
    if "inference_batched" in names:  # predict with the inference of the best batch in place of batch 1's
        cpu_ms += found["inference_batched"]["cpu_ms"] - found["inference"]["cpu_ms"]
    out = {
        "label": label,
        **measured,
        "slowest_stage": slowest,
        "slowest_fps": found[slowest]["fps"],
        "efficiency": round(measured["fps"] / found[slowest]["fps"], 3),
        "worker_bound_fps": round(1000 / predict["median_ms"], 1),
        "cpu_bound_fps": round(cores * 1000 / cpu_ms, 1),
    }
    inside, per_frame = measured["in_runner"], 1000 / measured["fps"]
    decoding = inside["total_ms"] - inside["preprocess_ms"] - inside["inference_ms"]
    out["limit"] = (
        f"{measured['fps']} frames/s = {per_frame:.1f} ms per published frame, while {slowest} alone allows "
        f"{found[slowest]['fps']} frames/s. Per source three threads overlap: capture (decode), inference "
        f"(inside the runner predict took {inside['total_ms']} ms: preprocess {inside['preprocess_ms']}, "
        f"inference {inside['inference_ms']}, output decoding/NMS {decoding:.2f}; alone: predict "
        f"{predict['median_ms']} ms; batches of {measured['mean_batch'] or 1} frames on average) and delivery "
        "(payload, outbox commit); they share the cores and the GIL. "
        f"All stages together need {cpu_ms:.1f} CPU-ms per frame alone: {cores} cores allow at most "
        f"{out['cpu_bound_fps']} frames/s"
    )
    return out


def run(settings: Settings) -> dict:
    if not available():
        return {"title": "Runner end to end", "skipped": "mosquitto is not installed (apt-get install mosquitto)"}
    package = detector_package(settings)
    cores = default_threads()
    n = settings.runs(300, 60)
    video, codec = make_video(settings.work / "video-1080p.mp4", n, settings.root / "data" / "demo" / "video.mp4")
    found, frames = stages(video, package, settings.threads, n)
    with Mosquitto(settings.work / "mosquitto-runner") as broker:
        file_source = Source(parse_source(dict(id="h264", uri=str(video), fps=0, drop=False)))
        on_file = serve(package, file_source, broker.url, settings.work / "state-file", settings.threads, 300)
        frame_sources = [
            Source(
                parse_source(dict(id=f"frames-{i}", uri=str(video), fps=0, drop=False)),
                open_reader=lambda _config, memory=MemoryReader(frames, n): memory,
            )
            for i in range(FRAME_SOURCES)
        ]
        on_frames = serve(package, frame_sources, broker.url, settings.work / "state-frames", settings.threads, 300)
    return {
        "title": f"Runner end to end: {package.manifest.name} ({found['inference']['variant']}, "
        f"{settings.threads} threads) publishing every frame at QoS 1",
        "stages": found,
        "file": efficiency("1080p video file", on_file, found, ("decode", "preprocess", "inference"), cores),
        "frames": efficiency(
            f"pre-decoded 1080p frames, {FRAME_SOURCES} sources",
            on_frames,
            found,
            ("preprocess", "inference_batched"),
            cores,
        ),
        "notes": [
            f"video: {codec}",
            f"package: {package.note}",
            "frame age = capture (frame handed over by the source thread) -> message committed to the outbox",
            f"inference alone, frames/s by batch: {found['inference_batched']['fps_by_batch']}",
        ],
    }
