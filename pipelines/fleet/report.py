"""`lensops fleet report`: listen to the devices' shadow reports and say how a candidate compares with the champion.

    lensops fleet report --mqtt-url mqtt://broker:1883 --model shapes-detector [--candidate 8] [--listen-s 60]
        [--fleet lobby] [--min-devices 3 --min-frames 500 --min-agreement 0.95] [--json] [--out reports/shadow]

Shadow reports (`lensops.shadow/1`, edge/shadow.py) are not retained: the command listens on
`<prefix>/+/+/shadow` for `--listen-s` seconds. Each report carries the cumulative `total` since its
(champion, candidate) pair began on that device and source, so the latest report per (device, source, champion
version, candidate version) is what counts. With `--fleet` only devices whose retained status names that fleet
are counted. With any `--min-*` option the command is a gate: it prints each requirement as met or missed and
exits 1 when one is missed (0 when all are met). `--out DIR` writes shadow-report.json and shadow-report.md.

`aggregate` and `gate` are pure functions for callers that collected reports themselves (the rollout controller).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from pydantic import ValidationError

from common.errors import RunFailed, UserError
from common.files import write_json, write_text
from edge.messages import ShadowReport
from edge.mqtt.topics import shadow_filter, status_filter
from pipelines.fleet import mqtt
from pipelines.fleet.health import parse_statuses

log = logging.getLogger(__name__)

JSON_NAME, MARKDOWN_NAME = "shadow-report.json", "shadow-report.md"


@dataclass(frozen=True)
class LatencySpread:
    """The `total` p99 latency (ms) of the counted (device, source) reports: the worst and the median of them;
    None when no report had latencies."""

    max: Optional[float]
    median: Optional[float]


@dataclass(frozen=True)
class PairAggregate:
    """One (model, champion version, candidate version) over the latest report of each (device, source).

    devices / sources: how many distinct devices / (device, source) compared at least one frame;
    frames, skipped, failed: sums of the reports' `total`; agreement: frame-weighted mean of the reports'
    `total.agreement` (None when no frame was compared); latency_p99_ms: champion and candidate LatencySpread;
    per_source: one row per (device, source): device, source, frames, agreement, p99 ms of both models."""

    model: str
    champion: str
    candidate: str
    devices: int
    sources: int
    frames: int
    skipped: int
    failed: int
    agreement: Optional[float]
    latency_p99_ms: Dict[str, LatencySpread]
    per_source: List[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ShadowAggregate:
    """What `aggregate` found for one model (and candidate version when asked for).

    model, candidate: what was asked for (candidate None: any); pairs: one PairAggregate per (champion,
    candidate) seen, most frames first; devices / frames / agreement: over every pair (distinct devices that
    compared frames; summed frames; frame-weighted agreement, None without frames); candidates: the candidate
    versions seen (the gate wants exactly one); reports: how many latest reports were counted;
    without_candidate: (device, source) whose latest report had no candidate model loaded."""

    model: str
    candidate: Optional[str]
    pairs: List[PairAggregate]
    devices: int
    frames: int
    agreement: Optional[float]
    candidates: List[str]
    reports: int
    without_candidate: List[str]

    def to_dict(self) -> dict:
        return asdict(self)


def latest(reports: Iterable[ShadowReport]) -> List[ShadowReport]:
    """The newest report (by `ts`, then arrival) per (device, source, model, champion version, candidate version)."""
    newest: Dict[Tuple[str, ...], ShadowReport] = {}
    for report in reports:
        key = (
            report.device,
            report.source,
            report.model,
            report.champion.version,
            report.candidate.version if report.candidate else "",
        )
        if key not in newest or report.ts >= newest[key].ts:
            newest[key] = report
    return list(newest.values())


def _weighted(rows: List[Tuple[int, Optional[float]]]) -> Optional[float]:
    frames = sum(n for n, a in rows if a is not None)
    if not frames:
        return None
    return round(sum(n * a for n, a in rows if a is not None) / frames, 6)


def _spread(values: List[float]) -> LatencySpread:
    if not values:
        return LatencySpread(None, None)
    return LatencySpread(max(values), round(statistics.median(values), 3))


def _pair(model: str, champion: str, candidate: str, reports: List[ShadowReport]) -> PairAggregate:
    counted = [r for r in reports if r.total.frames > 0]
    p99 = {
        side: [getattr(r.total.latency_ms, side).p99 for r in counted if getattr(r.total.latency_ms, side)]
        for side in ("champion", "candidate")
    }
    rows = [
        {
            "device": r.device,
            "source": r.source,
            "frames": r.total.frames,
            "skipped": r.total.skipped,
            "failed": r.total.failed,
            "agreement": r.total.agreement,
            "champion_p99_ms": r.total.latency_ms.champion.p99 if r.total.latency_ms.champion else None,
            "candidate_p99_ms": r.total.latency_ms.candidate.p99 if r.total.latency_ms.candidate else None,
        }
        for r in sorted(reports, key=lambda r: (r.device, r.source))
    ]
    return PairAggregate(
        model=model,
        champion=champion,
        candidate=candidate,
        devices=len({r.device for r in counted}),
        sources=len(counted),
        frames=sum(r.total.frames for r in reports),
        skipped=sum(r.total.skipped for r in reports),
        failed=sum(r.total.failed for r in reports),
        agreement=_weighted([(r.total.frames, r.total.agreement) for r in counted]),
        latency_p99_ms={side: _spread(values) for side, values in p99.items()},
        per_source=rows,
    )


def aggregate(reports: List[ShadowReport], model: str, candidate: Optional[str] = None) -> ShadowAggregate:
    """The shadow figures of `model` (and only candidate version `candidate` when given) over `reports`, which
    may hold several reports per device and source (the latest of each pair counts, see `latest`)."""
    mine = [r for r in latest(reports) if r.model == model]
    without = sorted(f"{r.device}/{r.source}" for r in mine if r.candidate is None)
    mine = [r for r in mine if r.candidate is not None and (candidate is None or r.candidate.version == candidate)]
    groups: Dict[Tuple[str, str], List[ShadowReport]] = {}
    for report in mine:
        groups.setdefault((report.champion.version, report.candidate.version), []).append(report)
    pairs = sorted(
        (_pair(model, champ, cand, group) for (champ, cand), group in groups.items()),
        key=lambda p: (-p.frames, p.champion, p.candidate),
    )
    counted = [r for r in mine if r.total.frames > 0]
    return ShadowAggregate(
        model=model,
        candidate=candidate,
        pairs=pairs,
        devices=len({r.device for r in counted}),
        frames=sum(p.frames for p in pairs),
        agreement=_weighted([(r.total.frames, r.total.agreement) for r in counted]),
        candidates=sorted({p.candidate for p in pairs}),
        reports=len(mine),
        without_candidate=without,
    )


def gate(
    result: ShadowAggregate,
    min_devices: Optional[int] = None,
    min_frames: Optional[int] = None,
    min_agreement: Optional[float] = None,
) -> List[str]:
    """The requirements `result` misses, one sentence each (empty: passed). A requirement given as None is not
    checked. Besides the min-* figures, more than one candidate version in `result` is a miss (the figures
    would mix versions: aggregate with `candidate=`)."""
    missed = []
    if len(result.candidates) > 1:
        missed.append(f"several candidate versions reported ({', '.join(result.candidates)}): name one")
    if min_devices is not None and result.devices < min_devices:
        missed.append(f"{result.devices} device(s) compared frames, fewer than the {min_devices} required")
    if min_frames is not None and result.frames < min_frames:
        missed.append(f"{result.frames} frame(s) compared, fewer than the {min_frames} required")
    if min_agreement is not None:
        if result.agreement is None:
            missed.append(f"no agreement figure (no frame compared); {min_agreement:g} required")
        elif result.agreement < min_agreement:
            missed.append(f"agreement {result.agreement:.4f} is below the {min_agreement:g} required")
    return missed


def requirements(args: argparse.Namespace, result: ShadowAggregate) -> List[Tuple[str, bool]]:
    """Each gate requirement asked for on the command line with whether it is met."""
    rows = []
    if args.min_devices is not None:
        rows.append((f"devices >= {args.min_devices} (have {result.devices})", result.devices >= args.min_devices))
    if args.min_frames is not None:
        rows.append((f"frames >= {args.min_frames} (have {result.frames})", result.frames >= args.min_frames))
    if args.min_agreement is not None:
        have = "none" if result.agreement is None else f"{result.agreement:.4f}"
        met = result.agreement is not None and result.agreement >= args.min_agreement
        rows.append((f"agreement >= {args.min_agreement:g} (have {have})", met))
    if len(result.candidates) > 1:
        rows.append((f"one candidate version (have {', '.join(result.candidates)})", False))
    return rows


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(result: ShadowAggregate) -> str:
    """The aggregate as a Markdown table (what the command prints and writes)."""
    lines = [
        f"# Shadow report: {result.model}" + (f" candidate {result.candidate}" if result.candidate else ""),
        "",
        f"{result.reports} (device, source) report(s); {result.devices} device(s); {result.frames} frame(s) compared;"
        f" agreement {'-' if result.agreement is None else f'{result.agreement:.4f}'}",
        "",
        "| champion | candidate | devices | sources | frames | skipped | failed | agreement "
        "| champion p99 ms (max / median) | candidate p99 ms (max / median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result.pairs:
        champ, cand = p.latency_p99_ms["champion"], p.latency_p99_ms["candidate"]
        lines.append(
            f"| {p.champion} | {p.candidate} | {p.devices} | {p.sources} | {p.frames} | {p.skipped} | {p.failed} "
            f"| {'-' if p.agreement is None else f'{p.agreement:.4f}'} | {_ms(champ.max)} / {_ms(champ.median)} "
            f"| {_ms(cand.max)} / {_ms(cand.median)} |"
        )
    if not result.pairs:
        lines.append("| - | - | 0 | 0 | 0 | 0 | 0 | - | - | - |")
    if result.without_candidate:
        lines += ["", f"No candidate model loaded on: {', '.join(result.without_candidate)}"]
    return "\n".join(lines) + "\n"


def parse(messages: List[Tuple[str, bytes]]) -> List[ShadowReport]:
    """The valid shadow reports among (topic, payload); others are logged and left out."""
    reports = []
    for topic, payload in messages:
        try:
            reports.append(ShadowReport.model_validate_json(payload))
        except ValidationError as exc:
            log.warning("%s: not a lensops.shadow/1 report, ignored: %s", topic, str(exc).splitlines()[0])
    return reports


def fleet_devices(url: str, prefix: str, fleet: str) -> set:
    """Devices whose retained status names `fleet`."""
    statuses = parse_statuses(mqtt.read_retained(url, status_filter(prefix)))
    return {device for device, status in statuses.items() if status.get("fleet") == fleet}


def _check_args(args: argparse.Namespace) -> None:
    mqtt.check_url(args.mqtt_url, "--mqtt-url")
    if not args.listen_s > 0:
        raise UserError(f"--listen-s: {args.listen_s:g} must be more than 0 seconds")
    for name in ("min_devices", "min_frames"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UserError(f"--{name.replace('_', '-')}: {value} must be 0 or more")
    if args.min_agreement is not None and not 0 <= args.min_agreement <= 1:
        raise UserError(f"--min-agreement: {args.min_agreement:g} must be between 0 and 1")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out: {args.out} exists and is not a folder")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    messages = mqtt.listen(args.mqtt_url, shadow_filter(args.prefix), args.listen_s, field="--mqtt-url")
    reports = parse(messages)
    if args.fleet:
        members = fleet_devices(args.mqtt_url, args.prefix, args.fleet)
        reports = [r for r in reports if r.device in members]
    result = aggregate(reports, args.model, args.candidate)
    checks = requirements(args, result)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        body = {**result.to_dict(), "gate": [{"requirement": text, "met": met} for text, met in checks]}
        write_json(args.out / JSON_NAME, body)
        gate_md = "".join(f"- {'met' if met else 'MISSED'}: {text}\n" for text, met in checks)
        write_text(args.out / MARKDOWN_NAME, table(result) + (f"\n## Gate\n\n{gate_md}" if checks else ""))
    if args.json:
        print(json.dumps({**result.to_dict(), "gate": [{"requirement": t, "met": m} for t, m in checks]}, indent=2))
    else:
        print(table(result), end="")
        for text, met in checks:
            print(f"{'met' if met else 'MISSED'}: {text}")
    missed = gate(result, args.min_devices, args.min_frames, args.min_agreement)
    if missed:
        raise RunFailed("shadow gate missed: " + "; ".join(missed))
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="aggregate the devices' shadow reports (candidate vs champion); optionally gate on them",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--mqtt-url", required=True, help="the fleet's broker, mqtt://[user:pass@]host[:port]")
    parser.add_argument("--prefix", default="lensops", help="topic prefix (default lensops)")
    parser.add_argument("--fleet", help="count only devices whose retained status names this fleet")
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--candidate", help="count only this candidate version (default: every candidate seen)")
    parser.add_argument("--listen-s", type=float, default=60.0, help="seconds to listen for reports (default 60)")
    parser.add_argument("--min-devices", type=int, help="gate: at least this many devices compared frames")
    parser.add_argument("--min-frames", type=int, help="gate: at least this many frames compared in all")
    parser.add_argument("--min-agreement", type=float, help="gate: frame-weighted agreement at least this (0..1)")
    parser.add_argument("--json", action="store_true", help="print the aggregate as JSON instead of a table")
    parser.add_argument("--out", type=Path, help="write shadow-report.json and shadow-report.md into this folder")
    parser.set_defaults(func=run)
