"""Per-frame counts against the demo video's ground truth (`video_gt.json`, training/datasets/video.py).

"Match" is VOC-style: an object listed `difficult` (less than half of it in view) may be counted
or not; every other listed object must be. `strict` counts every listed object, however little
of it is in view. Used by the `counts` benchmark section and tests/edge/test_runner_demo.py.
"""

from __future__ import annotations


def all_listed(objects: list[dict]) -> dict[str, int]:
    """Every listed object per label, `difficult` ones included."""
    found: dict[str, int] = {}
    for obj in objects:
        found[obj["label"]] = found.get(obj["label"], 0) + 1
    return found


def _required_and_optional(objects: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    must: dict[str, int] = {}
    may: dict[str, int] = {}
    for obj in objects:
        bucket = may if obj.get("difficult") else must
        bucket[obj["label"]] = bucket.get(obj["label"], 0) + 1
    return must, may


def counts_within(counts: dict, objects: list[dict]) -> bool:
    """Counts between the objects that must be found and those plus the `difficult` (mostly out of view) ones."""
    must, may = _required_and_optional(objects)
    labels = set(counts) | set(must) | set(may)
    return all(must.get(k, 0) <= counts.get(k, 0) <= must.get(k, 0) + may.get(k, 0) for k in labels)


def strict_match(counts: dict, objects: list[dict]) -> bool:
    """Counts equal to every listed object (labels counted 0 ignored)."""
    return {k: n for k, n in counts.items() if n} == all_listed(objects)


def miss_kind(counts: dict, objects: list[dict]) -> str:
    """Why a frame does not match: `under` (a required object not counted), `over` (more than the listed
    objects: a false or duplicate detection), `both` (typically one label taken for another), or `match`."""
    must, may = _required_and_optional(objects)
    labels = set(counts) | set(must) | set(may)
    under = any(counts.get(k, 0) < must.get(k, 0) for k in labels)
    over = any(counts.get(k, 0) > must.get(k, 0) + may.get(k, 0) for k in labels)
    return {(False, False): "match", (True, False): "under", (False, True): "over"}.get((under, over), "both")
