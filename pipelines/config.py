"""The pipeline's part of params.yaml (`pipeline`, `models`), parsed once into typed settings (unknown keys
are errors).

`models` may come from another file (the CLI's --models-from): the retrain models are kept in
params-retrain.yaml, out of `dvc repro`, and use params.yaml's `pipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

from typing_extensions import Annotated  # typing.Annotated is 3.9+: the SageMaker container runs 3.8

import yaml
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, field_validator, model_validator

from common.errors import UserError
from common.models import StrictModel
from edge.config_errors import describe
from edge.registry import RegistryConfig, registry_config
from edge.rings import shares
from pipelines.optimize.variants import VARIANTS

T = TypeVar("T")


class ParityGate(StrictModel):
    """How close a runtime variant must stay to the MXNet FP32 reference; `optimize` gates each variant on
    it, `promote` checks it again on the figures the package's manifest carries."""

    min_top1_agreement: float = 0.99
    max_accuracy_drop_pt: float = 0.5
    max_map_drop_pt: float = 1.0

    @staticmethod
    def needed(task: str) -> tuple[str, ...]:
        """The parity figures a variant of a `task` model carries."""
        return ("top1_agreement", "accuracy_drop_pt") if task == "classification" else ("map_drop_pt",)

    def failures(self, task: str, figures: dict) -> list[str]:
        """Why a variant with these parity figures fails the gate (empty when it passes); a missing figure fails.

        figures: top1_agreement (0..1) and accuracy_drop_pt (percentage points) for classification;
        map_drop_pt (percentage points of VOC mAP) for detection.
        """
        missing = [k for k in self.needed(task) if k not in figures]
        if missing:
            return [f"no parity figures ({', '.join(missing)})"]
        out = []
        if task == "classification":
            if figures["top1_agreement"] < self.min_top1_agreement:
                out.append(f"top-1 agreement {figures['top1_agreement']:.4f} < {self.min_top1_agreement}")
            if figures["accuracy_drop_pt"] > self.max_accuracy_drop_pt:
                out.append(f"accuracy drop {figures['accuracy_drop_pt']:.2f} pt > {self.max_accuracy_drop_pt} pt")
        elif figures["map_drop_pt"] > self.max_map_drop_pt:
            out.append(f"mAP drop {figures['map_drop_pt']:.2f} pt > {self.max_map_drop_pt} pt")
        return out


class PromoteConfig(StrictModel):
    alias: str = Field("production", description="the alias devices follow (per-fleet aliases: fleet-lobby)")
    metric: Optional[str] = Field(None, description="default: accuracy (classification) / map (detection)")
    min_improvement: float = Field(0.0, description="challenger must beat the champion by more than this")
    latency_budget_ms: float = Field(100.0, description="best variant's median batch-1 latency must fit")
    mqtt_url: Optional[str] = Field(None, description="publish the retained fleet notice here when set")
    topic_prefix: str = "lensops"
    fleet: str = "demo"


class RolloutConfig(StrictModel):
    """How `lensops fleet rollout` moves a version through the fleet (docs/how-to/rollouts.md)."""

    rings: List[float] = Field(
        [5, 25, 100], description="cumulative percentages of the fleet, ending at 100 (edge.rings.shares)"
    )
    hold_s: float = Field(600.0, gt=0, description="seconds a ring serves the candidate before it is judged")
    poll_s: float = Field(5.0, gt=0, description="seconds between reads of the devices' retained status during a hold")
    max_latency_p99_ms: Optional[float] = Field(
        None, gt=0, description="a source's latency p99 over this is unhealthy (default: the device's own budget)"
    )
    max_drop_rate: float = Field(
        0.05, ge=0, le=1, description="share of a device's frames dropped during the hold above which it is unhealthy"
    )
    min_fps: Optional[float] = Field(None, ge=0, description="a source slower than this during the hold is unhealthy")
    min_shadow_agreement: Optional[float] = Field(
        None, ge=0, le=1, description="a ring's shadow agreement (candidate vs champion) must reach this"
    )
    min_shadow_frames: int = Field(0, ge=0, description="shadow frames a ring must have compared to be judged")
    min_shadow_devices: int = Field(0, ge=0, description="devices of a ring whose shadow reports must count")
    shadow_report_s: float = Field(
        30.0, gt=0, description="the devices' shadow.report_s: a hold listens at least this long for their reports"
    )

    @field_validator("rings")
    @classmethod
    def _rings_add_up(cls, rings: List[float]) -> List[float]:
        shares(rings)  # ValueError naming the spec
        return rings

    @model_validator(mode="after")
    def _hold_covers_a_shadow_report(self) -> "RolloutConfig":
        shadow = self.min_shadow_agreement is not None or self.min_shadow_frames or self.min_shadow_devices
        if shadow and self.hold_s < self.shadow_report_s:
            raise ValueError(
                f"hold_s {self.hold_s:g} is shorter than shadow_report_s {self.shadow_report_s:g}: a hold would "
                "end before a device sends a shadow report"
            )
        return self


