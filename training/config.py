"""Typed training configuration, parsed once in `training.train.main()`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import Field, ValidationError, model_validator

from common.models import StrictModel
from training.errors import ConfigError

# ImageNet statistics: what GluonCV's pretrained weights expect, kept for our own models too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TrainConfig(StrictModel):
    """Everything one training run needs. Unknown keys are errors."""

    task: Literal["classification", "detection"] = Field(description="What the network predicts.")
    network: str = Field(description="Network name, e.g. mobilenet0.25 or ssd_160_mobilenet0.25.")
    data: Path = Field(description="Data set root (ImageFolder, Pascal VOC or COCO).")
    val_data: Optional[Path] = Field(None, description="Separate validation data set root (SageMaker channel).")
    data_format: Literal["auto", "imagefolder", "voc", "coco"] = Field("auto", description="Data set layout.")
    check_policy: Literal["fail", "skip"] = Field("fail", description="What the data set check does with bad samples.")
    model_name: str = Field(description="Registered model name, also the MLflow run name prefix.")
    input_size: int = Field(64, ge=16, le=1024, description="Square network input side in pixels.")
    epochs: int = Field(10, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(32, ge=1, description="Batch size per host.")
    lr: float = Field(0.05, gt=0, description="Peak learning rate (after warm-up).")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warm-up length in epochs.")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="Decay after warm-up.")
    optimizer: Literal["sgd", "nag", "adam"] = Field("sgd", description="Optimizer (momentum applies to sgd/nag).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    wd: float = Field(4e-5, ge=0, description="Weight decay.")
    num_workers: int = Field(2, ge=0, description="Data loading worker processes (0 = in the main process).")
    seed: int = Field(0, description="Seed for weights, sampling and augmentation.")
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop after this many epochs without improvement (0 = off)."
    )
    max_train_samples: Optional[int] = Field(
        None, ge=1, description="Use at most this many training samples (tests, smoke runs)."
    )
    pretrained: bool = Field(False, description="Start from GluonCV pretrained weights found in the local cache.")
    pretrained_cache: Optional[Path] = Field(
        None, description="GluonCV/MXNet model cache folder (default ~/.mxnet/models)."
    )
    init_from: Optional[str] = Field(
        None,
        description="Fine-tune from a model folder, a SageMaker model.tar.gz, a LensOps package "
        "(folder or .tar.gz), runs:/RUN_ID/PATH, or models:/NAME@ALIAS or models:/NAME/VERSION "
        "(registry: MLFLOW_REGISTRY_URI, else the tracking store).",
    )
    freeze_backbone: bool = Field(False, description="Train only the head when fine-tuning.")
    model_dir: Path = Field(Path("models/model"), description="Where the exported model goes.")
    checkpoint_dir: Optional[Path] = Field(None, description="Where per-epoch checkpoints go (default MODEL_DIR.ckpt).")
    resume: bool = Field(True, description="Resume from the newest checkpoint in checkpoint_dir when present.")
    metrics_file: Optional[Path] = Field(None, description="Where the final metrics JSON goes (DVC metrics).")
    plots_dir: Optional[Path] = Field(None, description="Where curves/confusion/PR CSV+PNG go (DVC plots).")
    tracking: Literal["auto", "mlflow", "none"] = Field(
        "auto", description="MLflow tracking (auto = on unless inside SageMaker without a URI)."
    )
    experiment: str = Field("lensops", description="MLflow experiment name.")
    progress: bool = Field(True, description="Show progress bars.")

    @model_validator(mode="after")
    def _rules(self) -> "TrainConfig":
        if self.freeze_backbone and not (self.pretrained or self.init_from):
            raise ValueError(
                "freeze_backbone requires pretrained or init_from (a frozen random backbone learns nothing)"
            )
        if self.pretrained and self.init_from:
            raise ValueError("pretrained and init_from are exclusive: pick one starting point")
        return self

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir or self.model_dir.with_name(self.model_dir.name + ".ckpt")


def load_section(params_file: Path, section: str) -> dict:
    """Read one section of params.yaml; a missing file or section is a ConfigError naming it."""
    if not params_file.is_file():
        raise ConfigError(f"params file not found: {params_file}")
    try:
        doc = yaml.safe_load(params_file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{params_file}: not valid YAML: {exc}") from None
    if section not in doc:
        raise ConfigError(f"{params_file}: missing params key '{section}' (have: {', '.join(sorted(doc)) or 'none'})")
    value = doc[section]
    if not isinstance(value, dict):
        raise ConfigError(f"{params_file}: params key '{section}' must be a mapping, got {type(value).__name__}")
    return dict(value)


def parse_config(values: dict, source: str = "config") -> TrainConfig:
    """Validate a dict into a TrainConfig; errors name every offending key."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(config)"
            msg = err["msg"]
            if err["type"] == "missing":
                msg = "missing params key"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"'{key}': {msg}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None
