"""Gluon datasets and loaders over a DatasetIndex. Samples are keyed by (index, epoch) so
augmentation is repeatable with any number of worker processes."""

from __future__ import annotations

from typing import Sequence

import cv2
import mxnet as mx
import numpy as np
from mxnet import gluon

from training.datasets.records import DetectionRecord
from training.transforms import augment_classification, augment_detection, read_rgb, resize, scale_boxes, to_tensor


class EpochBatchSampler(gluon.data.Sampler):
    """Shuffled (train) or ordered batches of (index, epoch) keys; call set_epoch() before iterating."""

    def __init__(
        self, length: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool, shard: tuple[int, int] = (0, 1)
    ):
        self.length, self.batch_size, self.shuffle = length, batch_size, shuffle
        self.seed, self.drop_last, self.shard = seed, drop_last, shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            order = np.arange(self.length)
        else:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        rank, workers = self.shard  # multi-host: each host takes every n-th sample
        # of a multiple of `workers` samples, so every host runs the same number of steps (dist_sync
        # waits for all: one host with an extra batch would wait forever)
        order = order[: len(order) - len(order) % workers]
        return order[rank::workers]

    def __iter__(self):
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield [(int(i), self.epoch) for i in batch]

    def __len__(self) -> int:
        n = len(self._order())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class _Samples(gluon.data.Dataset):
    """Records plus the (seed, epoch, index) generator each augmented sample draws from."""

    def __init__(self, records: Sequence, size: int, train: bool, seed: int):
        self.records, self.size, self.train, self.seed = list(records), size, train, seed

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        cv2.setNumThreads(1)
        record = self.records[index]
        return record, read_rgb(record.path), np.random.default_rng([self.seed, epoch, index])


class ClassificationSamples(_Samples):
    def __getitem__(self, key):
        record, image, rng = self._load(key)
        image = augment_classification(image, rng, self.size) if self.train else resize(image, self.size)
        return to_tensor(image), np.float32(record.label)


class DetectionSamples(_Samples):
    """Yields (image CHW, label (max_objects, 6)) with label rows [x0, y0, x1, y1, class, difficult]
    in network-input pixels, padded with -1 (difficult: 1 for VOC difficult / COCO crowd objects)."""

    def __init__(self, records: Sequence[DetectionRecord], size: int, train: bool, seed: int, max_objects: int):
        super().__init__(records, size, train, seed)
        self.max_objects = max_objects

    def __getitem__(self, key):
        record, image, rng = self._load(key)
        boxes = record.boxes.astype(np.float32)
        per_object = np.stack([record.labels, record.difficult], 1).astype(np.float32).reshape(-1, 2)
        if self.train:
            image, boxes, per_object = augment_detection(image, boxes, per_object, rng)
        boxes = scale_boxes(boxes, image.shape[:2], self.size)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        boxes, per_object = boxes[keep], per_object[keep]  # a crop may leave slivers: their box targets are inf
        label = np.full((self.max_objects, 6), -1.0, dtype=np.float32)
        n = min(len(boxes), self.max_objects)
        label[:n, :4] = boxes[:n]
        label[:n, 4:] = per_object[:n]
        return to_tensor(resize(image, self.size)), label


def on_cpu(batch):
    """Batches may arrive in shared memory (cpu_shared); hybridized nets want plain cpu."""
    return [x.as_in_context(mx.cpu()) for x in batch]


def make_loader(
    dataset: gluon.data.Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    drop_last: bool,
    shard: tuple[int, int] = (0, 1),
):
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed, drop_last, shard)
    # Worker threads, not processes: forking a process that already runs MXNet's engine and
    # OpenMP pools can deadlock the child (seen under pytest); decoding and resizing in OpenCV
    # release the GIL, so threads keep the cores busy.
    loader = gluon.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        thread_pool=num_workers > 0,
        prefetch=2 * num_workers if num_workers else None,
    )
    return loader, sampler
