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
