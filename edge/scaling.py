"""Defaults that depend on how many sources a device has: with at least as many sources as cores, the
sources keep every core busy, so each decoder and each model gets one thread (per-stream and intra-op
thread pools would only add CPU per frame). An explicit config value always wins."""

from __future__ import annotations

from typing import Optional

from edge.source_kinds import SourceKind


def with_decode_threads(configs: list[SourceKind], cores: int) -> list[SourceKind]:
    """The sources with `decode_threads` filled in where a kind has it and the config left it unset: 1 when
    the device has at least `cores` sources (each decoder then has a core's share at most, and FFmpeg's
    frame threads only add CPU: 720p H.264 took 5.9 CPU-ms a frame on one thread, 6.6 on two, on a 2-core
    EPYC), else as they are (FFmpeg's choice)."""
    if len(configs) < cores:
        return list(configs)
    return [
        c.model_copy(update={"decode_threads": 1})
        if "decode_threads" in type(c).model_fields and getattr(c, "decode_threads") is None
        else c
        for c in configs
    ]


def inference_threads(configured: Optional[int], sources: int, cores: int) -> Optional[int]:
    """Inference threads per model: the config's `threads` when set; else 1 when the device has at least
    `cores` sources (the sources already keep every core busy, and a runtime's intra-op pool only adds
    CPU: its second thread took 0.6 CPU-ms a frame, about 8% of the runner's, with 14 720p cameras of the
    demo detector on a 2-core EPYC); else None (the runtime's default: every core)."""
    if configured is not None:
        return configured
    return 1 if sources >= cores else None
