"""The device's messages as typed models: a prediction, the inference payload, the status, a deployment event,
the fleet deployment notice and the shadow report.

Built with validation (pydantic v2): a score outside [0, 1], a box that is not 4 numbers in [0, 1], an empty
label, NaN or an unknown field raises `pydantic.ValidationError` where the message is made, not at a
subscriber. `to_json()` writes the JSON that goes on the wire: fields by their wire names (`schema`), and a
field that was never given (a classification prediction's `box`, an inference without `instance`) is left out.

The JSON Schemas shipped in `edge/schemas/` are generated from these models:

    python -m edge.messages --write    # rewrite edge/schemas/*.schema.json
    python -m edge.messages --check    # exit 1 when a committed schema differs (tests/edge/test_messages.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Optional, Type

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Annotated  # typing.Annotated is 3.9+ (the SageMaker pipeline steps run 3.8)

from common.files import write_text
from common.models import StrictModel

INFERENCE = "lensops.inference/1"
STATUS = "lensops.status/1"
DEPLOYMENT = "lensops.deployment/1"
FLEET_DEPLOYMENT = "lensops.fleet_deployment/1"
SHADOW = "lensops.shadow/1"
SCORE_BINS = 10  # shadow reports: score histograms over [0, 1] in this many equal bins

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_URL = "https://lensops.dev/schemas/"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
INSTANCE_DESCRIPTION = "per runner start: two writers with one device id differ here"
TS_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$"

Name = Annotated[str, Field(min_length=1)]
Unit = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Sha256 = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
Box = Annotated[List[Unit], Field(min_length=4, max_length=4)]


class Message(StrictModel):
    """Frozen, unknown fields refused (common.models.StrictModel), no NaN/inf. A field typed without None but
    defaulting to None is optional on the wire: absent unless given (`to_json` leaves out what was not set),
    never null."""

    model_config = ConfigDict(allow_inf_nan=False, populate_by_name=True)

    def to_dict(self) -> Dict[str, Any]:
        """The wire form as Python objects (for json.dumps into files)."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    def to_json(self) -> bytes:
        """The wire form: compact UTF-8 JSON."""
        return self.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8")


class Prediction(Message):
    """One prediction of a model: a label with its score and, for a detector, its box."""

    label: Name
    score: Unit
    box: Box = Field(None, description="normalized [x_min, y_min, x_max, y_max] in the original frame (detection only)")

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Prediction":
        """From its JSON form ({label, score[, box]}), e.g. a golden sample or a capture sidecar."""
        return cls.model_validate(data)


class ModelRef(Message):
    """The model version and variant that produced a result."""

    name: Name
    version: Name
    variant: Name


class Latency(Message):
    """Milliseconds spent on one frame."""

    preprocess: NonNegative
    inference: NonNegative
    total: NonNegative


class InferenceResult(Message):
    """An inference payload before the publisher numbers it (`seq`) and says which runner sent it (`instance`)."""

    schema_: Literal["lensops.inference/1"] = Field(alias="schema")
    device: Name
    source: Name
    frame_ts: Annotated[
        str,
        Field(
            pattern=TS_PATTERN,
            description="capture time of the frame, UTC, e.g. 2026-11-22T05:27:55.123Z",
            json_schema_extra={"format": "date-time"},
        ),
    ]
    model: ModelRef
    latency_ms: Latency
    predictions: List[Prediction]
    counts: Dict[str, Count] = Field(description="label -> number of predictions with that label")

    def numbered(self, seq: int, instance: Optional[str] = None) -> "Inference":
        """The complete payload with its `seq` (and the runner's `instance`)."""
        fields = {"schema": self.schema_, **{k: getattr(self, k) for k in _RESULT_FIELDS}, "seq": seq}
        if instance is not None:
            fields["instance"] = instance
        return Inference(**fields)


_RESULT_FIELDS = tuple(name for name in InferenceResult.model_fields if name != "schema_")


class Inference(InferenceResult):
    """One inference result, published on <prefix>/<device>/<source>/inference (QoS 1, not retained)."""

    SCHEMA_ID: ClassVar[str] = INFERENCE
    SCHEMA_DESCRIPTION: ClassVar[str] = (
        "One inference result, published on <prefix>/<device>/<source>/inference (QoS 1, not retained). "
        "seq is contiguous per (device, source) across restarts; a duplicate carries the same seq."
    )

    seq: Count
    instance: str = Field(None, description=INSTANCE_DESCRIPTION)


class _OpenPart(BaseModel):
    """A part of the status whose old schema allowed more fields than it names."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)


class StatusModel(_OpenPart):
    """A source's model in the status; other fields are allowed."""

    name: str
    version: str
    variant: str


