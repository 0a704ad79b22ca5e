"""The runner's numbers in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import math
from typing import Iterable, Optional

SOURCE_STATES = ("starting", "ok", "degraded", "ended", "stopped")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: object) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value) if isinstance(value, float) else str(value)


class MetricsText:
    """Families written one after another: `# HELP`, `# TYPE`, then the samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[str, dict, object]]) -> None:
        """Samples as (suffix, labels, value); a value that is not a number is left out."""
        lines = []
        for suffix, labels, value in samples:
            text = _number(value)
            if text is None:
                continue
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{suffix}{{{label_text}}} {text}" if label_text else f"{name}{suffix} {text}")
        if lines:
            self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"] + lines

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render_metrics(stats: dict, models: dict[str, dict], latency: dict[str, dict], clients: int) -> str:
    """`stats` as given to StreamState.set_stats; `models` and `latency` per source from update_frame.

    `latency[source]` holds `count`, `sum_s` and `last_ms` (the stage -> milliseconds of the newest frame).
    """
    sources = stats.get("sources") or {}
    out = MetricsText()

    def per_source(key: str):
        return (("", {"source": sid}, s.get(key)) for sid, s in sources.items())

    out.family(
        "lensops_source_state",
        "gauge",
        "1 for the state the source is in.",
        (
            ("", {"source": sid, "state": state}, int(s.get("state") == state))
            for sid, s in sources.items()
            for state in SOURCE_STATES
        ),
    )
    out.family("lensops_source_fps", "gauge", "Frames per second read from the source (last 2 s).", per_source("fps"))
    out.family("lensops_source_frames_total", "counter", "Frames read from the source.", per_source("frames"))
    out.family(
        "lensops_source_drops_total",
        "counter",
        "Frames overwritten before inference (newest wins).",
        per_source("drops"),
    )
    out.family(
        "lensops_source_reconnects_total",
        "counter",
        "Reconnect attempts after a failure or stall.",
        per_source("reconnects"),
    )
    out.family(
        "lensops_inference_latency_seconds",
        "summary",
        "Time from frame to predictions (total).",
        [
            s
            for sid, lat in latency.items()
            for s in (("_sum", {"source": sid}, lat["sum_s"]), ("_count", {"source": sid}, lat["count"]))
        ],
    )
    out.family(
        "lensops_inference_last_latency_seconds",
        "gauge",
        "Latency of the newest frame by stage.",
        (
            ("", {"source": sid, "stage": stage}, ms / 1000 if _number(ms) else None)
            for sid, lat in latency.items()
            for stage, ms in (lat.get("last_ms") or {}).items()
        ),
    )
    out.family(
        "lensops_outbox_depth", "gauge", "Messages waiting in the MQTT outbox.", [("", {}, stats.get("outbox_depth"))]
    )
    out.family(
        "lensops_outbox_dead_letters",
        "gauge",
        "Messages in the outbox's dead-letter table (too large for the broker, or a poison message it disconnects on).",
        [("", {}, stats.get("mqtt_dead_letters"))],
    )
    out.family(
        "lensops_model_info",
        "gauge",
        "The model serving each source (value is always 1).",
        (
            (
                "",
                {
                    "source": sid,
                    "name": m.get("name", ""),
                    "version": m.get("version", ""),
                    "variant": m.get("variant", ""),
                },
                1,
            )
            for sid, m in models.items()
            if m
        ),
    )
    out.family("lensops_stream_clients", "gauge", "MJPEG clients connected to the project stream.", [("", {}, clients)])
    return out.text()
