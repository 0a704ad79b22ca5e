"""Section 3: the MQTT publisher through its disk outbox to a local Mosquitto at QoS 1.

Two runs of the real `edge.mqtt.Publisher` (SQLite outbox, default `process` durability,
100 in flight), each on a fresh outbox, with inference payloads shaped like the runner's:
  sustained   connected first, then N messages enqueued as fast as one thread can while the drain
              thread sends them: messages/s = N / (first enqueue -> last PUBACK).
  drain only  N messages enqueued while disconnected (enqueue alone), then the publisher started:
              messages/s of sending and acknowledging alone.
p50/p99 of one `publish_inference` call (payload encoding, seq numbering, the committed insert).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.broker import Mosquitto, available
from benchmarks.machine import Settings
from edge.messages import InferenceResult
from edge.mqtt import MqttConfig, Publisher

PAYLOAD = InferenceResult.model_validate(
    {
        "schema": "lensops.inference/1",
        "device": "bench",
        "source": "cam",
        "frame_ts": "2026-11-22T05:27:55.123Z",
        "model": {"name": "shapes-detector", "version": "7", "variant": "onnx-fp32"},
        "latency_ms": {"preprocess": 0.9, "inference": 1.6, "total": 3.1},
        "predictions": [
            {"label": "circle", "score": 0.91, "box": [0.12, 0.30, 0.25, 0.71]},
            {"label": "star", "score": 0.77, "box": [0.52, 0.10, 0.65, 0.41]},
        ],
        "counts": {"circle": 1, "star": 1},
    }
)


def _publisher(url: str, state: str | object) -> Publisher:
    return Publisher.from_config(MqttConfig(url=url, reconnect_max_s=1.0), "bench", state)


def _enqueue(publisher: Publisher, n: int) -> tuple[list[float], float]:
    times = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        publisher.publish_inference("cam", PAYLOAD)
        times.append((time.perf_counter() - t0) * 1000)
    return times, start


def _wait_connected(publisher: Publisher, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not publisher.stats().connected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"publisher did not connect: {publisher.stats().last_error}")
        time.sleep(0.01)


def _drained(publisher: Publisher) -> float:
    """perf_counter() once the outbox is empty (RuntimeError after 120 s)."""
    if not publisher.wait_until_drained(120):
        raise RuntimeError(f"outbox not drained: {publisher.stats()}")
    return time.perf_counter()


def _figures(n: int, delivered_s: float, enqueue_s: float, times: list[float]) -> dict:
    """Messages/s delivered and enqueued, and the enqueue call's p50/p99 (ms)."""
    return {
        "messages": n,
        "messages_per_s": round(n / delivered_s),
        "enqueue_per_s": round(n / enqueue_s),
        "enqueue_p50_ms": round(float(np.percentile(times, 50)), 3),
        "enqueue_p99_ms": round(float(np.percentile(times, 99)), 3),
    }


def sustained(url: str, folder, n: int) -> dict:
    publisher = _publisher(url, folder).start()
    try:
        _wait_connected(publisher)
        times, start = _enqueue(publisher, n)
        enqueue_s = time.perf_counter() - start
        done = _drained(publisher)
    finally:
        publisher.stop(drain_timeout_s=2)
    return _figures(n, done - start, enqueue_s, times)


def drain_only(url: str, folder, n: int) -> dict:
    publisher = _publisher(url, folder)
    times, start = _enqueue(publisher, n)
    enqueue_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        publisher.start()
        done = _drained(publisher)
    finally:
        publisher.stop(drain_timeout_s=2)
    return _figures(n, done - start, enqueue_s, times)


def run(settings: Settings) -> dict:
    if not available():
        return {"title": "Publisher", "skipped": "mosquitto is not installed (apt-get install mosquitto)"}
    n = settings.runs(20000, 2000)
    with Mosquitto(settings.work / "mosquitto-publisher") as broker:
        results = {
            "sustained": sustained(broker.url, settings.work / "outbox-sustained", n),
            "drain_only": drain_only(broker.url, settings.work / "outbox-drain", n),
        }
    size = len(__import__("json").dumps(PAYLOAD.to_dict()))  # as before: json.dumps of the payload dict
    return {"title": f"Publisher: QoS 1 to a local Mosquitto through the disk outbox ({size}-byte payloads)", **results}
