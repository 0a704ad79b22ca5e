"""`lensops fleet status`: one row per device from the retained statuses `<prefix>/+/status`.

    lensops fleet status --mqtt-url mqtt://broker:1883 [--prefix lensops] [--fleet NAME] [--json]
                         [--settle-s 1] [--stale-s 60]

`fleet_rows(statuses, now)` is the pure part (also for the rollout controller): retained payloads in,
`DeviceRow`s out, one per status topic, sorted by device. A payload that is not JSON or not a valid
`lensops.status/1` becomes a row in state `invalid` whose `problem` says why; it never raises.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Union

from pydantic import ValidationError

from common.errors import UserError
from edge.messages import STATUS, Status
from edge.mqtt.topics import status_filter
from edge.redact import redact
from edge.status_view import number_text, over_budget, short, source_figures
from pipelines.fleet import mqtt

URL_ENV = "LENSOPS_MQTT_URL"
DEFAULT_STALE_S = 60.0
INVALID = "invalid"  # the state of a row whose status could not be read


@dataclass(frozen=True)
class SourceRow:
    """One source of a device, from its status (None: the status did not say).

    source: the source id. state: ok | degraded | failed | starting | ended | stopped ... (the runner's).
    model, version, variant: the model serving it. fps: frames per second read from the source.
    drops: frames the source dropped since the runner started (newest frame wins).
    latency_p50_ms, latency_p99_ms: the model's time per frame (ms) over its last `latency_frames`
    frames. frame_age_p99_ms: capture to result (ms), p99 over the same frames.
    over_budget: latency_p99_ms > the device's latency_budget_ms (None without either).
    last_error: the source's last error, in full.
    """

    source: str
    state: Optional[str]
    model: Optional[str]
    version: Optional[str]
    variant: Optional[str]
    fps: Optional[float]
    drops: Optional[int]
    latency_p50_ms: Optional[float]
    latency_p99_ms: Optional[float]
    latency_frames: Optional[int]
    frame_age_p99_ms: Optional[float]
    over_budget: Optional[bool]
    last_error: Optional[str]


@dataclass(frozen=True)
class DeviceRow:
    """One device as its retained status tells it.

    device: the device id (from the status; from the topic when the status is unreadable). topic: the
    status topic. fleet: the device's fleet (None: the status does not say, e.g. the last will).
    state: online | degraded | offline (the device's word) | invalid (the status could not be read).
    sources: one SourceRow per source, by id. outbox_depth: messages waiting on the device.
    latency_budget_ms: the device's budget per frame (None: none, or not reported).
    last_error: the device's last error, in full. ts: when the device published the status (RFC 3339
    UTC). age_s: seconds from ts to `now` (None without ts). stale: online or degraded but older
    than stale_s (the device may be gone without its last will yet). problem: why the status could
    not be read (state `invalid`), else None.
    """

    device: str
    topic: str
    fleet: Optional[str]
    state: str
    sources: List[SourceRow]
    outbox_depth: Optional[int]
    latency_budget_ms: Optional[float]
    last_error: Optional[str]
    ts: Optional[str]
    age_s: Optional[float]
    stale: bool
    problem: Optional[str]

    def to_dict(self) -> Dict[str, Any]:
        """The row as JSON-ready objects (the keys of `--json`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeviceRow":
        """A row back from `to_dict()` / `--json` output (KeyError or TypeError when it is not one)."""
        return cls(**{**data, "sources": [SourceRow(**s) for s in data["sources"]]})


def _seconds(ts: Optional[str]) -> Optional[float]:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _problem_row(topic: str, device: str, problem: str) -> DeviceRow:
    return DeviceRow(device, topic, None, INVALID, [], None, None, None, None, None, False, problem)


def _why_invalid(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "status"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"not a valid {STATUS}: {where}: {first.get('msg')}{more}"


def device_row(
    topic: str, payload: Union[bytes, str, Mapping], now: float, stale_s: float = DEFAULT_STALE_S
) -> DeviceRow:
    """The row of one retained status (`now`: epoch seconds, time.time()); never raises."""
    device = topic.rsplit("/", 2)[-2] if topic.count("/") >= 2 else topic
    if isinstance(payload, (bytes, bytearray, str)):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            return _problem_row(topic, device, f"not JSON: {exc}")
    if not isinstance(payload, Mapping):
        return _problem_row(topic, device, f"not a JSON object: {short(repr(payload))}")
    try:
        status = Status.model_validate(dict(payload))
    except ValidationError as exc:
        return _problem_row(topic, str(payload.get("device") or device), _why_invalid(exc))
    budget = status.latency_budget_ms
    sources = []
    for source_id, entry in sorted((payload.get("sources") or {}).items()):
        figures = source_figures(entry)
        sources.append(
            SourceRow(source=source_id, over_budget=over_budget(figures["latency_p99_ms"], budget), **figures)
        )
    sent = _seconds(status.ts)
    age = None if sent is None else round(now - sent, 3)
    return DeviceRow(
        device=status.device,
        topic=topic,
        fleet=status.fleet,
        state=status.state,
        sources=sources,
        outbox_depth=status.outbox.depth if status.outbox is not None else None,
        latency_budget_ms=budget,
        last_error=status.last_error,
        ts=status.ts,
        age_s=age,
        stale=status.state != "offline" and age is not None and age > stale_s,
        problem=None,
    )


def fleet_rows(
    statuses: Mapping[str, Union[bytes, str, Mapping]],
    now: Optional[float] = None,
    stale_s: float = DEFAULT_STALE_S,
    fleet: Optional[str] = None,
) -> List[DeviceRow]:
    """One DeviceRow per retained status (topic -> payload: bytes, text or a parsed dict), sorted by device.

    `now`: epoch seconds (default time.time()). `fleet`: keep only that fleet's devices and the rows whose
    fleet is unknown (a last will, an unreadable status), so an offline device is never hidden."""
    now = time.time() if now is None else now
    rows = [device_row(topic, payload, now, stale_s) for topic, payload in statuses.items()]
    if fleet is not None:
        rows = [row for row in rows if row.fleet in (fleet, None)]
    return sorted(rows, key=lambda row: (row.device, row.topic))


# -- the table -------------------------------------------------------------------------------------

COLUMNS = (
    "DEVICE",
    "FLEET",
    "STATE",
    "SOURCE",
    "MODEL",
    "VERSION",
    "VARIANT",
    "FPS",
    "DROPS",
    "P99 MS",
    "OUTBOX",
    "LAST SEEN",
    "LAST ERROR",
)


def age_text(age_s: Optional[float]) -> str:
    """`4s ago`, `3m ago`, `2h ago`, `5d ago`; "-" when unknown (a clock ahead of ours counts as 0)."""
    if age_s is None:
        return "-"
    seconds = max(int(age_s), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _p99_text(source: SourceRow) -> str:
    text = number_text(source.latency_p99_ms)
    return f"{text} OVER" if source.over_budget else text


def _lines(row: DeviceRow) -> List[List[str]]:
    """The device's table lines: the first carries the device's columns, one line per source."""
    seen = age_text(row.age_s) + (" STALE" if row.stale else "")
    error = short(row.problem or row.last_error)
    outbox = "-" if row.outbox_depth is None else str(row.outbox_depth)
    device_cells = [row.device, row.fleet or "-", row.state]
    tail = [outbox, seen, error]
    if not row.sources:
        return [device_cells + ["-"] * 7 + tail]
    lines = []
    for i, source in enumerate(row.sources):
        cells = [
            source.source,
            source.model or "-",
            source.version or "-",
            source.variant or "-",
            number_text(source.fps),
            "-" if source.drops is None else str(source.drops),
            _p99_text(source),
        ]
        lines.append((device_cells if i == 0 else [""] * 3) + cells + (tail if i == 0 else [""] * 3))
    return lines


def render_table(rows: List[DeviceRow]) -> str:
    """Plain-text aligned columns, one device per row (a device's further sources on lines below it)."""
    lines = [list(COLUMNS)] + [line for row in rows for line in _lines(row)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


# -- the command -----------------------------------------------------------------------------------


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "status",
        help="one row per device from the retained statuses",
        description="One row per device from the retained statuses <prefix>/+/status: state, per source the "
        "model, fps, drops and latency p99, the outbox depth, the last error and when it was last seen.",
    )
    parser.add_argument(
        "--mqtt-url",
        default=os.environ.get(URL_ENV),
        help=f"the broker, mqtt://[user:password@]host[:port] or mqtts://... (default: ${URL_ENV})",
    )
    parser.add_argument("--prefix", default="lensops", help="the devices' topic prefix (default: lensops)")
    parser.add_argument("--fleet", help="only this fleet's devices (and offline ones whose fleet is unknown)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of row objects instead of a table")
    parser.add_argument(
        "--settle-s", type=float, default=1.0, help="stop reading when no status came for this long (default: 1)"
    )
    parser.add_argument(
        "--stale-s",
        type=float,
        default=DEFAULT_STALE_S,
        help=f"flag an online status older than this as stale (default: {DEFAULT_STALE_S:g})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.mqtt_url:
        raise UserError(f"--mqtt-url: no broker given (pass --mqtt-url or set {URL_ENV})")
    for name in ("settle_s", "stale_s"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')}: {getattr(args, name):g} is negative")
    mqtt.check_url(args.mqtt_url, "--mqtt-url")
    topic_filter = status_filter(args.prefix)
    statuses = mqtt.read_retained(args.mqtt_url, topic_filter, settle_s=args.settle_s, field="--mqtt-url")
    rows = fleet_rows(statuses, time.time(), args.stale_s, args.fleet)
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return 0
    if not rows:
        which = f" of fleet {args.fleet}" if args.fleet else ""
        print(f"no device status{which} found under {topic_filter} on {redact(args.mqtt_url)}")
        return 0
    print(render_table(rows))
    return 0
