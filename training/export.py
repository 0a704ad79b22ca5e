"""The exported model folder: hybridized symbol + params (no pickle) and model.json, written atomically.

model-symbol.json   the hybridized graph (inference mode; SSD includes decoding + NMS)
model-0000.params   weights, keyed arg:/aux: + parameter name
model.json          task, classes, input spec (preprocessing), outputs, metrics, lineage
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import mxnet as mx

from training.config import IMAGENET_MEAN, IMAGENET_STD, TrainConfig

MODEL_SCHEMA = "lensops.model/1"


def input_spec(size: int) -> dict:
    return {
        "size": [size, size],
        "layout": "NCHW",
        "colour_order": "RGB",
        "resize": "stretch",
        "scale": 1.0,
        "mean": [round(m * 255, 3) for m in IMAGENET_MEAN],
        "std": [round(s * 255, 3) for s in IMAGENET_STD],
        "dtype": "float32",
    }


def output_spec(task: str) -> dict:
    if task == "classification":
        return {"type": "logits", "names": ["logits"]}
    return {
        "type": "ssd",
        "names": ["class_ids", "scores", "boxes"],
        "boxes": "x_min,y_min,x_max,y_max in network-input pixels",
        "nms": "in graph",
    }


def export_model(
    net, cfg: TrainConfig, classes: list[str], size: int, metrics: dict, lineage: dict, out_dir: Path
) -> Path:
    """Write the model folder next to its final place, then swap it in with a rename."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        net._clear_cached_op()
        net(mx.nd.zeros((1, 3, size, size)))  # the cached graph export() writes is the inference one
        net.export(str(tmp / "model"), epoch=0)
        meta = {
            "schema": MODEL_SCHEMA,
            "name": cfg.model_name,
            "task": cfg.task,
            "network": cfg.network,
            "classes": classes,
            "input": input_spec(size),
            "outputs": output_spec(cfg.task),
            "files": {"symbol": "model-symbol.json", "params": "model-0000.params"},
            "metrics": metrics,
            "lineage": lineage,
            "params": json.loads(cfg.model_dump_json()),
        }
        (tmp / "model.json").write_text(json.dumps(meta, indent=2))
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            # An empty folder that must stay (SageMaker's /opt/ml/model may be a mount):
            # move the files in, model.json last, so a reader never sees a model without it.
            for item in sorted(tmp.iterdir(), key=lambda p: p.name == "model.json"):
                os.replace(item, out_dir / item.name)
            tmp.rmdir()
            return out_dir
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return out_dir
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_model_meta(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "model.json").read_text())
