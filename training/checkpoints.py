"""Per-epoch checkpoints: weights, optimizer state and loop state, written atomically.

Layout of the checkpoint folder (SageMaker syncs /opt/ml/checkpoints to S3 for spot resume):
  epoch-0003.params   network weights (Gluon structural names)
  epoch-0003.states   optimizer state (MXNet's own format; not in a multi-host run, where it lives
                      on the parameter servers)
  epoch-0003.json     epoch, step, early-stopping state, metric history
  best.params         weights of the best epoch so far
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from common.files import atomic_path, write_json
from training.errors import ConfigError

_EPOCH = re.compile(r"^epoch-(\d{4})\.json$")


class CheckpointStore:
    def __init__(self, folder: Path, keep: int = 2):
        self.folder, self.keep = Path(folder), keep

    def save(self, epoch: int, net, trainer, state: dict, is_best: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = self.folder / f"epoch-{epoch:04d}"
        with atomic_path(stem.with_suffix(".params")) as tmp:
            net.save_parameters(str(tmp))
        if trainer is not None:  # None: the optimizer state is not the worker's to save (dist_sync)
            with atomic_path(stem.with_suffix(".states")) as tmp:
                trainer.save_states(str(tmp))
        if is_best:
            with atomic_path(self.folder / "best.params") as tmp:
                net.save_parameters(str(tmp))
        # The JSON goes last: an epoch counts as saved only once its JSON exists.
        write_json(stem.with_suffix(".json"), {"epoch": epoch, **state}, indent=None)
        self._prune()

    def latest(self) -> Optional[int]:
        epochs = sorted(int(m.group(1)) for f in self.folder.glob("epoch-*.json") if (m := _EPOCH.match(f.name)))
        return epochs[-1] if epochs else None

    def load(self, epoch: int, net, trainer) -> dict:
        stem = self.folder / f"epoch-{epoch:04d}"
        try:
            net.load_parameters(str(stem.with_suffix(".params")))
            if trainer is not None:
                trainer.load_states(str(stem.with_suffix(".states")))
            return json.loads(stem.with_suffix(".json").read_text())
        except (OSError, ValueError, AssertionError) as exc:
            raise ConfigError(f"cannot resume from checkpoint {stem}: {exc}") from None

    def fingerprint(self, epoch: int) -> Optional[str]:
        try:
            return json.loads((self.folder / f"epoch-{epoch:04d}.json").read_text()).get("fingerprint")
        except (OSError, ValueError):
            return None

    def clear(self) -> None:
        for item in self.folder.glob("*"):
            if item.is_file() and (item.name.startswith("epoch-") or item.name == "best.params"):
                item.unlink()

    def load_best(self, net) -> None:
        best = self.folder / "best.params"
        if best.is_file():
            net.load_parameters(str(best))

    def _prune(self) -> None:
        epochs = sorted(int(m.group(1)) for f in self.folder.glob("epoch-*.json") if (m := _EPOCH.match(f.name)))
        for old in epochs[: -self.keep]:
            for suffix in (".json", ".params", ".states"):
                (self.folder / f"epoch-{old:04d}{suffix}").unlink(missing_ok=True)
