"""Detection (SSD): targets, multibox loss, one training step and VOC mAP@0.5 evaluation."""

from __future__ import annotations

import numpy as np
import mxnet as mx
from mxnet import autograd, gluon

from training.loaders import on_cpu


class DetectionTask:
    primary_metric = "val_map"

    def __init__(self, classes: list[str], input_size: int):
        from gluoncv.loss import SSDMultiBoxLoss
        from gluoncv.model_zoo.ssd.target import SSDTargetGenerator

        self.classes, self.input_size = classes, input_size
        self.loss = SSDMultiBoxLoss()
        self.targets = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2), negative_mining_ratio=-1)
        self.anchors = None

    def anchor_boxes(self, net) -> np.ndarray:
        """The network's anchors as corners: (anchors, 4) float32 [x_min, y_min, x_max, y_max] in
        network-input pixels, in the order of the class and box outputs (the first network asked
        is the one whose anchors this task keeps)."""
        from gluoncv.nn.bbox import BBoxCenterToCorner

        return BBoxCenterToCorner(split=False)(self._anchors(net).reshape((-1, 4))).asnumpy()

    def _anchors(self, net):
        if self.anchors is None:
            # a hybridized SSD returns what its cached graph was built for: clear it (see evaluate)
            net._clear_cached_op()
            with autograd.train_mode():
                _, _, anchors = net(mx.nd.zeros((1, 3, self.input_size, self.input_size)))
            net._clear_cached_op()
            self.anchors = anchors
        return self.anchors

    def encode(self, net, label: mx.nd.NDArray) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
        """Anchor targets for a batch: label (B, max_objects, 6) -> class targets (B, anchors) and box
        targets (B, anchors, 4), in one call of GluonCV's SSDTargetGenerator for the whole batch.

        Padding rows (-1) have zero IoU with every anchor, so neither matcher picks them while the
        image has a real object and the real rows come first (an anchor overlapping no object has
        all IoUs 0, and its argmax, the first row, must be a real one: rows are sorted so). An image without objects is
        the exception: GluonCV's bipartite matcher
        would match every anchor to its first padding row (a box of zero area, encoded as log(0)),
        so its targets are set to background. Difficult objects (label column 5) are targets like
        the others, as in GluonCV's VOC and COCO (use_crowd) training: left out, the anchors on them
        would be mined as hard negatives; only the metric ignores them. The same targets as one call
        per image (tests/training/test_detection_targets.py); those per-image calls took longer
        than the forward and backward pass."""
        anchors = self._anchors(net)
        with autograd.pause():
            rows = label.asnumpy()
            rows = np.take_along_axis(rows, np.argsort(rows[:, :, 4] < 0, axis=1, kind="stable")[:, :, None], axis=1)
            cls_t, box_t, _ = self.targets(anchors, None, mx.nd.array(rows[:, :, :4]), mx.nd.array(rows[:, :, 4:5]))
            empty = np.flatnonzero((rows[:, :, 4] < 0).all(axis=1)).tolist()
            if empty:
                cls_t[empty] = 0
                box_t[empty] = 0
        return cls_t, box_t

    def train_batch(self, net, batch, trainer: gluon.Trainer) -> dict[str, float]:
        data, label = on_cpu(batch)
        cls_targets, box_targets = self.encode(net, label)
        with autograd.record():
            cls_preds, box_preds, _ = net(data)
            total, cls_loss, box_loss = self.loss([cls_preds], [box_preds], [cls_targets], [box_targets])
        autograd.backward(total)
        trainer.step(1)  # SSDMultiBoxLoss already normalises by the number of positives
        return {
            "loss": float(total[0].mean().asscalar()),
            "cls_loss": float(cls_loss[0].mean().asscalar()),
            "box_loss": float(box_loss[0].mean().asscalar()),
        }

    def evaluate(self, net, loader, prefix: str = "val") -> tuple[dict[str, float], dict]:
        from gluoncv.utils.metrics.voc_detection import VOC07MApMetric

        metric = VOC07MApMetric(iou_thresh=0.5, class_names=self.classes)
        # SSD returns training outputs or decoded detections depending on the autograd mode at
        # the time its graph was cached; clear the cache on each switch (as GluonCV's set_nms does).
        net._clear_cached_op()
        for batch in loader:
            data, label = on_cpu(batch)
            ids, scores, boxes = net(data)
            gt_boxes = label.slice_axis(axis=-1, begin=0, end=4)
            gt_ids = label.slice_axis(axis=-1, begin=4, end=5)
            gt_difficult = label.slice_axis(axis=-1, begin=5, end=6)
            metric.update(boxes, ids, scores, gt_boxes, gt_ids, gt_difficult)
        net._clear_cached_op()
        names, values = metric.get()
        per_class = {n: float(v) for n, v in zip(names[:-1], values[:-1])}
        recall, precision = metric._recall_prec()
        curves = {
            name: (np.asarray(r if r is not None else []), np.asarray(p if p is not None else []))
            for name, r, p in zip(self.classes, recall, precision)
        }
        metrics = {f"{prefix}_map": float(values[-1])}
        metrics.update({f"{prefix}_ap_{n}": v for n, v in per_class.items()})
        return metrics, {"pr_curves": curves}
