"""The figures a person reads from one source of the device status, the same on the device's page and
in `lensops fleet status`: model name/version/variant, fps, drops, latency p50/p99 and frame age p99 (ms).

`source_figures` takes a status's source entry (a dict, as on the wire; missing or malformed parts
become None) and never raises; `short` shortens an error message for a table cell.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

SHORT_ERROR = 60  # characters of an error message shown in a table


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _part(entry: dict, key: str) -> dict:
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def source_figures(entry: Any) -> Dict[str, Any]:
    """{state, model, version, variant, fps, drops, latency_p50_ms, latency_p99_ms, latency_frames,
    frame_age_p99_ms, last_error} of one source entry of a `lensops.status/1` (None where absent)."""
    entry = entry if isinstance(entry, dict) else {}
    model, latency, age = _part(entry, "model"), _part(entry, "latency_ms"), _part(entry, "frame_age_ms")
    return {
        "state": _text(entry.get("state")),
        "model": _text(model.get("name")),
        "version": _text(model.get("version")),
        "variant": _text(model.get("variant")),
        "fps": _number(entry.get("fps")),
        "drops": _count(entry.get("drops")),
        "latency_p50_ms": _number(latency.get("p50")),
        "latency_p99_ms": _number(latency.get("p99")),
        "latency_frames": _count(latency.get("n")),
        "frame_age_p99_ms": _number(age.get("p99")),
        "last_error": _text(entry.get("last_error")),
    }


def over_budget(p99_ms: Optional[float], budget_ms: Any) -> Optional[bool]:
    """Whether a latency p99 is over the budget; None when either is unknown."""
    budget = _number(budget_ms)
    return None if p99_ms is None or budget is None else p99_ms > budget


def short(text: Optional[str], limit: int = SHORT_ERROR) -> str:
    """`text` on one line, cut to `limit` characters (ending in "..."); "" for None."""
    if not text:
        return ""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def number_text(value: Optional[float], digits: int = 1) -> str:
    """A figure for a table cell: "-" when unknown."""
    return "-" if value is None else f"{value:.{digits}f}"
