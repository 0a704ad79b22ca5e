"""The shipped JSON Schemas are valid draft 2020-12 and accept what the device publishes."""

import jsonschema
import pytest

from edge.mqtt import load_schema
from tests.edge.mqtt.helpers import inference_dict

VALIDATOR = jsonschema.Draft202012Validator


@pytest.mark.parametrize("name", ["inference", "status", "deployment", "fleet_deployment"])
def test_schemas_are_valid_draft_2020_12(name):
    schema = load_schema(name)
    VALIDATOR.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_design_example_is_valid():
    example = {
        "schema": "lensops.inference/1",
        "device": "cam-01",
        "source": "door",
        "seq": 1042,
        "frame_ts": "2026-11-22T05:27:55.123Z",
        "model": {"name": "shapes-detector", "version": "7", "variant": "openvino-bf16"},
        "latency_ms": {"preprocess": 0.9, "inference": 1.6, "total": 3.1},
        "predictions": [{"label": "person", "score": 0.91, "box": [0.12, 0.30, 0.25, 0.71]}],
        "counts": {"person": 1},
    }
    VALIDATOR(load_schema("lensops.inference/1")).validate(example)
    VALIDATOR(load_schema("inference")).validate({**inference_dict(), "seq": 0})


@pytest.mark.parametrize(
    "change",
    [
        {"seq": -1},
        {"model": {"name": "m", "version": 7, "variant": "v"}},
        {"frame_ts": "2026-11-22 05:27:55"},
        {"colour": "red"},
        {"predictions": [{"label": "a", "score": 1.5}]},
        {"predictions": [{"label": "a", "score": 0.5, "box": [0, 0, 1]}]},
    ],
)
def test_malformed_inference_is_rejected(change):
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR(load_schema("inference")).validate({**inference_dict(), "seq": 0, **change})


def test_deployment_event_and_fleet_notice():
    deployment = VALIDATOR(load_schema("deployment"))
    deployment.validate(
        {
            "schema": "lensops.deployment/1",
            "device": "cam-01",
            "state": "activated",
            "model": "shapes-detector",
            "version": "8",
            "ts": "2026-11-22T05:27:55.123Z",
        }
    )
    with pytest.raises(jsonschema.ValidationError, match="'reason' is a required property"):
        deployment.validate(
            {
                "schema": "lensops.deployment/1",
                "device": "cam-01",
                "state": "rejected",
                "model": "shapes-detector",
                "version": "8",
                "ts": "2026-11-22T05:27:55.123Z",
            }
        )
    VALIDATOR(load_schema("fleet_deployment")).validate(
        {
            "schema": "lensops.fleet_deployment/1",
            "fleet": "demo",
            "model": "shapes-detector",
            "alias": "production",
            "version": "8",
            "package_uri": "models:/shapes-detector/8",
            "sha256": "ab" * 32,
            "ts": "2026-11-22T05:27:55.123Z",
        }
    )


def test_unknown_schema_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="lensops.inference/1"):
        load_schema("inferences")
