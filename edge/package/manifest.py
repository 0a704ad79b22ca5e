"""`manifest.json` of a model package (schema `lensops.package/1`): the contract between pipelines and edge.

Every file of a package is listed here with its sha256 (variant files under their variant, the
golden samples under `samples`), so a device can verify the whole package before loading any of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from common.models import StrictModel
from edge.package.errors import PackageError  # defined there (the runtimes raise it too); imported from here
from edge.package.runtimes import RUNTIMES, unknown_runtime

SCHEMA = "lensops.package/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


class InputSpec(StrictModel):
    """How a frame becomes the network input: (pixel - mean) / std after resize, on the host."""

    size: tuple[int, int] = Field(description="height, width of the network input")
    layout: Literal["NCHW"] = "NCHW"
    colour_order: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["stretch"] = "stretch"
    dtype: Literal["float32"] = "float32"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalization: Literal["host"] = "host"


class OutputSpec(StrictModel):
    """Classification: one output, class probabilities [N, C]. Detection: `scores` [N, A, C]
    (per-class probabilities, background excluded) and `boxes` [N, A, 4] (normalized
    x_min, y_min, x_max, y_max); the device thresholds and runs per-class NMS.

    `hold_threshold` (detection, optional): on a stream, a box scoring below `score_threshold` but
    at least this is still reported when it continues a box of the same label reported in the
    previous frame (IoU >= HOLD_IOU), as ByteTrack keeps tracks alive on low-score detections.
    A single image is read with `score_threshold` alone."""

    type: Literal["probabilities", "scores_boxes"]
    names: tuple[str, ...]
    score_threshold: float = 0.5
    hold_threshold: Optional[float] = Field(None, gt=0, lt=1)
    nms_iou: float = 0.45
    max_detections: int = 100

    @model_validator(mode="after")
    def _hold_below_score(self) -> "OutputSpec":
        if self.hold_threshold is None:
            return self
        if self.type != "scores_boxes":
            raise ValueError("hold_threshold applies to detection outputs (scores_boxes) only")
        if self.hold_threshold >= self.score_threshold:
            raise ValueError(
                f"hold_threshold {self.hold_threshold} must be below score_threshold {self.score_threshold}"
            )
        return self


class Latency(StrictModel):
    median_ms: float
    p90_ms: float
    batch: int = 1
    threads: int
    runs: int


class Variant(StrictModel):
    id: str
    runtime: str = Field(description="the runtime that opens it: a key of edge.package.runtimes.RUNTIMES")
    precision: Literal["fp32", "fp16", "bf16", "int8"]
    entry: str = Field(description="the file the runtime opens (model.onnx, model.xml, model-symbol.json)")
    files: dict[str, str] = Field(description="package-relative path -> sha256")
    cpu_features: tuple[str, ...] = ()
    parity: dict[str, float] = Field(default_factory=dict)
    latency: Optional[Latency] = None

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, runtime: str) -> str:
        if runtime not in RUNTIMES:
            raise ValueError(unknown_runtime(runtime))
        return runtime

    @field_validator("files")
    @classmethod
    def _entry_listed(cls, files: dict[str, str]) -> dict[str, str]:
        if not files:
            raise ValueError("a variant lists at least one file")
        return files


class Sample(StrictModel):
    """A golden frame and what each variant produced for it when the package was built."""

    image: str
    expected: str = Field(description="JSON: {'reference': predictions, 'variants': {id: predictions}}")


class Manifest(StrictModel):
    schema_: Literal["lensops.package/1"] = Field(SCHEMA, alias="schema")
    name: str
    version: str
    task: Literal["classification", "detection"]
    labels: tuple[str, ...]
    created: str
    input: InputSpec
    output: OutputSpec
    variants: tuple[Variant, ...]
    samples: tuple[Sample, ...] = ()
    sample_files: dict[str, str] = Field(default_factory=dict, description="path -> sha256 of samples/*")
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: dict = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True)

    def variant(self, variant_id: str) -> Variant:
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise PackageError(f"{MANIFEST}: no variant '{variant_id}' (has {', '.join(v.id for v in self.variants)})")

    def all_files(self) -> dict[str, str]:
        """Every file the manifest vouches for: path -> sha256."""
        files = dict(self.sample_files)
        for v in self.variants:
            files.update(v.files)
        return files

    def to_json(self) -> str:
        data = self.model_dump(mode="json", by_alias=True)
        if data["output"].get("hold_threshold") is None:  # unset: the manifest older devices read
            data["output"].pop("hold_threshold", None)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def parse_manifest(data: bytes, where: str = MANIFEST) -> Manifest:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        got = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
        raise PackageError(f"{where}: schema is {got!r}, expected {SCHEMA!r}")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise PackageError(f"{where}: field '{field}': {err['msg']}") from None
    if not manifest.variants:
        raise PackageError(f"{where}: field 'variants': a package holds at least one variant")
    seen: dict[str, str] = {}
    listed = [(p, h) for p, h in manifest.sample_files.items()] + [
        (p, h) for v in manifest.variants for p, h in v.files.items()
    ]
    for path, digest in listed:
        if path.startswith("/") or ".." in Path(path).parts or path in (MANIFEST, SIGNATURE):
            raise PackageError(f"{where}: file path '{path}' is not allowed")
        if seen.setdefault(path, digest) != digest:
            raise PackageError(f"{where}: file '{path}' is listed twice with different sha256")
    # Everything a device opens must be a file the manifest pins by sha256.
    for v in manifest.variants:
        if v.entry not in v.files:
            raise PackageError(f"{where}: variant '{v.id}' entry '{v.entry}' is not among its files")
    for sample in manifest.samples:
        for path in (sample.image, sample.expected):
            if path not in manifest.sample_files:
                raise PackageError(f"{where}: sample file '{path}' is not listed in sample_files")
    return manifest


def read_manifest(package_dir: Path) -> Manifest:
    path = Path(package_dir) / MANIFEST
    if not path.is_file():
        raise PackageError(f"{path}: missing (not a model package)")
    return parse_manifest(path.read_bytes(), str(path))
