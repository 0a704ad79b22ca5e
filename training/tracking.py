"""MLflow tracking for a training run; a no-op Tracker when tracking is off."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from training.errors import ConfigError


def default_tracking_uri(root: Path) -> str:
    """Embedded default: a SQLite store in the project folder."""
    return f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)


class Tracker:
    """One MLflow run. With enabled=False every call does nothing (SageMaker without a server)."""

    def __init__(
        self,
        enabled: bool,
        uri: Optional[str] = None,
        experiment: str = "lensops",
        artifact_root: Optional[Path] = None,
    ):
        self.enabled, self.uri, self.experiment = enabled, uri, experiment
        self.artifact_root = artifact_root
        self.run_id: Optional[str] = None

    def start(self, run_name: str, params: dict, tags: dict) -> None:
        if not self.enabled:
            return
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        try:
            if mlflow.get_experiment_by_name(self.experiment) is None:
                location = (
                    self.artifact_root.resolve().as_uri()
                    if self.artifact_root and self.uri.startswith("sqlite")
                    else None
                )
                mlflow.create_experiment(self.experiment, artifact_location=location)
            mlflow.set_experiment(self.experiment)
            run = mlflow.start_run(run_name=run_name)
        except Exception as exc:  # MLflow raises many types for an unreachable or broken store
            raise ConfigError(f"MLflow tracking at {self.uri} is not usable: {exc}") from None
        self.run_id = run.info.run_id
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})

    def log_metrics(self, metrics: dict, step: Optional[int] = None) -> None:
        if self.enabled and self.run_id:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v}, step=step)

    def log_artifacts(self, folder: Path, artifact_path: Optional[str] = None) -> None:
        if self.enabled and self.run_id:
            import mlflow

            mlflow.log_artifacts(str(folder), artifact_path=artifact_path)

    def end(self, ok: bool) -> None:
        if self.enabled and self.run_id:
            import mlflow

            mlflow.end_run(status="FINISHED" if ok else "FAILED")
