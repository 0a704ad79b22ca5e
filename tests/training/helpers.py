"""Small helpers for training tests: a config for a seconds-long run."""

from __future__ import annotations

from pathlib import Path

from training.config import TrainConfig, parse_config


def quick_config(data: Path, out: Path, task: str = "classification", **over) -> TrainConfig:
    values = {
        "task": task,
        "network": "mobilenet0.25" if task == "classification" else "ssd_96_mobilenet0.25",
        "model_name": f"test-{task}",
        "data": data,
        "input_size": 32,
        "epochs": 2,
        "batch_size": 16,
        "lr": 0.002,
        "optimizer": "adam",
        "warmup_epochs": 0.5,
        "num_workers": 0,
        "seed": 1,
        "model_dir": out / "model",
        "checkpoint_dir": out / "ckpt",
        "progress": False,
        "tracking": "none",
    }
    values.update(over)
    return parse_config(values)
