"""The issue's targets next to what this run measured: met or missed, and what limits a miss.

Each check reads a section's figures; a section that did not run makes its targets `not measured`.
Every section reports its own `limit` (the stage that bounds it), copied next to a missed target.
"""

from __future__ import annotations

from typing import Optional


def _row(
    name: str, measured: Optional[float], target: float, unit: str, limit: Optional[str] = None, at_most: bool = False
) -> dict:
    if measured is None:
        return {
            "target": name,
            "measured": None,
            "goal": target,
            "unit": unit,
            "status": "not measured",
            "limit": limit,
        }
    met = measured <= target if at_most else measured >= target
    return {
        "target": name,
        "measured": measured,
        "goal": f"{'<=' if at_most else '>='} {target:g}",
        "unit": unit,
        "status": "met" if met else "missed",
        "limit": None if met else limit,
    }


def _ok(section: Optional[dict]) -> bool:
    return bool(section) and "error" not in section and "skipped" not in section


def check(sections: dict, flags: list[str]) -> list[dict]:
    rows = []
    e2e = sections.get("end_to_end")
    for kind, label in (
        ("file", "runner efficiency, 1080p video file"),
        ("frames", "runner efficiency, pre-decoded frames"),
    ):
        figures = e2e.get(kind) if _ok(e2e) else None
        rows.append(
            _row(
                label,
                figures["efficiency"] if figures else None,
                0.9,
                "x slowest stage",
                figures.get("limit") if figures else None,
            )
        )

    amx = any(f.startswith("amx") for f in flags)
    goal = 10.0 if amx else 3.0
    variants = sections.get("variants")
    if _ok(variants):
        for model, best in variants["best_batch1"].items():
            rows.append(
                _row(
                    f"best variant vs MXNet-native FP32, {model} (batch 1, {'AMX' if amx else 'no AMX'})",
                    best["vs_mxnet"],
                    goal,
                    f"x ({best['variant']}, gate {best['gate']})",
                    variants.get("limits", {}).get(model),
                )
            )
    else:
        rows.append(_row("best variant vs MXNet-native FP32", None, goal, "x"))

    training = sections.get("training")
    rows.append(
        _row(
            "training data pipeline vs in-memory",
            training["pipeline_vs_in_memory"] if _ok(training) else None,
            0.9,
            "x",
            training.get("limit") if _ok(training) else None,
        )
    )

    swap = sections.get("hot_swap")
    rows.append(
        _row(
            "hot swap: longest gap - frame interval (the stall)",
            swap["stall_intervals"] if _ok(swap) else None,
            1.0,
            "frame intervals",
            swap.get("limit") if _ok(swap) else None,
            at_most=True,
        )
    )

    rows += _cameras(sections.get("cameras"))

    publisher = sections.get("publisher")
    sustained = publisher["sustained"]["messages_per_s"] if _ok(publisher) else None
    rows.append(
        _row(
            "outbox to Mosquitto, QoS 1, sustained",
            sustained,
            2000,
            "messages/s",
            publisher.get("limit") if _ok(publisher) else None,
        )
    )
    fleet = sections.get("fleet")
    calls = max(fleet["resolve_per_device_max"], fleet["download_per_device_max"]) if _ok(fleet) else None
    rows.append(
        _row(
            "fleet switch: registry calls per device (resolve, download; issue 15)",
            calls,
            1,
            "calls each, at most",
            fleet.get("limit") if _ok(fleet) else None,
            at_most=True,
        )
    )
    if "counts" in sections:  # opt-in (--only counts): its goals are shown when it was asked for
        rows += _counts(sections["counts"])
    return rows


def _cameras(section: Optional[dict]) -> list[dict]:
    """Issue 16: per resolution, cameras kept / CPU bound and the frame age p99 at that count."""
    rows = []
    for name in ("720p", "1080p"):
        found = section["resolutions"].get(name) if _ok(section) else None
        at = found["at_kept"] if found else None
        rows.append(
            _row(
                f"cameras kept in real time ({name}@15) / CPU bound (issue 16)",
                found["ratio"] if found else None,
                0.9,
                f"x bound ({found['kept']} of {found['bound']})" if found else "x CPU bound",
                found["limit"] if found else None,
            )
        )
        rows.append(
            _row(
                f"frame age p99 at that camera count ({name}; issue 16)",
                at["age_p99_ms"] if at else None,
                100,
                f"ms ({at['n']} cameras)" if at else "ms",
                found["age_limit"] if found else None,
                at_most=True,
            )
        )
    return rows


def _counts(section: dict) -> list[dict]:
    summary = section["summary"] if _ok(section) else None
    return [
        _row(
            "counts match the ground truth, all frames (demo video + unseen seeds)",
            summary["share_all"] if summary else None,
            0.95,
            "of frames (VOC-style)",
            summary["limit_all"] if summary else None,
        ),
        _row(
            "counts match the ground truth, worst scene",
            summary["worst"]["share"] if summary else None,
            0.90,
            f"of frames (seed {summary['worst']['seed']})" if summary else "of frames",
            summary["limit_worst"] if summary else None,
        ),
    ]
