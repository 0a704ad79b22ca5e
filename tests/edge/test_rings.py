"""Rollout rings: a device's place is a stable function of its id; ring specs that do not add up are refused."""

from __future__ import annotations

import pytest

from edge.rings import follows, in_share, place, ring_alias, ring_of, shares


def test_a_place_is_the_same_everywhere_and_spreads_ids_evenly():
    # sha256("cam-01")'s first 8 bytes, scaled: a fixed number, not a random draw
    assert place("cam-01") == place("cam-01")
    assert 0 <= place("cam-01") < 100
    places = [place(f"cam-{i:05d}") for i in range(10000)]
    below = [sum(p < edge for p in places) / len(places) for edge in (5, 25, 50)]
    assert below == pytest.approx([0.05, 0.25, 0.50], abs=0.02)


def test_shares_and_rings_of_a_spec():
    assert shares([5, 25, 100]) == [(0.0, 5.0), (5.0, 25.0), (25.0, 100.0)]
    for device in ("cam-01", "door", "sim-0002"):
        ring = ring_of(device, [5, 25, 100])
        assert in_share(device, shares([5, 25, 100])[ring])
        assert sum(in_share(device, share) for share in shares([5, 25, 100])) == 1


@pytest.mark.parametrize(
    "spec, message",
    [
        ([], "empty"),
        ([5, 25, 90], "the last ring must be 100 (every device), got 90"),
        ([25, 5, 100], "must increase"),
        ([0, 100], "in (0, 100]"),
        ([50, 150], "in (0, 100]"),
    ],
)
def test_a_spec_that_does_not_add_up_is_refused(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        shares(spec)


def test_a_device_follows_only_its_own_alias_and_its_ring_aliases():
    assert ring_alias("production", 1) == "production-ring-1"
    assert follows("production", "production") and follows("production", "production-ring-0")
    assert not follows("production", "candidate")
    assert not follows("production", "production-ring-x")
    assert not follows("production", "fleet-lobby-ring-0")


def _notice(alias: str, version: str, ts: str, **extra) -> dict:
    return {"model": "m", "alias": alias, "version": version, "package_uri": "u", "sha256": "0" * 64, "ts": ts, **extra}


def test_a_manager_follows_a_ring_notice_only_when_complete_ours_and_newest(tmp_path):
    from edge.manager import ModelManager

    manager = ModelManager(None, "m", "production", tmp_path / "cache")
    # an incomplete notice, or one for an alias that is not ours, changes nothing
    assert not manager.follow_ring({"model": "m", "alias": "production-ring-3"})
    assert not manager.follow_ring(_notice("candidate", "7", "2026-12-01T10:00:00.000Z"))
    assert manager.alias == "production"
    # a complete ring notice: its alias is followed
    assert manager.follow_ring(_notice("production-ring-0", "7", "2026-12-01T10:00:00.000Z", ring=0))
    assert manager.alias == "production-ring-0"
    # an older notice arriving later (retained notices after a reconnect) does not undo it
    assert not manager.follow_ring(_notice("production", "6", "2026-12-01T09:00:00.000Z", ring=0))
    assert manager.alias == "production-ring-0"
    # the ring's newer notice naming the base alias (completed or rolled back) is followed again
    assert manager.follow_ring(_notice("production", "7", "2026-12-01T11:00:00.000Z", ring=0))
    assert manager.alias == "production"
