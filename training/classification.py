"""Classification: loss, one training step and evaluation (accuracy + confusion matrix)."""

from __future__ import annotations

import numpy as np
from mxnet import autograd, gluon

from training.loaders import on_cpu


class ClassificationTask:
    primary_metric = "val_accuracy"

    def __init__(self, classes: list[str]):
        self.classes = classes
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()

    def train_batch(self, net, batch, trainer: gluon.Trainer) -> dict[str, float]:
        data, label = on_cpu(batch)
        with autograd.record():
            loss = self.loss(net(data), label)
        loss.backward()
        trainer.step(data.shape[0])
        return {"loss": float(loss.mean().asscalar())}

    def predict(self, net, loader) -> tuple[np.ndarray, np.ndarray, float]:
        """(true labels, predicted labels, mean loss) over a loader."""
        truth, pred, losses = [], [], []
        for batch in loader:
            data, label = on_cpu(batch)
            out = net(data)
            losses.append(self.loss(out, label).asnumpy())
            pred.append(out.argmax(axis=1).asnumpy().astype(int))
            truth.append(label.asnumpy().astype(int))
        if not truth:
            return np.zeros(0, int), np.zeros(0, int), float("nan")
        return np.concatenate(truth), np.concatenate(pred), float(np.concatenate(losses).mean())

    def evaluate(self, net, loader, prefix: str = "val") -> tuple[dict[str, float], dict]:
        truth, pred, loss = self.predict(net, loader)
        matrix = confusion_matrix(truth, pred, len(self.classes))
        accuracy = float((truth == pred).mean()) if len(truth) else float("nan")
        return {f"{prefix}_accuracy": accuracy, f"{prefix}_loss": loss}, {"confusion": matrix}


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    return matrix
