"""`lensops fleet rollout`: move a registered version through a fleet ring by ring, with automatic rollback.

Rings are cumulative shares of the fleet (`pipeline.rollout.rings`, e.g. [5, 25, 100]); a device's ring is
a stable function of its id (edge.rings). For ring i the controller points the registry alias
`<alias>-ring-<i>` at the candidate and publishes the retained ring notice
`<prefix>/fleets/<fleet>/rings/<i>/deployment`; the devices whose place is in that ring's share follow the
ring's alias, the others do not move. After `hold_s` the devices of rings 0..i are judged on their retained
status (pipelines.fleet.health) and, when required, on shadow agreement with the champion: all healthy ->
the next ring; otherwise every ring so far goes back to the champion (their notices name the base alias
again, whose version never moved) and the rollout stops. After the last ring the base alias moves to the
candidate, the fleet notice is published and the ring notices name the base alias again.

The state is persisted after every step (`<state-dir>/<model>/rollout.json`), so a controller killed
mid-rollout resumes where it was; every decision is written there with a Markdown rendering
(`rollout.md`) and published, retained, on `<prefix>/fleets/<fleet>/rollout`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List


from common.errors import RunFailed, UserError
from common.files import write_json, write_text
from edge.mqtt.topics import (
    fleet_deployment_topic,
    ring_deployment_topic,
    ring_deployments_filter,
    rollout_topic,
    shadow_filter,
    status_filter,
)
from edge.registry import RegistryWriter, open_writer
from edge.rings import ring_alias, shares
from pipelines.config import RolloutConfig, load_params
from pipelines.fleet import health, mqtt
from pipelines.fleet import report as shadow_report
from pipelines.fleet.notice import notice as fleet_notice
from pipelines.fleet.rollout_state import (
    FINISHED,
    Decision,
    RolloutState,
    Target,
    load_state,
    now_ts,
    render_markdown,
)

log = logging.getLogger(__name__)


class Controller:
    """Runs one rollout; `step()` does one step and persists; `run()` steps until finished."""

    def __init__(
        self,
        state: RolloutState,
        writer: RegistryWriter,
        mqtt_url: str,
        policy: RolloutConfig,
        state_file: Path,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.state, self.writer, self.mqtt_url, self.policy = state, writer, mqtt_url, policy
        self.state_file, self.sleep = Path(state_file), sleep
        self.shares = shares(state.rings)
        self.limits = health.Limits(policy.max_latency_p99_ms, policy.max_drop_rate, policy.min_fps)

    # -- persistence and publishing --------------------------------------------------------------

    def save(self) -> None:
        """`rollout.json` / `.md` (the model's current rollout) and `<id>.json` / `.md` (kept after it)."""
        data, text = self.state.model_dump(by_alias=True), render_markdown(self.state)
        for path in (self.state_file, self.state_file.with_name(f"{self.state.id}.json")):
            write_json(path, data)
            write_text(path.with_suffix(".md"), text)

    def _publish(self, items: List[tuple]) -> None:
        """(topic, payload) pairs, retained, on one connection; UserError when the broker is unreachable."""
        client_id = f"lensops-rollout-{self.state.fleet}-{os.getpid()}"
        mqtt.publish_retained(self.mqtt_url, items, client_id, "promote.mqtt_url")

    def notices(self) -> List[tuple]:
        """(topic, payload) of what the current phase has the fleet follow, and the report: a ring that holds,
        its notice; completed, the fleet notice and every ring notice naming the base alias; rolled back, the
        notices of the rings so far naming the base alias (whose version is the champion's)."""
        s = self.state
        if s.phase == "holding":
            return [self._ring_notice(s.ring, ring_alias(s.alias, s.ring), s.candidate), self._report()]
        if s.phase == "completed":
            fleet = fleet_notice(s.model, s.alias, s.candidate.version, s.candidate.package_uri, s.candidate.sha256)
            fleet = fleet.model_copy(update={"fleet": s.fleet})
            rings = [self._ring_notice(i, s.alias, s.candidate) for i in range(len(s.rings))]
            return [(fleet_deployment_topic(s.topic_prefix, s.fleet), fleet.to_dict()), *rings, self._report()]
        if s.phase == "rolled_back":
            return [*(self._ring_notice(i, s.alias, s.champion) for i in range(s.ring + 1)), self._report()]
        return [self._report()]

    def settle(self) -> None:
        """Make the registry and the fleet say what the state says, after persisting it: the aliases of the
        phase (a ring that starts: its alias on the candidate; completed: the base alias on the candidate;
        rolled back: every ring so far, and the base alias if it moved, on the champion), then its notices
        (retained). Each step is idempotent; a controller killed in between finds `unpublished` set and settles
        again when it resumes. A ring's hold starts when its notice is published (kept once acknowledged)."""
        s = self.state
        s.unpublished = True
        self.save()
        if s.phase == "holding":
            self.writer.set_alias(s.model, ring_alias(s.alias, s.ring), s.candidate.version)
            s.candidate = target(self.writer, s.model, ring_alias(s.alias, s.ring))  # the URI as the registry has it
            s.ring_started = now_ts()  # the hold starts with its notice (saved once the broker acknowledged it)
        elif s.phase == "completed":
            self.writer.set_alias(s.model, s.alias, s.candidate.version)
        elif s.phase == "rolled_back":
            for ring in range(s.ring + 1):
                self.writer.set_alias(s.model, ring_alias(s.alias, ring), s.champion.version)
            if self.writer.alias_version(s.model, s.alias) != s.champion.version:
                self.writer.set_alias(s.model, s.alias, s.champion.version)
        self._publish(self.notices())
        s.unpublished = False
        self.save()

    def clear_stale_ring_notices(self) -> None:
        """Clear the retained ring notices of earlier rollouts (their shares may overlap this one's rings)."""
        s = self.state
        topics = mqtt.read_retained(self.mqtt_url, ring_deployments_filter(s.topic_prefix, s.fleet), settle_s=0.5)
        if topics:
            self._publish([(topic, b"") for topic in topics])

    def _ring_notice(self, ring: int, alias: str, target: Target) -> tuple:
        s = self.state
        payload = fleet_notice(s.model, alias, target.version, target.package_uri, target.sha256).model_copy(
            update={"fleet": s.fleet, "ring": ring, "share": list(self.shares[ring]), "rollout": s.id}
        )
        return ring_deployment_topic(s.topic_prefix, s.fleet, str(ring)), payload.to_dict()

    def _report(self) -> tuple:
        """The state as it is once the batch it is published in has been acknowledged."""
        report = {**self.state.model_dump(by_alias=True), "unpublished": False}
        return rollout_topic(self.state.topic_prefix, self.state.fleet), report

    def _decide(self, action: str, reasons: List[str], verdicts: List[health.Verdict] = ()) -> None:
        self.state.decisions.append(
            Decision(
                ts=now_ts(),
                ring=self.state.ring,
                action=action,
                reasons=list(reasons),
                devices=[v.to_dict() for v in verdicts],
            )
        )
        log.info("rollout %s: ring %d %s%s", self.state.id, self.state.ring, action, f": {reasons}" if reasons else "")

    # -- reading the fleet ------------------------------------------------------------------------

    def statuses(self) -> Dict[str, dict]:
        s = self.state
        retained = mqtt.read_retained(
            self.mqtt_url, status_filter(s.topic_prefix), settle_s=0.5, field="promote.mqtt_url"
        )
        found = health.parse_statuses(retained)
        for device, status in found.items():
            models = status.get("models")
            serves = isinstance(models, dict) and s.model in models  # a device of the fleet running this model
            if status.get("fleet") == s.fleet and serves and device not in s.roster:
                s.roster.append(device)
        return {d: found[d] for d in s.roster if d in found}

    # -- the steps --------------------------------------------------------------------------------

    def step(self) -> None:
        s = self.state
        if s.phase == "starting":
            self._start_ring()
        elif s.phase == "holding":
            self._hold()
        self.save()

    def run(self) -> RolloutState:
        if self.state.unpublished:  # killed between persisting a step and publishing it
            self.settle()
        while self.state.phase not in FINISHED:
            self.step()
        return self.state

    def _start_ring(self) -> None:
        s = self.state
        if s.ring == 0:
            self.clear_stale_ring_notices()
        statuses = self.statuses()
        s.baseline = {device: health.counters(status) for device, status in statuses.items()}
        s.ring_started = None
        s.phase = "holding"
        alias = ring_alias(s.alias, s.ring)
        self._decide("started", [f"{alias} -> version {s.candidate.version}, share {self._share_text(s.ring)}"])
        self.settle()

    def _hold(self) -> None:
        s = self.state
        since = health.parse_ts(s.ring_started)
        # a resumed controller still listens for a shadow report period before it judges
        due = max(since.timestamp() + s.hold_s, time.time() + self._shadow_listen_s())
        with mqtt.Subscription(self.mqtt_url, shadow_filter(s.topic_prefix), field="promote.mqtt_url") as shadow:
            while True:
                verdicts = self._judge(since)
                hard = [v for v in verdicts if any("rejected or rolled back" in r for r in v.reasons)]
                left = due - time.time()
                if hard or left <= 0:
                    break
                self.sleep(min(self.policy.poll_s, left))
            shadow_reasons = self._shadow_misses(shadow.messages(), [v.device for v in verdicts]) if not hard else []
        sick = [v for v in verdicts if not v.healthy]
        if sick or shadow_reasons:
            reasons = [f"{v.device} (ring {v.ring}): {'; '.join(v.reasons)}" for v in sick] + shadow_reasons
            return self._roll_back(reasons, verdicts)
        note = [f"{len(verdicts)} device(s) healthy over {s.hold_s:g} s"] if verdicts else ["no devices in the ring"]
        if s.ring + 1 < len(s.rings):
            self._decide("advanced", note, verdicts)
            s.ring += 1
            s.phase = "starting"
            return
        self._complete(note, verdicts)

    def _shadow_listen_s(self) -> float:
        p = self.policy
        shadow = p.min_shadow_agreement is not None or p.min_shadow_frames or p.min_shadow_devices
        return self.policy.shadow_report_s + self.policy.poll_s if shadow else 0.0

    def _shadow_misses(self, messages: List[tuple], devices: List[str]) -> List[str]:
        """Why the ring's shadow figures miss the policy (empty when met or not required). The devices of the
        ring serve the candidate and shadow the champion, so their reports name the pair the other way round:
        agreement is symmetric (top-1 agreement, box F1)."""
        policy, s = self.policy, self.state
        if policy.min_shadow_agreement is None and not policy.min_shadow_frames and not policy.min_shadow_devices:
            return []
        members = set(devices)
        reports = [
            r
            for r in shadow_report.parse(messages)
            if r.device in members
            and r.champion.version == s.candidate.version
            and r.candidate is not None
            and r.candidate.version == s.champion.version
        ]
        found = shadow_report.aggregate(reports, s.model)
        missed = shadow_report.gate(
            found, policy.min_shadow_devices or None, policy.min_shadow_frames or None, policy.min_shadow_agreement
        )
        return [f"shadow (candidate {s.candidate.version} vs champion {s.champion.version}): {m}" for m in missed]

    def _judge(self, since: datetime) -> List[health.Verdict]:
        s = self.state
        statuses = self.statuses()
        members = health.ring_members(s.roster, self.shares, s.ring)
        return [
            health.judge(
                device,
                ring,
                statuses.get(device),
                s.baseline.get(device, {}),
                s.model,
                s.candidate.version,
                since,
                self.limits,
            )
            for device, ring in sorted(members.items())
        ]

    def _complete(self, note: List[str], verdicts: List[health.Verdict]) -> None:
        s = self.state
        s.phase = "completed"
        self._decide("completed", [*note, f"{s.alias} -> version {s.candidate.version}"], verdicts)
        self.settle()

    def _roll_back(self, reasons: List[str], verdicts: List[health.Verdict]) -> None:
        s = self.state
        s.phase = "rolled_back"
        self._decide("rolled_back", reasons, verdicts)
        self.settle()

    def abort(self, why: str) -> None:
        """Roll back every ring so far now (an operator's decision)."""
        if self.state.phase in FINISHED:
            raise UserError(f"{self.state_file}: rollout {self.state.id} already {self.state.phase}")
        self._roll_back([f"aborted: {why}"], [])

    def _share_text(self, ring: int) -> str:
        low, high = self.shares[ring]
        return f"[{low:g}%, {high:g}%)"


def target(writer: RegistryWriter, model: str, alias: str) -> Target:
    resolved = writer.resolve(model, alias)
    return Target(version=resolved.version, package_uri=resolved.uri, sha256=resolved.sha256)


def new_state(
    writer: RegistryWriter, model: str, version: str, alias: str, fleet: str, prefix: str, policy: RolloutConfig
) -> RolloutState:
    """Check everything before anything moves: the version is registered, the alias has a champion."""
    from edge.registry import RegistryError

    champion_version = writer.alias_version(model, alias)
    if champion_version is None:
        raise UserError(
            f"{model}@{alias} names no version: there is no champion to roll back to "
            f"(promote the first version with `lensops promote`)"
        )
    if champion_version == str(version):
        raise UserError(f"{model}@{alias} already names version {version}: nothing to roll out")
    try:
        tags = writer.tags(model, str(version))
    except RegistryError as exc:
        if exc.not_found:
            raise UserError(f"{model} has no registered version {version!r} ({exc})") from None
        raise
    if not tags.get("sha256"):
        raise UserError(f"{model} version {version} has no sha256 tag (not registered by `lensops register`)")
    champion = target(writer, model, alias)
    # the candidate's package URI as the registry gives it: resolve through a ring alias set at start
    return RolloutState(
        id=f"{model}-{version}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}",
        model=model,
        alias=alias,
        fleet=fleet,
        topic_prefix=prefix,
        candidate=Target(version=str(version), package_uri="", sha256=tags["sha256"]),
        champion=champion,
        rings=list(policy.rings),
        hold_s=policy.hold_s,
    )


def add_parser(sub) -> None:
    p = sub.add_parser(
        "rollout",
        help="roll a registered version out ring by ring; roll back on unhealthy live figures",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--version", help="the version to roll out (omit to resume the model's rollout)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="pipeline.registry/promote/rollout")
    p.add_argument("--state-dir", type=Path, default=Path("reports/rollout"), help="where rollout.json is kept")
    p.add_argument("--hold-s", type=float, help="override pipeline.rollout.hold_s")
    p.add_argument("--abort", action="store_true", help="roll the model's rollout back now")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = params.pipeline
    policy = cfg.rollout
    if args.hold_s is not None:
        if args.hold_s <= 0:
            raise UserError(f"--hold-s: {args.hold_s:g} must be > 0")
        policy = policy.model_copy(update={"hold_s": args.hold_s})
    if not cfg.promote.mqtt_url:
        raise UserError(f"{args.params}: pipeline.promote.mqtt_url is not set (the broker the fleet listens on)")
    state_file = args.state_dir / args.model / "rollout.json"
    state = load_state(state_file)
    writer = open_writer(cfg.registry)
    if state is not None and (state.phase not in FINISHED or state.unpublished):
        if args.version and str(args.version) != state.candidate.version:
            raise UserError(
                f"{state_file}: rollout {state.id} of version {state.candidate.version} is in progress "
                f"(ring {state.ring}); finish it or --abort it first"
            )
        log.info("resuming rollout %s at ring %d (%s)", state.id, state.ring, state.phase)
        if args.hold_s is not None:
            state.hold_s = args.hold_s
    elif args.abort:
        raise UserError(f"{state_file}: no rollout of {args.model} in progress")
    elif not args.version:
        raise UserError(f"--version: required (no rollout of {args.model} in progress to resume)")
    else:
        state = new_state(
            writer, args.model, args.version, cfg.promote.alias, cfg.promote.fleet, cfg.promote.topic_prefix, policy
        )
        mqtt.close(mqtt.connect(cfg.promote.mqtt_url, "lensops-rollout-check", "promote.mqtt_url"))
    controller = Controller(state, writer, cfg.promote.mqtt_url, policy, state_file)
    if args.abort:
        controller.abort("operator")
    else:
        controller.run()
    print(render_markdown(controller.state))
    print(f"rollout state: {state_file} (and {state_file.with_suffix('.md')})")
    if controller.state.phase == "rolled_back":
        why = "; ".join(controller.state.decisions[-1].reasons)
        raise RunFailed(f"rollout {controller.state.id} rolled back: {why}")
    return 0
