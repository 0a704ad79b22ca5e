"""`aggregate` and `gate` of `lensops fleet report` on hand-made shadow reports (pure functions)."""

from __future__ import annotations

from typing import Optional

from edge.messages import SHADOW, ShadowReport
from pipelines.fleet.report import aggregate, gate, table


def figures(frames: int, agreement: Optional[float], p99: float = 5.0, skipped: int = 0) -> dict:
    latency = {"p50": p99 / 2, "p99": p99} if frames else None
    return {
        "frames": frames,
        "skipped": skipped,
        "failed": 0,
        "agreement": agreement if frames else None,
        "latency_ms": {"champion": latency, "candidate": latency},
        "scores": {"champion": [0] * 10, "candidate": [0] * 10},
    }


def report(
    device,
    source="door",
    frames=10,
    agreement=1.0,
    candidate="2",
    champion="1",
    ts="2026-01-01T00:00:01Z",
    p99=5.0,
    model="m",
):
    return ShadowReport.model_validate(
        {
            "schema": SHADOW,
            "device": device,
            "source": source,
            "model": model,
            "task": "classification",
            "alias": "candidate",
            "rate": 0.5,
            "champion": {"version": champion, "variant": "onnx-fp32"},
            "candidate": {"version": candidate, "variant": "onnx-fp32"} if candidate else None,
            "window": figures(frames, agreement, p99),
            "total": figures(frames, agreement, p99),
            "since": "2026-01-01T00:00:00Z",
            "ts": ts,
        }
    )


def test_frame_weighted_agreement_and_latest_total_per_source():
    reports = [
        report("a", frames=5, agreement=0.0, ts="2026-01-01T00:00:01Z"),  # superseded by a's later total
        report("a", frames=30, agreement=1.0, ts="2026-01-01T00:00:31Z", p99=4.0),
        report("b", frames=10, agreement=0.6, p99=10.0),
        report("b", source="yard", frames=0, agreement=None),  # compared nothing: not a device or source
        report("c", frames=10, agreement=0.5, model="other"),
    ]
    result = aggregate(reports, "m")
    assert result.devices == 2 and result.frames == 40 and result.reports == 3
    assert result.agreement == (30 * 1.0 + 10 * 0.6) / 40
    (pair,) = result.pairs
    assert (pair.champion, pair.candidate, pair.sources) == ("1", "2", 2)
    assert pair.latency_p99_ms["candidate"].max == 10.0 and pair.latency_p99_ms["candidate"].median == 7.0
    assert gate(result, min_devices=2, min_frames=40, min_agreement=0.9) == []
    assert "| 1 | 2 | 2 | 2 | 40 |" in table(result)


def test_gate_names_each_requirement_missed():
    result = aggregate([report("a", frames=10, agreement=0.8)], "m")
    missed = gate(result, min_devices=2, min_frames=11, min_agreement=0.9)
    assert missed == [
        "1 device(s) compared frames, fewer than the 2 required",
        "10 frame(s) compared, fewer than the 11 required",
        "agreement 0.8000 is below the 0.9 required",
    ]
    assert gate(result) == []  # nothing asked, nothing missed


def test_candidate_filter_and_mixed_candidates():
    reports = [report("a", candidate="2", agreement=1.0), report("b", candidate="3", agreement=0.0)]
    mixed = aggregate(reports, "m")
    assert mixed.candidates == ["2", "3"] and len(mixed.pairs) == 2
    assert gate(mixed) == ["several candidate versions reported (2, 3): name one"]
    only = aggregate(reports, "m", candidate="3")
    assert only.candidates == ["3"] and only.agreement == 0.0 and only.devices == 1


def test_no_frames_and_no_candidate():
    result = aggregate([report("a", candidate=None, frames=0, agreement=None)], "m")
    assert result.without_candidate == ["a/door"] and result.frames == 0 and result.agreement is None
    assert gate(result, min_agreement=0.5) == ["no agreement figure (no frame compared); 0.5 required"]
    assert gate(result, min_frames=0, min_devices=0) == []
