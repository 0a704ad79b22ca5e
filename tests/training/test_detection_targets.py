"""The SSD anchor targets of a batch, in one GluonCV call, equal those of one call per image."""

import mxnet as mx
import numpy as np
from mxnet import autograd

from training import networks
from training.detection import DetectionTask

CLASSES = ["circle", "square", "triangle"]


def _per_image(task: DetectionTask, net, label: np.ndarray):
    """The reference: each image's real rows on their own (no padding reaches the matcher)."""
    anchors = task._anchors(net)
    n = anchors.shape[1]
    cls_all, box_all = [], []
    with autograd.pause():
        for rows in label:
            rows = rows[rows[:, 4] >= 0]
            if not len(rows):
                cls_all.append(np.zeros((1, n)))
                box_all.append(np.zeros((1, n, 4)))
                continue
            cls_t, box_t, _ = task.targets(
                anchors, None, mx.nd.array(rows[None, :, :4]), mx.nd.array(rows[None, :, 4:5])
            )
            cls_all.append(cls_t.asnumpy())
            box_all.append(box_t.asnumpy())
    return np.concatenate(cls_all), np.concatenate(box_all)


def test_batched_targets_equal_per_image_targets_with_padding_and_empty_images():
    spec = networks.parse_network("ssd_96_mobilenet0.25", "detection")
    net = networks.build_network(spec, CLASSES, pretrained=False, cache=None)
    networks.initialize(net, 96)
    task = DetectionTask(CLASSES, 96)
    rng = np.random.default_rng(0)
    label = np.full((6, 4, 6), -1.0, dtype=np.float32)
    for i, count in enumerate([0, 1, 4, 2, 0, 3]):  # images 0 and 4 have no objects
        for j in range(count):
            x0, y0 = rng.uniform(0, 60, 2)
            w, h = rng.uniform(8, 36, 2)
            label[i, j] = [x0, y0, min(x0 + w, 96), min(y0 + h, 96), rng.integers(0, 3), j == 1]
    label[2, 3, :4] = label[2, 2, :4] + 1  # two objects overlapping almost entirely
    label[5] = label[5][[3, 0, 1, 2]]  # a padding row before the real ones

    cls_t, box_t = task.encode(net, mx.nd.array(label))
    ref_cls, ref_box = _per_image(task, net, label)

    assert cls_t.shape == (6, ref_cls.shape[1]) and box_t.shape == (6, ref_cls.shape[1], 4)
    np.testing.assert_array_equal(cls_t.asnumpy(), ref_cls)
    np.testing.assert_allclose(box_t.asnumpy(), ref_box, rtol=1e-6, atol=1e-6)
    assert np.isfinite(box_t.asnumpy()).all()
    assert (cls_t.asnumpy()[[0, 4]] == 0).all() and (cls_t.asnumpy()[[1, 2, 3, 5]] > 0).any(axis=1).all()
