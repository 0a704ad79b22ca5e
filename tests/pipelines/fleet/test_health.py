"""How a rollout judges a device from its retained status (pipelines.fleet.health): silence is never health."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import json

from pipelines.fleet.health import Limits, counters, judge, parse_statuses

SINCE = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
MODEL, CANDIDATE = "tiny-detector", "2"


def status(ts_offset_s: float = 5, **changes) -> dict:
    ts = (SINCE + timedelta(seconds=ts_offset_s)).isoformat().replace("+00:00", "Z")
    base = {
        "device": "cam-01",
        "state": "online",
        "ts": ts,
        "latency_budget_ms": 50,
        "models": {MODEL: {"version": CANDIDATE, "bad": []}},
        "sources": {"door": {"frames": 200, "drops": 2, "fps": 15.0, "latency_ms": {"p50": 10, "p99": 20}}},
    }
    base.update(changes)
    return base


def verdict(current, baseline=None, limits=Limits()):
    return judge(
        "cam-01", 0, current, baseline or {"door": {"frames": 100, "drops": 1}}, MODEL, CANDIDATE, SINCE, limits
    )


def test_a_device_serving_the_candidate_within_its_figures_is_healthy():
    found = verdict(status())
    assert found.healthy, found.reasons
    assert found.figures["door.drop_rate"] == 0.01 and found.figures["door.latency_p99_ms"] == 20


def test_a_device_that_reports_nothing_during_the_hold_is_unhealthy():
    assert "reported nothing during the hold" in verdict(status(ts_offset_s=-1)).reasons[0]
    assert "no retained status" in verdict(None).reasons[0]
    assert verdict({"device": "cam-01", "state": "offline"}).reasons == ["offline"]


def test_what_makes_a_device_unhealthy():
    assert (
        "rejected or rolled back the candidate version 2"
        in verdict(status(models={MODEL: {"version": "1", "bad": ["2"]}})).reasons[0]
    )
    assert (
        "does not serve the candidate version 2 (serves 1)"
        in verdict(status(models={MODEL: {"version": "1"}})).reasons[0]
    )
    assert "degraded: camera lost" in verdict(status(state="degraded", last_error="camera lost")).reasons
    slow = status(sources={"door": {"frames": 200, "drops": 2, "fps": 15.0, "latency_ms": {"p50": 40, "p99": 80}}})
    assert "latency p99 80.0 ms over the 50 ms budget" in verdict(slow).reasons[0]
    assert "over the 15 ms budget" in verdict(status(), limits=Limits(max_latency_p99_ms=15)).reasons[0]
    dropping = status(sources={"door": {"frames": 200, "drops": 31, "fps": 15.0}})
    assert "dropped 30 of 100 frames" in verdict(dropping).reasons[0]
    assert "under 20" in verdict(status(), limits=Limits(min_fps=20)).reasons[0]


def test_counters_that_began_again_during_the_hold_are_read_from_zero():
    restarted = status(sources={"door": {"frames": 40, "drops": 0, "fps": 15.0}})
    assert verdict(restarted, baseline={"door": {"frames": 100, "drops": 1}}).healthy


def test_a_status_of_the_wrong_shape_is_unhealthy_not_a_crash():
    for broken in (
        status(models={MODEL: "7"}),
        status(sources={"door": {"latency_ms": 5, "frames": 10}}),
        status(sources={"door": {"frames": "x"}}),
        status(sources={"door": {"frames": 10, "latency_ms": {"p99": "9"}}}),
        status(sources=["door"]),
    ):
        found = verdict(broken)
        assert not found.healthy and found.reasons[0].startswith("unreadable status"), (broken, found.reasons)
    naive = status()
    naive["ts"] = naive["ts"].replace("Z", "")  # no time zone: cannot be compared with the hold's start
    assert "reported nothing during the hold" in verdict(naive).reasons[0]
    assert counters({"sources": ["door"]}) == {} and counters({"sources": {"door": {"frames": "x"}}}) == {}


def test_statuses_are_keyed_by_their_topic_and_one_naming_another_device_is_left_out():
    retained = {
        "lensops/cam-01/status": json.dumps(status()).encode(),
        "lensops/cam-02/status": json.dumps(status()).encode(),  # says it is cam-01
        "lensops/cam-03/status": b"not json",
    }
    assert list(parse_statuses(retained)) == ["cam-01"]
