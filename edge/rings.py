"""Rollout rings: which share of a fleet a device belongs to, a stable function of its id.

A device's place is `place(device_id)` in [0, 100): the first 8 bytes of sha256(device id) as an
integer, scaled. It is the same on every machine and every run, spreads ids evenly (the hash is
uniform), and needs no list of devices. A rollout's rings are cumulative percentages, e.g.
`[5, 25, 100]`: ring 0 holds the devices whose place is in [0, 5), ring 1 those in [5, 25), ring 2
the rest. Ring notices (`<prefix>/fleets/<fleet>/rings/<ring>/deployment`) carry their `share`
([low, high) percent), so a device needs no ring spec of its own: it follows the notice whose share
holds its place (`in_share`).

The alias a ring follows in the registry is `ring_alias(base, ring)`, e.g. `production-ring-0`; a
device accepts a ring notice only for its own base alias or one of its ring aliases (`follows`).
"""

from __future__ import annotations

import hashlib
from typing import List, Sequence, Tuple

SCALE = 2**64
LAST = 100.0 - 1e-12  # the largest hashes would round up to 100.0, which no [low, 100) share holds


def place(device_id: str) -> float:
    """The device's place in [0, 100) percent: sha256(id)'s first 8 bytes / 2**64 * 100."""
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return min(int.from_bytes(digest[:8], "big") / SCALE * 100.0, LAST)


def shares(rings: Sequence[float]) -> List[Tuple[float, float]]:
    """Cumulative percentages -> each ring's [low, high) share: [5, 25, 100] -> [(0, 5), (5, 25), (25, 100)].

    ValueError naming the spec unless it is strictly increasing, in (0, 100] and ends at 100."""
    spec = [float(r) for r in rings]
    text = ", ".join(f"{r:g}" for r in spec)
    if not spec:
        raise ValueError("rings: empty; give cumulative percentages ending at 100, e.g. [5, 25, 100]")
    if any(not 0 < r <= 100 for r in spec):
        raise ValueError(f"rings [{text}]: every ring is a cumulative percentage in (0, 100]")
    if any(b <= a for a, b in zip(spec, spec[1:])):
        raise ValueError(f"rings [{text}]: cumulative percentages must increase (e.g. [5, 25, 100])")
    if spec[-1] != 100:
        raise ValueError(f"rings [{text}]: the last ring must be 100 (every device), got {spec[-1]:g}")
    return list(zip([0.0, *spec[:-1]], spec))


def in_share(device_id: str, share: Sequence[float]) -> bool:
    """Whether the device's place is in the [low, high) `share`."""
    low, high = float(share[0]), float(share[1])
    return low <= place(device_id) < high


def ring_of(device_id: str, rings: Sequence[float]) -> int:
    """The index of the ring (cumulative percentages, see `shares`) the device belongs to."""
    return next(i for i, share in enumerate(shares(rings)) if in_share(device_id, share))


def ring_alias(base: str, ring: int) -> str:
    """The registry alias ring `ring` follows during a rollout of alias `base`: `<base>-ring-<ring>`."""
    return f"{base}-ring-{int(ring)}"


def follows(base: str, alias: str) -> bool:
    """Whether a device configured for alias `base` may follow `alias` (itself, or one of its ring aliases)."""
    if alias == base:
        return True
    prefix = f"{base}-ring-"
    return alias.startswith(prefix) and alias[len(prefix) :].isdigit()
