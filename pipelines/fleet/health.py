"""A ring's health from the devices' retained status (`lensops.status/1`), as a rollout judges it.

A device is healthy during a hold when all of these hold (pipelines.config.RolloutConfig sets the limits):
- it reported during the hold: its status `ts` is not older than the hold's start (a device that reports
  nothing is unhealthy, never healthy by default);
- it is online (not `offline`, not `degraded`);
- it serves the candidate version of the model (not a rejection or a rollback of it);
- per source: latency p99 (ms) within `max_latency_p99_ms` (default: the device's own `latency_budget_ms`),
  the share of frames dropped during the hold (drops / frames read, from the status counters at the hold's
  start and now) within `max_drop_rate`, and fps at least `min_fps` when set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from edge.rings import in_share


@dataclass(frozen=True)
class Limits:
    max_latency_p99_ms: Optional[float] = None
    max_drop_rate: float = 0.05
    min_fps: Optional[float] = None


@dataclass(frozen=True)
class Verdict:
    """One device's health over a hold: `reasons` is empty when healthy; `figures` what it was judged on."""

    device: str
    ring: int
    reasons: List[str]
    figures: Dict[str, object] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        head = {"device": self.device, "ring": self.ring, "healthy": self.healthy, "reasons": self.reasons}
        return {**head, **self.figures}


def parse_statuses(retained: Mapping[str, bytes]) -> Dict[str, dict]:
    """Retained `<prefix>/<device>/status` payloads -> device id (from the topic) -> status dict. A payload that
    is not a JSON object, or names another device than its topic, is left out (the device then counts as
    silent)."""
    out: Dict[str, dict] = {}
    for topic, payload in retained.items():
        device = topic.split("/")[-2] if topic.count("/") >= 2 else None
        try:
            status = json.loads(payload)
        except ValueError:
            continue
        if isinstance(status, dict) and device and status.get("device") == device:
            out[device] = status
    return out


def ring_members(devices: Sequence[str], shares: Sequence[Tuple[float, float]], upto: int) -> Dict[str, int]:
    """Device -> ring index, for the devices in rings 0..`upto` (edge.rings places)."""
    members = {}
    for device in devices:
        for index, share in enumerate(shares[: upto + 1]):
            if in_share(device, share):
                members[device] = index
                break
    return members


def counters(status: Optional[dict]) -> Dict[str, Dict[str, int]]:
    """Per source, the frames read and dropped so far (the baseline a hold's drop rate is measured from);
    {} when the status does not say."""
    try:
        return {
            sid: {"frames": int(src.get("frames") or 0), "drops": int(src.get("drops") or 0)}
            for sid, src in (status or {}).get("sources", {}).items()
            if isinstance(src, dict)
        }
    except (AttributeError, TypeError, ValueError):
        return {}


def parse_ts(text: object) -> Optional[datetime]:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None  # a time without its zone cannot be compared


def judge(
    device: str,
    ring: int,
    status: Optional[dict],
    baseline: Mapping[str, Mapping[str, int]],
    model: str,
    candidate: str,
    since: datetime,
    limits: Limits,
) -> Verdict:
    """The device's health over the hold that began at `since` (UTC); see the module docstring. A status that
    does not have the shape of `lensops.status/1` makes the device unhealthy, naming the problem."""
    figures: Dict[str, object] = {}
    try:
        reasons = _problems(status, baseline, model, candidate, since, limits, figures)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        reasons = [f"unreadable status ({type(exc).__name__}: {exc})"]
    return Verdict(device, ring, reasons, figures)


def _problems(status, baseline, model: str, candidate: str, since: datetime, limits: Limits, figures: dict) -> list:
    """What is wrong with the device over the hold (empty: healthy); fills `figures` with what was read."""
    if status is None:
        return ["reported nothing (no retained status)"]
    ts = parse_ts(status.get("ts"))
    if status.get("state") == "offline":
        return ["offline"]
    if ts is None or ts < since:
        seen = ts.isoformat(timespec="seconds") if ts else "never"
        return [f"reported nothing during the hold (last status {seen})"]
    reasons: List[str] = []
    served = ((status.get("models") or {}).get(model) or {}) if isinstance(status.get("models"), dict) else {}
    version = served.get("version")
    figures.update(version=version, state=status.get("state"))
    if version != candidate:
        bad = served.get("bad") or []
        why = "rejected or rolled back" if candidate in bad else "does not serve"
        reasons.append(f"{why} the candidate version {candidate} (serves {version})")
    if status.get("state") == "degraded":
        reasons.append(f"degraded: {status.get('last_error')}")
    budget = limits.max_latency_p99_ms or status.get("latency_budget_ms")
    sources = status.get("sources") or {}
    for sid, src in sorted(sources.items()):
        if not isinstance(src, dict):
            continue
        p99 = (src.get("latency_ms") or {}).get("p99")
        figures[f"{sid}.latency_p99_ms"] = p99
        if budget is not None and p99 is not None and p99 > budget:
            reasons.append(f"source {sid}: latency p99 {p99:.1f} ms over the {budget:g} ms budget")
        start = baseline.get(sid, {"frames": 0, "drops": 0})
        frames = int(src.get("frames") or 0) - start["frames"]
        drops = int(src.get("drops") or 0) - start["drops"]
        if frames < 0 or drops < 0:  # the device restarted during the hold: its counters began again
            frames, drops = int(src.get("frames") or 0), int(src.get("drops") or 0)
        rate = drops / frames if frames > 0 else 0.0
        figures[f"{sid}.drop_rate"] = round(rate, 4)
        if rate > limits.max_drop_rate:
            limit = f"{limits.max_drop_rate:.1%}"
            reasons.append(f"source {sid}: dropped {drops} of {frames} frames ({rate:.1%} > {limit})")
        fps = src.get("fps")
        figures[f"{sid}.fps"] = fps
        if limits.min_fps is not None and (fps is None or fps < limits.min_fps):
            reasons.append(f"source {sid}: {fps} fps under {limits.min_fps:g}")
    return reasons
