"""The SageMaker training-container environment, read in one place with local defaults.

Never read at import time or in argparse defaults: outside SageMaker these variables do not exist.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional


@dataclass(frozen=True)
class RunEnvironment:
    in_sagemaker: bool = False
    model_dir: Optional[Path] = None
    train_channel: Optional[Path] = None
    validation_channel: Optional[Path] = None
    checkpoint_dir: Optional[Path] = None
    output_data_dir: Optional[Path] = None
    hosts: list = field(default_factory=lambda: ["localhost"])
    current_host: str = "localhost"

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host) if self.current_host in self.hosts else 0

    @property
    def is_distributed(self) -> bool:
        return len(self.hosts) > 1


def read_environment(environ: Optional[Mapping[str, str]] = None) -> RunEnvironment:
    """SageMaker's SM_* variables when present, else local defaults (no SageMaker)."""
    env = os.environ if environ is None else environ
    if "SM_MODEL_DIR" not in env and "SM_CHANNEL_TRAIN" not in env:
        return RunEnvironment()

    def path(key: str) -> Optional[Path]:
        return Path(env[key]) if env.get(key) else None

    model_dir = path("SM_MODEL_DIR")
    hosts = json.loads(env.get("SM_HOSTS", '["algo-1"]'))
    # SageMaker syncs /opt/ml/checkpoints (a sibling of /opt/ml/model) to S3 for spot resume.
    checkpoints = path("SM_CHECKPOINT_DIR") or (model_dir.parent / "checkpoints" if model_dir else None)
    return RunEnvironment(
        in_sagemaker=True,
        model_dir=model_dir,
        train_channel=path("SM_CHANNEL_TRAIN"),
        validation_channel=path("SM_CHANNEL_VALIDATION"),
        checkpoint_dir=checkpoints,
        output_data_dir=path("SM_OUTPUT_DATA_DIR"),
        hosts=list(hosts),
        current_host=env.get("SM_CURRENT_HOST", hosts[0]),
    )