class Percentiles(_OpenPart):
    """Milliseconds over a source's recent frames (the runner: its last 200 inferred frames of the model it
    serves now)."""

    p50: NonNegative
    p99: NonNegative
    n: Count = Field(None, description="how many frames the figures are from")


class SourceStatus(_OpenPart):
    """One source in the status (the runner adds more figures: frames, inferred, published, last_seq, ...)."""

    state: str = None
    model: Optional[StatusModel] = None
    fps: NonNegative = None
    drops: Count = None
    last_error: Optional[str] = None
    latency_ms: Optional[Percentiles] = Field(
        None, description="the model's time per frame (preprocess + inference + decoding); null before a frame"
    )
    frame_age_ms: Optional[Percentiles] = Field(
        None, description="capture to result per frame (time waiting in the source included); null before a frame"
    )


class OutboxStatus(_OpenPart):
    """The MQTT outbox's figures."""

    depth: Count = None
    dropped: Count = None
    sent: Count = None
    dead_letters: Count = None


class Status(Message):
    """The device's retained status (the runner adds more fields: models, capture)."""

    model_config = ConfigDict(extra="allow")
    SCHEMA_ID: ClassVar[str] = STATUS
    SCHEMA_DESCRIPTION: ClassVar[str] = (
        "The device's retained status on <prefix>/<device>/status. "
        "The last will is the minimal form {schema, device, state: offline}."
    )

    schema_: Literal["lensops.status/1"] = Field(alias="schema")
    device: Name
    state: Literal["online", "degraded", "offline"]
    ts: Timestamp = None
    fleet: str = None
    sources: Dict[str, SourceStatus] = Field(None, description="source id -> its state")
    outbox: OutboxStatus = None
    last_error: Optional[str] = None
    latency_budget_ms: Optional[Annotated[float, Field(gt=0)]] = Field(
        None, description="the device's latency budget per frame (null: none); compare with sources' latency_ms.p99"
    )
    instance: str = Field(None, description=INSTANCE_DESCRIPTION)
    client_id_conflict: Optional[str] = None


HELD_BACK = ("rejected", "rolled_back")


