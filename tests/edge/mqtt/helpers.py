"""Small builders shared by the MQTT tests and the publisher child process they kill."""

from __future__ import annotations

from typing import Any, Iterable

from edge.messages import InferenceResult
from edge.mqtt import MqttConfig, utc_timestamp


def config(url: str, **overrides: Any) -> MqttConfig:
    """An `mqtt:` section as a user writes it, reconnecting quickly (the logic is the same as with 30 s)."""
    return MqttConfig.model_validate(
        {"url": url, "topic_prefix": "lensops", "qos": 1, "reconnect_max_s": 1.0, **overrides}
    )


def inference(device: str = "cam-01", source: str = "door", counts: dict[str, int] | None = None) -> InferenceResult:
    """A `lensops.inference/1` payload without `seq` (the publisher sets it)."""
    return InferenceResult.model_validate(inference_dict(device, source, counts))


def inference_dict(device: str = "cam-01", source: str = "door", counts: dict[str, int] | None = None) -> dict:
    """`inference()` as JSON: what a subscriber reads, without `seq`."""
    counts = {"circle": 1} if counts is None else counts
    predictions = [
        {"label": label, "score": 0.9, "box": [0.1, 0.2, 0.3, 0.4]} for label, n in counts.items() for _ in range(n)
    ]
    return {
        "schema": "lensops.inference/1",
        "device": device,
        "source": source,
        "frame_ts": utc_timestamp(),
        "model": {"name": "shapes-detector", "version": "7", "variant": "onnx-fp32"},
        "latency_ms": {"preprocess": 0.9, "inference": 1.6, "total": 3.1},
        "predictions": predictions,
        "counts": counts,
    }


def first_occurrences(seqs: Iterable[int]) -> list[int]:
    """`seqs` with repeats removed (QoS 1 is at least once: a resent message keeps its seq)."""
    seen: set[int] = set()
    return [s for s in seqs if not (s in seen or seen.add(s))]
