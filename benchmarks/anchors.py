"""Anchor coverage of an SSD on a detection data set: `python -m benchmarks.anchors`.

For every object of a split (difficult ones left out), scaled to the network's input as training
scales it, the best IoU with any of the network's anchors and the number of anchors at IoU >= 0.5
(SSDTargetGenerator's threshold). An object with no such anchor gets one positive only, from the
bipartite matching step (Liu et al., "SSD", ECCV 2016, section 2.2: matching strategy), so it is
learned from a single anchor. The share of such objects is the figure to read when choosing an
input size (`ssd_<size>_...`) for a data set: the layout (`training.networks.ssd_layout`) sizes its
anchors 25%-100% of the input.

  python -m benchmarks.anchors                                   # the demo detector on its data
  python -m benchmarks.anchors --data path/to/voc --network ssd_320_mobilenet0.25
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def coverage(data: Path, network: str, split: str = "train", data_format: str = "auto") -> dict:
    """Object sides (pixels at the network input; 5th/25th/50th/75th/95th percentile) and the anchor
    figures for `split` of `data`: anchors, objects, share with no anchor at IoU >= 0.5, mean
    positives per object, median best IoU. DatasetError / ConfigError name a bad path or network."""
    from gluoncv.utils.bbox import bbox_iou

    from training import networks
    from training.datasets.formats import load_dataset
    from training.detection import DetectionTask
    from training.errors import DatasetError
    from training.transforms import scale_boxes

    spec = networks.parse_network(network, "detection")
    index = load_dataset(data, "detection", data_format)
    if split not in index.splits:
        raise DatasetError(f"{data}: no split {split!r} (splits: {', '.join(sorted(index.splits))})")
    net = networks.build_network(spec, index.classes)
    networks.initialize(net, spec.input_size)
    anchors = DetectionTask(index.classes, spec.input_size).anchor_boxes(net)
    boxes = [
        scale_boxes(r.boxes[~r.difficult.astype(bool)], (r.height, r.width), spec.input_size)
        for r in index.split(split)
    ]
    boxes = np.concatenate([b for b in boxes if len(b)] or [np.zeros((0, 4), np.float32)])
    row = {"network": network, "data": str(data), "split": split, "anchors": int(len(anchors)), "objects": len(boxes)}
    if not len(boxes):
        return row
    best, positives = np.empty(len(boxes)), np.empty(len(boxes), np.int64)
    for start in range(0, len(boxes), 1024):  # objects x anchors IoU in slices: bounded memory on large sets
        iou = bbox_iou(boxes[start : start + 1024], anchors, offset=0)
        best[start : start + 1024], positives[start : start + 1024] = iou.max(axis=1), (iou >= 0.5).sum(axis=1)
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return {
        **row,
        "object_side_px_percentiles": [round(float(v), 1) for v in np.percentile(side, [5, 25, 50, 75, 95])],
        "share_without_anchor_at_0.5": float((positives == 0).mean()),
        "mean_anchors_at_0.5": float(positives.mean()),
        "median_best_iou": float(np.median(best)),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.anchors", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared/detection")
    parser.add_argument("--network", default="ssd_160_mobilenet0.25")
    parser.add_argument("--split", default="train")
    parser.add_argument("--format", default="auto", dest="data_format")
    args = parser.parse_args(argv)
    from training.errors import ConfigError, DatasetError

    try:
        row = coverage(args.data, args.network, args.split, args.data_format)
    except (ConfigError, DatasetError) as err:
        print(f"python -m benchmarks.anchors: {err}", file=sys.stderr)
        return 2
    for key, value in row.items():
        print(f"{key:30s} {value:.3f}" if isinstance(value, float) else f"{key:30s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