class PipelineConfig(StrictModel):
    registry: RegistryConfig = Field(
        default_factory=lambda: registry_config({}),
        description="the registry packages are registered in (the device config's registry reads the same keys)",
    )
    variants: Annotated[tuple[str, ...], AfterValidator(_check_variants)] = VARIANTS
    calibration_images: int = Field(256, ge=1, description="training images, drawn at random, that calibrate int8")
    latency_runs: int = Field(50, ge=3)
    golden_samples: int = Field(4, ge=0)
    score_threshold: float = Field(0.5, gt=0, lt=1, description="device-side detection threshold in the manifest")
    hold_threshold: Optional[float] = Field(
        None,
        gt=0,
        lt=1,
        description="detection on a stream: a lower threshold "
        "for boxes that continue one of the previous frame (the manifest's)",
    )
    sign_key: Optional[Path] = Field(None, description="Ed25519 private key (PEM) to sign packages with")
    parity: ParityGate = ParityGate()
    promote: PromoteConfig = PromoteConfig()
    rollout: RolloutConfig = RolloutConfig()

    @model_validator(mode="after")
    def _hold_below_score(self) -> "PipelineConfig":
        if self.hold_threshold is not None and self.hold_threshold >= self.score_threshold:
            raise ValueError(
                f"hold_threshold {self.hold_threshold} must be below score_threshold {self.score_threshold}"
            )
        return self


def _check_variants(variants: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if not variants:
        raise ValueError("at least one variant")
    return variants


class ModelEntry(StrictModel):
    name: str
    model_dir: Path
    data: Path


class Params(StrictModel):
    pipeline: PipelineConfig
    models: dict[str, ModelEntry]
    models_file: Path = Field(Path("params.yaml"), description="the file `models` was read from (named in errors)")

    def model(self, key: str) -> ModelEntry:
        if key not in self.models:
            raise UserError(f"{self.models_file}: models has no '{key}' (has {', '.join(self.models)})")
        return self.models[key]


def _read_mapping(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return raw


def _validated(validate: Callable[[object], T], root: Any, value: object, path: Path, key: str) -> T:
    """`validate(value)`; UserError with one line per problem naming the file, `key.field...` and the value
    (edge.config_errors, as for the device config; `root` is the validated type)."""
    try:
        return validate(value)
    except ValidationError as exc:
        raise UserError("\n".join(f"{path}: {key}.{line}" for line in describe(exc, root))) from None


_MODELS = TypeAdapter(Dict[str, ModelEntry])  # typing.Dict: evaluated at run time, on Python 3.8 too


def load_params(path: Path, models_path: Optional[Path] = None) -> Params:
    """`pipeline` of params.yaml `path` and `models` of `models_path` (default: the same file); a clear
    error naming the file and the field. The retrain models live in a file of their own (params-retrain.yaml)
    so that `dvc repro`, whose stages run once per entry of params.yaml `models`, does not run them."""
    path = Path(path)
    models_path = Path(models_path) if models_path is not None else path
    raw = _read_mapping(path)
    pipeline = _validated(PipelineConfig.model_validate, PipelineConfig, raw.get("pipeline") or {}, path, "pipeline")
    models_raw = raw
    if models_path.resolve() != path.resolve():
        models_raw = _read_mapping(models_path)
        if "pipeline" in models_raw:  # two pipeline sections would drift apart; one is read
            raise UserError(
                f"{models_path}: holds a `pipeline` section, but `pipeline` is read from {path} only: remove it there"
            )
    models = _validated(
        _MODELS.validate_python, Dict[str, ModelEntry], models_raw.get("models") or {}, models_path, "models"
    )
    return Params(pipeline=pipeline, models=models, models_file=models_path)
