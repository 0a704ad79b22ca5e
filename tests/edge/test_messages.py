"""The typed messages (edge.messages): the shipped JSON Schemas are generated from them, the models and the
schemas accept and refuse the same payloads, and what goes on the wire keeps its JSON."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from pydantic import ValidationError

from edge.messages import (
    MESSAGES,
    Deployment,
    FleetDeployment,
    Inference,
    InferenceResult,
    Prediction,
    Status,
    json_schema,
    main,
    schema_path,
    stale_schemas,
)
from edge.mqtt.payloads import load_schema, status_payload

VALIDATOR = jsonschema.Draft202012Validator
FRAME_TS = "2026-11-22T05:27:55.123Z"
SHA = "ab" * 32


def test_committed_schemas_are_what_the_models_generate():
    assert stale_schemas() == [], "run `python -m edge.messages --write` and commit edge/schemas/"
    assert main(["--check"]) == 0


@pytest.mark.parametrize("stem", sorted(MESSAGES))
def test_generated_schemas_keep_their_id_title_and_dialect(stem):
    schema = load_schema(stem)
    assert schema == json_schema(stem) == json.loads(schema_path(stem).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://lensops.dev/schemas/{stem}.schema.json"
    assert schema["title"] == MESSAGES[stem].SCHEMA_ID and schema["description"]
    VALIDATOR.check_schema(schema)


def test_check_fails_on_a_schema_that_differs(tmp_path):
    for stem in MESSAGES:
        schema_path(stem, tmp_path).write_text(json.dumps(json_schema(stem)))
    assert stale_schemas(tmp_path) == []
    changed = json_schema("inference")
    changed["properties"]["seq"]["minimum"] = 1
    schema_path("inference", tmp_path).write_text(json.dumps(changed))
    schema_path("status", tmp_path).unlink()
    assert stale_schemas(tmp_path) == ["inference.schema.json", "status.schema.json"]


def _inference() -> dict:
    return {
        "schema": "lensops.inference/1",
        "device": "cam-lobby-01",
        "source": "front-door",
        "frame_ts": FRAME_TS,
        "model": {"name": "ssd-mobilenet-voc", "version": "7", "variant": "onnx-int8"},
        "latency_ms": {"preprocess": 0.412, "inference": 1.734, "total": 2.301},
        "predictions": [
            {"label": "person", "score": 0.91, "box": [0.12, 0.3, 0.25, 0.71]},
            {"label": "car", "score": 0.77, "box": [0.52, 0.1, 0.65, 0.41]},
            {"label": "person", "score": 0.6, "box": [0.0, 0.0, 1.0, 1.0]},
        ],
        "counts": {"person": 2, "car": 1},
        "seq": 42,
        "instance": "3f9a1c2b7d4e",
    }


def _changed(base: dict, path: list, value=None, delete: bool = False) -> dict:
    doc = copy.deepcopy(base)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


# What the hand-written schemas (before they were generated) accepted (True) and refused (False).
INFERENCE_CASES = {
    "valid detection": ([], None, False, True),
    "classification prediction (no box)": (["predictions"], [{"label": "cat", "score": 0.9}], False, True),
    "no instance": (["instance"], None, True, True),
    "box: null": (["predictions", 0, "box"], None, False, False),
    "instance: null": (["instance"], None, False, False),
    "seq -1": (["seq"], -1, False, False),
    "seq 1.5": (["seq"], 1.5, False, False),
    "schema wrong": (["schema"], "lensops.inference/2", False, False),
    "device ''": (["device"], "", False, False),
    "frame_ts without Z": (["frame_ts"], "2026-11-22 05:27:55", False, False),
    "extra top key": (["colour"], "red", False, False),
    "extra prediction key": (["predictions", 0, "x"], 1, False, False),
    "extra model key": (["model", "x"], 1, False, False),
    "model.version int": (["model", "version"], 7, False, False),
    "score 1.5": (["predictions", 0, "score"], 1.5, False, False),
    "score null (NaN)": (["predictions", 0, "score"], None, False, False),
    "box of 3": (["predictions", 0, "box"], [0, 0, 1], False, False),
    "box item 1.2": (["predictions", 0, "box"], [0, 0, 1, 1.2], False, False),
    "latency -1": (["latency_ms", "total"], -1, False, False),
    "latency without total": (["latency_ms", "total"], None, True, False),
    "counts -1": (["counts", "person"], -1, False, False),
    "label ''": (["predictions", 0, "label"], "", False, False),
    "no counts": (["counts"], None, True, False),
}


@pytest.mark.parametrize("case", sorted(INFERENCE_CASES))
def test_inference_model_and_schema_accept_and_refuse_alike(case):
    path, value, delete, valid = INFERENCE_CASES[case]
    doc = _changed(_inference(), path, value, delete) if path else _inference()
    assert VALIDATOR(load_schema("inference")).is_valid(doc) == valid
    try:
        Inference.model_validate(doc)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == valid


def _status() -> dict:
    return {
        "schema": "lensops.status/1",
        "device": "cam-01",
        "state": "online",
        "outbox": {"depth": 0, "dropped": 0, "sent": 12, "dead_letters": 0},
        "sources": {
            "door": {
                "state": "ok",
                "model": {"name": "m", "version": "7", "variant": "onnx-fp32"},
                "fps": 9.5,
                "frames": 100,
                "drops": 0,
                "last_error": None,
                "last_seq": None,
            },
            "shelf": {"state": "starting", "model": None, "last_error": "no model to serve"},
        },
        "models": {"m": {"alias": "production", "bad": []}},  # more than the schema names: allowed
        "last_error": None,
        "instance": "3f9a1c2b7d4e",
        "ts": FRAME_TS,
    }


STATUS_CASES = {
    "full": ([], None, False, True),
    "the last will": (["outbox"], None, True, True),
    "state unknown": (["state"], "sleeping", False, False),
    "device ''": (["device"], "", False, False),
    "negative outbox depth": (["outbox", "depth"], -1, False, False),
    "negative fps": (["sources", "door", "fps"], -1.0, False, False),
    "fleet null": (["fleet"], None, False, False),
    "client_id_conflict null": (["client_id_conflict"], None, False, True),
    "model without variant": (["sources", "door", "model", "variant"], None, True, False),
    "no state": (["state"], None, True, False),
}


@pytest.mark.parametrize("case", sorted(STATUS_CASES))
def test_status_model_and_schema_accept_and_refuse_alike(case):
    path, value, delete, valid = STATUS_CASES[case]
    doc = _changed(_status(), path, value, delete) if path else _status()
    if case == "the last will":
        doc = {"schema": "lensops.status/1", "device": "cam-01", "state": "offline"}
    assert VALIDATOR(load_schema("status")).is_valid(doc) == valid
    try:
        accepted = json.loads(Status.model_validate(doc).to_json()) == doc  # and it comes back as it went in
    except ValidationError:
        accepted = False
    assert accepted == valid


DEPLOYMENT = {
    "schema": "lensops.deployment/1",
    "device": "cam-01",
    "state": "activated",
    "reason": None,
    "model": "shapes-detector",
    "version": "8",
    "variant": "onnx-fp32",
    "sha256": SHA,
    "ts": FRAME_TS,
}
DEPLOYMENT_CASES = {
    "activated": ({}, True),
    "activated, no reason": ({"reason": ...}, True),
    "rejected with a reason": ({"state": "rejected", "reason": "sha256 mismatch"}, True),
    "rejected, reason null": ({"state": "rejected"}, False),
    "rolled back, no reason": ({"state": "rolled_back", "reason": ...}, False),
    "rolled back, reason ''": ({"state": "rolled_back", "reason": ""}, False),
    "bad sha256": ({"sha256": "ABC"}, False),
    "unknown state": ({"state": "paused"}, False),
    "extra field": ({"previous": "7"}, True),
    "no ts": ({"ts": ...}, False),
}


@pytest.mark.parametrize("case", sorted(DEPLOYMENT_CASES))
def test_deployment_model_and_schema_accept_and_refuse_alike(case):
    change, valid = DEPLOYMENT_CASES[case]
    doc = {k: v for k, v in {**DEPLOYMENT, **change}.items() if v is not ...}
    assert VALIDATOR(load_schema("deployment")).is_valid(doc) == valid
    try:
        accepted = json.loads(Deployment.model_validate(doc).to_json()) == doc
    except ValidationError:
        accepted = False
    assert accepted == valid


NOTICE = {
    "schema": "lensops.fleet_deployment/1",
    "model": "shapes-detector",
    "alias": "production",
    "version": "8",
    "package_uri": "models:/shapes-detector/8",
    "sha256": SHA,
    "ts": FRAME_TS,
}
NOTICE_CASES = {
    "as promote sends it": ({}, True),
    "with its fleet": ({"fleet": "lobby"}, True),
    "the hyphenated id promote used to send": ({"schema": "lensops.fleet-deployment/1"}, False),
    "extra field": ({"colour": "red"}, False),
    "empty alias": ({"alias": ""}, False),
    "bad sha256": ({"sha256": "ab"}, False),
}


@pytest.mark.parametrize("case", sorted(NOTICE_CASES))
def test_fleet_notice_model_and_schema_accept_and_refuse_alike(case):
    change, valid = NOTICE_CASES[case]
    doc = {**NOTICE, **change}
    assert VALIDATOR(load_schema("fleet_deployment")).is_valid(doc) == valid
    try:
        accepted = json.loads(FleetDeployment.model_validate(doc).to_json()) == doc
    except ValidationError:
        accepted = False
    assert accepted == valid


def _old_encode(payload: dict) -> bytes:  # edge.mqtt.payloads.encode of a dict, as the runner used it before
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def test_the_inference_payload_keeps_its_bytes():
    # given a payload as the runner assembled it before (sinks: schema, device, source, frame_ts, then the
    # result's model, latency_ms, predictions, counts; the publisher: seq, instance)
    old = _inference()
    result = InferenceResult.model_validate({k: v for k, v in old.items() if k not in ("seq", "instance")})
    # when numbered and encoded by the typed path
    wire = result.numbered(42, "3f9a1c2b7d4e").to_json()
    # then subscribers get the same bytes (same keys, same order, compact)
    assert wire == _old_encode(old)
    classification = {**old, "predictions": [{"label": "cat", "score": 0.9}], "counts": {"cat": 1}}
    del classification["instance"]
    assert Inference.model_validate(classification).to_json() == _old_encode(classification)


def test_a_prediction_refuses_what_the_schema_refuses():
    with pytest.raises(ValidationError, match="finite number"):
        Prediction(label="a", score=float("nan"))
    with pytest.raises(ValidationError):
        Prediction(label="a", score=0.5, box=[0.0, 0.0, 1.0])
    with pytest.raises(ValidationError):
        Prediction(label="", score=0.5)
    assert Prediction(label="a", score=0.5).to_dict() == {"label": "a", "score": 0.5}
    assert Prediction.from_dict({"label": "a", "score": 0.5, "box": [0, 0, 1, 1]}).box == [0.0, 0.0, 1.0, 1.0]


def test_status_payload_keeps_nulls_and_the_runner_s_extra_fields():
    status = {"state": "degraded", "sources": {"door": {"state": "ok", "model": None}}, "last_error": None}
    body = json.loads(status_payload("cam-01", {**status, "models": {}}, {"depth": 1}).to_json())
    assert body["last_error"] is None and body["sources"]["door"]["model"] is None and body["models"] == {}
    assert (body["schema"], body["state"], body["outbox"]) == ("lensops.status/1", "degraded", {"depth": 1})
    offline = json.loads(status_payload("cam-01", status, {}, offline=True).to_json())
    assert offline["state"] == "offline"
    VALIDATOR(load_schema("status")).validate(body)