class Deployment(Message):
    """One step of a model deployment on a device."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "if": {"properties": {"state": {"enum": list(HELD_BACK)}}},
            "then": {"required": ["reason"], "properties": {"reason": {"type": "string", "minLength": 1}}},
        },
    )
    SCHEMA_ID: ClassVar[str] = DEPLOYMENT
    SCHEMA_DESCRIPTION: ClassVar[str] = (
        "One step of a model deployment on a device, on <prefix>/<device>/deployment (not retained)."
    )

    schema_: Literal["lensops.deployment/1"] = Field(alias="schema")
    device: Name
    state: Literal["downloading", "verifying", "activated", "rejected", "rolled_back"]
    reason: Optional[str] = Field(None, description="why it was rejected or rolled back")
    model: Name
    version: Name
    variant: str = None
    source: str = None
    sha256: Sha256 = None
    ts: Timestamp

    @model_validator(mode="after")
    def _reason_when_held_back(self) -> "Deployment":
        if self.state in HELD_BACK and not self.reason:
            raise ValueError(f"a deployment event in state {self.state!r} needs a non-empty reason")
        return self


class FleetDeployment(Message):
    """The retained fleet deployment notice: which version an alias now points at."""

    SCHEMA_ID: ClassVar[str] = FLEET_DEPLOYMENT
    SCHEMA_DESCRIPTION: ClassVar[str] = (
        "The notice `promote` publishes, retained, on <prefix>/fleets/<fleet>/deployment: "
        "which version an alias now points at. A rollout publishes the same notice with ring, share and rollout "
        "on <prefix>/fleets/<fleet>/rings/<ring>/deployment."
    )

    schema_: Literal["lensops.fleet_deployment/1"] = Field(alias="schema")
    fleet: Name = None
    model: Name
    alias: Name
    version: Name
    package_uri: Name
    sha256: Sha256
    ts: Timestamp
    ring: Count = Field(None, description="a ring notice (<prefix>/fleets/<fleet>/rings/<ring>/deployment): its index")
    share: Annotated[List[Annotated[float, Field(ge=0, le=100)]], Field(min_length=2, max_length=2)] = Field(
        None, description="a ring notice: the [low, high) percent of device places (edge.rings.place) it applies to"
    )
    rollout: Name = Field(None, description="a ring notice: the id of the rollout that published it")


class ShadowModel(Message):
    """One side of a shadow comparison: the registry version and the package variant that ran."""

    version: Name
    variant: Name


class LatencySummary(Message):
    """Milliseconds (`total` of a frame) over the compared frames: median and 99th percentile."""

    p50: NonNegative
    p99: NonNegative


class ShadowLatency(Message):
    champion: Optional[LatencySummary] = None
    candidate: Optional[LatencySummary] = None


class ShadowScores(Message):
    """Histograms of scores (classification: the top-1 score; detection: every box's score) in SCORE_BINS equal
    bins over [0, 1] (the last bin includes 1.0)."""

    champion: Annotated[List[Count], Field(min_length=SCORE_BINS, max_length=SCORE_BINS)]
    candidate: Annotated[List[Count], Field(min_length=SCORE_BINS, max_length=SCORE_BINS)]


class ShadowFigures(Message):
    """What the shadow thread measured over a span of sampled frames."""

    frames: Count = Field(description="sampled frames both models inferred and that were compared")
    skipped: Count = Field(description="sampled frames not compared because the shadow queue was full")
    failed: Count = Field(0, description="sampled frames the candidate failed on (raised, NaN) or had no model for")
    agreement: Optional[Unit] = Field(
        description="mean per-frame agreement (classification: top-1 label equal; detection: matched-box F1 at "
        "IoU 0.5, 1 when neither model found a box); null when no frame was compared"
    )
    latency_ms: ShadowLatency
    scores: ShadowScores


class ShadowReport(Message):
    """A shadow report: the candidate model against the champion on sampled live frames of one source."""

    SCHEMA_ID: ClassVar[str] = SHADOW
    SCHEMA_DESCRIPTION: ClassVar[str] = (
        "A shadow report on <prefix>/<device>/<source>/shadow (QoS 1, not retained): the candidate model run "
        "beside the champion on a sampled share of live frames. `window` covers the frames since the previous "
        "report, `total` every frame since this (champion, candidate) pair began (`since`)."
    )

    schema_: Literal["lensops.shadow/1"] = Field(alias="schema")
    device: Name
    source: Name
    model: Name = Field(description="registered model name (champion and candidate are versions of it)")
    task: Literal["classification", "detection"]
    alias: Name = Field(description="the registry alias the candidate follows")
    rate: Annotated[float, Field(gt=0, le=1)] = Field(description="share of frames sampled")
    champion: ShadowModel
    candidate: Optional[ShadowModel] = Field(description="null while no candidate model is loaded")
    window: ShadowFigures
    total: ShadowFigures
    since: Timestamp = Field(description="when this (champion, candidate) pair began on this source")
    error: Optional[str] = Field(None, description="the candidate's last problem (load, staging, inference)")
    ts: Timestamp
    instance: str = Field(None, description=INSTANCE_DESCRIPTION)


MESSAGES: Dict[str, Type[Message]] = {
    "inference": Inference,
    "status": Status,
    "deployment": Deployment,
    "fleet_deployment": FleetDeployment,
    "shadow": ShadowReport,
}


def _tidy(node: Any) -> Any:
    """Drop what pydantic adds that only restates Python: `"default": null` (an absent field) and the
    per-field titles."""
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "default" and value is None:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _tidy({k: v for k, v in prop.items() if k != "title"}) for name, prop in value.items()}
            continue
        out[key] = _tidy(value)
    return out


def json_schema(stem: str) -> Dict[str, Any]:
    """The JSON Schema of one message (`inference`, `status`, `deployment`, `fleet_deployment`), as shipped."""
    model = MESSAGES[stem]
    generated = _tidy(model.model_json_schema(by_alias=True))
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_BASE_URL}{stem}.schema.json",
        "title": model.SCHEMA_ID,
        "description": model.SCHEMA_DESCRIPTION,
        **generated,
    }


def schema_path(stem: str, folder: Path = SCHEMA_DIR) -> Path:
    return Path(folder) / f"{stem}.schema.json"


def render(stem: str) -> str:
    return json.dumps(json_schema(stem), indent=2) + "\n"


def stale_schemas(folder: Path = SCHEMA_DIR) -> List[str]:
    """The schema files in `folder` whose JSON differs from what the models generate (or that are missing)."""
    stale = []
    for stem in MESSAGES:
        path = schema_path(stem, folder)
        if not path.exists() or json.loads(path.read_text(encoding="utf-8")) != json_schema(stem):
            stale.append(path.name)
    return stale


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.messages", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite edge/schemas/*.schema.json from the models")
    action.add_argument("--check", action="store_true", help="exit 1 when a committed schema differs")
    args = parser.parse_args(argv)
    if args.write:
        for stem in MESSAGES:
            write_text(schema_path(stem), render(stem))
            print(f"wrote {schema_path(stem)}")
        return 0
    stale = stale_schemas()
    for name in stale:
        print(f"{name} differs from the models: run `python -m edge.messages --write`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
