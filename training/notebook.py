"""What the notebooks show of a data set and a training run: figures built from the library's own
records and metrics (nothing here trains or scores; notebooks/README.md lists the notebooks).

Figures are matplotlib `Figure`s made outside pyplot (training.plots._figure): `show` renders one as a
PNG in Jupyter whatever the process's matplotlib backend is, so a notebook run by papermill keeps them
in its outputs.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from training.datasets.records import SPLITS, DatasetIndex, DetectionRecord, Record
from training.plots import _figure, curves_figure
from training.transforms import read_rgb


def _png(fig):
    """The figure as an IPython PNG image, or None outside IPython."""
    try:
        from IPython.display import Image
    except ImportError:
        return None
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return Image(data=buffer.getvalue(), format="png")


def pick(count: int, n: int, seed: int) -> list[int]:
    """Up to `n` of the indices 0..count-1, drawn at random with `seed` without repeats, in order."""
    return sorted(int(i) for i in np.random.default_rng(seed).choice(count, min(n, count), replace=False))


def show(fig) -> None:
    """Display a matplotlib Figure as a PNG (IPython.display); one line of text outside IPython."""
    image = _png(fig)
    if image is None:  # a script: say where the figure would be
        print(f"[figure: {fig.get_axes()[0].get_title() if fig.get_axes() else 'untitled'}]")
        return
    from IPython.display import display

    display(image)


class LiveCurves:
    """`training.runner.train(..., on_epoch=LiveCurves(primary))`: redraws the loss and metric curves
    after every epoch in one notebook output (a display handle), so a run shows its progress live.

    `primary` is the task's validation metric ('val_accuracy' or 'val_map'); `history` keeps the rows.
    """

    def __init__(self, primary: str):
        self.primary = primary
        self.history: list[dict] = []
        self._handle = None

    def __call__(self, row: dict) -> None:
        self.history.append(dict(row))
        image = _png(curves_figure(self.history, self.primary))
        if image is None:
            print(f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f} {self.primary} {row.get(self.primary)}")
            return
        if self._handle is None:
            from IPython.display import display

            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


def class_balance(index: DatasetIndex):
    """Bar chart per class and split: images (classification) or labelled objects (detection),
    difficult objects included (they are trained on)."""
    fig = _figure((7, 3))
    ax = fig.subplots()
    width = 0.8 / len(SPLITS)
    positions = np.arange(len(index.classes))
    for k, split in enumerate(SPLITS):
        counts = Counter(_labels(index.split(split)))
        ax.bar(positions + k * width, [counts.get(i, 0) for i in range(len(index.classes))], width, label=split)
    ax.set_xticks(positions + width * (len(SPLITS) - 1) / 2, index.classes)
    ax.set_ylabel("objects" if index.task == "detection" else "images")
    ax.set_title(f"class balance ({index.root.name})"), ax.legend()
    fig.tight_layout()
    return fig


def _labels(records: Sequence[Record]) -> list[int]:
    labels: list[int] = []
    for record in records:
        labels.extend(record.labels.tolist() if isinstance(record, DetectionRecord) else [record.label])
    return labels


def sample_grid(
    index: DatasetIndex,
    split: str = "train",
    n: int = 8,
    seed: int = 0,
    records: Optional[Sequence[Record]] = None,
    captions: Optional[Sequence[str]] = None,
    predicted: Optional[Sequence[tuple[np.ndarray, Sequence[str]]]] = None,
):
    """`n` images of a split (drawn with `seed`) with their labels: boxes and class names for detection
    (yellow; difficult objects dashed), the class name for classification. `records`/`captions` show
    chosen records with a caption each instead, and `predicted` (per record: pixel boxes (K, 4) and
    their captions) draws a model's boxes over them in cyan (pipelines.notebook.prediction_grid)."""
    if records is None:
        pool = index.split(split)
        if not pool:
            raise ValueError(f"{index.root}: split {split!r} is empty")
        records = [pool[i] for i in pick(len(pool), n, seed)]
    cols = min(4, max(1, len(records)))
    rows = max(1, -(-len(records) // cols))
    fig = _figure((2.6 * cols, 2.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= len(records):
            continue
        record = records[i]
        ax.imshow(read_rgb(record.path))
        if isinstance(record, DetectionRecord):
            _draw_boxes(ax, record.boxes, [index.classes[j] for j in record.labels], record.difficult)
            if predicted is not None:
                _draw_boxes(ax, *predicted[i], colour="cyan")
            title = f"{record.path.name}: {len(record.labels)} objects"
        else:
            title = f"{record.path.name}: {index.classes[record.label]}"
        ax.set_title(captions[i] if captions is not None else title, fontsize=8)
    fig.tight_layout()
    return fig


def _draw_boxes(
    ax, boxes: np.ndarray, names: Sequence[str], dashed: Optional[Sequence[bool]] = None, colour: str = "yellow"
) -> None:
    """Pixel [x0, y0, x1, y1] boxes with their names on an image axis."""
    from matplotlib.patches import Rectangle

    for k, (box, name) in enumerate(zip(boxes, names)):
        x0, y0, x1, y1 = (float(v) for v in box)
        style = "--" if dashed is not None and dashed[k] else "-"
        ax.add_patch(
            Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.2, linestyle=style)
        )
        ax.text(x0, y0, name, color="black", backgroundcolor=colour, fontsize=6, va="bottom")


def runs_table(runs: Sequence, params: Sequence[str], metrics: Sequence[str]) -> str:
    """A Markdown table of MLflow runs (mlflow.entities.Run), one row each: name, id, the given params
    and final metrics (blank where a run has none)."""
    header = ["run", "id", *params, *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        values = [run.info.run_name or "", run.info.run_id[:8]]
        values += [str(run.data.params.get(p, "")) for p in params]
        values += [f"{run.data.metrics[m]:.4f}" if m in run.data.metrics else "" for m in metrics]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def runs_curves(client, runs: Sequence, metric: str):
    """`metric` per epoch (its MLflow history, step = epoch) of each run, one line per run, side by side
    with the training loss. `client`: an mlflow.MlflowClient on the runs' tracking store."""
    fig = _figure((9, 3.5))
    axes = fig.subplots(1, 2)
    for run in runs:
        label = f"{run.info.run_name or ''} {run.info.run_id[:8]}"
        for ax, name in zip(axes, ("train_loss", metric)):
            history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
            ax.plot([m.step for m in history], [m.value for m in history], marker=".", label=label)
    for ax, name in zip(axes, ("train_loss", metric)):
        ax.set_xlabel("epoch"), ax.set_title(name)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def capture_grid(folder, n: int = 8, seed: int = 0):
    """`n` frames of a device's capture folder (training.datasets.captures.read_capture_folder), drawn at
    random with `seed`, with the serving model's predictions as pre-labels (detection: boxes with their
    scores, in cyan) and, in the caption, why the frame was kept, the model version that saw it and the
    score the capture policy reads (the lowest box score for detection, the top score for classification)."""
    frames = list(folder.frames)
    if not frames:
        raise ValueError(f"{folder.root}: no finished captures")
    records, captions, predicted = [], [], []
    for frame in (frames[i] for i in pick(len(frames), n, seed)):
        scale = np.array([frame.width, frame.height] * 2, np.float32)
        boxed = [p for p in frame.predictions if "box" in p]
        records.append(
            DetectionRecord(frame.image, frame.width, frame.height, np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
        )
        predicted.append(
            (
                np.array([p["box"] for p in boxed], np.float32).reshape(-1, 4) * scale,
                [f"{p['label']} {p['score']:.2f}" for p in boxed],
            )
        )
        scores = [p["score"] for p in frame.predictions]
        read = "no predictions"
        if scores:
            read = f"lowest {min(scores):.2f}" if folder.task == "detection" else f"top {max(scores):.2f}"
        captions.append(f"{frame.reason}, v{frame.model.get('version')}, {read}")
    index = DatasetIndex("detection", folder.root, folder.labels, {"captured": records})
    return sample_grid(index, records=records, captions=captions, predicted=predicted)
