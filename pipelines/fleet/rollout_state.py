"""The state of a rollout (`lensops fleet rollout`): what `rollout.json` holds, enough to resume, and its
Markdown rendering. The controller is pipelines/fleet/rollout.py."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Literal, Optional

from pydantic import ConfigDict, Field, ValidationError

from common.errors import UserError
from common.models import StrictModel

Phase = Literal["starting", "holding", "completed", "rolled_back"]
FINISHED = ("completed", "rolled_back")


class Target(StrictModel):
    version: str
    package_uri: str
    sha256: str


class Decision(StrictModel):
    ts: str
    ring: int
    action: Literal["started", "advanced", "completed", "rolled_back"]
    reasons: List[str] = Field(default_factory=list)
    devices: List[dict] = Field(default_factory=list, description="per device: health.Verdict.to_dict()")


class RolloutState(StrictModel):
    """What `rollout.json` holds: enough to resume (mutable: the controller updates it step by step)."""

    model_config = ConfigDict(frozen=False, populate_by_name=True)

    schema_: Literal["lensops.rollout/1"] = Field("lensops.rollout/1", alias="schema")
    id: str
    model: str
    alias: str
    fleet: str
    topic_prefix: str
    candidate: Target
    champion: Target
    rings: List[float]
    hold_s: float
    ring: int = 0
    phase: Phase = "starting"
    ring_started: Optional[str] = None
    roster: List[str] = Field(default_factory=list, description="devices of the fleet seen during the rollout")
    baseline: Dict[str, Dict[str, Dict[str, int]]] = Field(
        default_factory=dict, description="device -> source -> frames and drops when the current ring began"
    )
    decisions: List[Decision] = Field(default_factory=list)
    unpublished: bool = Field(False, description="the notices of the current phase are not yet acknowledged")


def now_ts() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_markdown(state: RolloutState) -> str:
    """The rollout as Markdown: the target, the phase and one section per decision."""
    lines = [
        f"# Rollout {state.id}",
        "",
        f"- model: {state.model}, alias {state.alias}, fleet {state.fleet}",
        f"- candidate: version {state.candidate.version}; champion: version {state.champion.version}",
        f"- rings: {', '.join(f'{r:g}%' for r in state.rings)}; hold {state.hold_s:g} s",
        f"- phase: **{state.phase}** (ring {state.ring})",
        "",
    ]
    for d in state.decisions:
        lines += [f"## {d.ts}: ring {d.ring} {d.action}", ""]
        lines += [f"- {r}" for r in d.reasons]
        if d.devices:
            lines += ["", "| device | ring | healthy | reasons |", "|---|---|---|---|"]
            lines += [
                f"| {v['device']} | {v['ring']} | {'yes' if v['healthy'] else 'no'} | {'; '.join(v['reasons'])} |"
                for v in d.devices
            ]
        lines.append("")
    return "\n".join(lines)


def load_state(path: Path) -> Optional[RolloutState]:
    if not path.exists():
        return None
    try:
        return RolloutState.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise UserError(f"{path}: not a readable rollout state ({str(exc).splitlines()[0]})") from None
