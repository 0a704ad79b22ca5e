"""Payload names, encoding and the JSON Schemas shipped in `edge/schemas/`."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

try:  # importlib.resources.files is Python 3.9+; the SageMaker pipeline steps run 3.8 (importlib_resources)
    from importlib.resources import files as _package_files
except ImportError:  # pragma: no cover - Python 3.8
    from importlib_resources import files as _package_files
from typing import Any, Optional, Union

# the payload names are defined with their models (edge.messages); imported from here too
from edge.messages import DEPLOYMENT, FLEET_DEPLOYMENT, INFERENCE, MESSAGES, STATUS, Message, Status  # noqa: F401

SCHEMA_FILES = {model.SCHEMA_ID: stem for stem, model in MESSAGES.items()}  # payload name -> schema file stem


class PayloadTooLarge(ValueError):
    """A message over the broker's size limit (AWS IoT Core: 128 KB); it is not enqueued."""


def utc_timestamp(seconds: Optional[float] = None) -> str:
    """RFC 3339 UTC with milliseconds, as in the payloads: 2026-11-22T05:27:55.123Z."""
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def encode(payload: Union[Message, dict, list, str, bytes]) -> bytes:
    """A typed message's wire JSON; compact JSON for dicts and lists (NaN is refused: it is not JSON), UTF-8 for
    text, bytes as they are."""
    if isinstance(payload, Message):
        return payload.to_json()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def check_size(topic: str, payload: bytes, limit: Optional[int]) -> None:
    if limit is not None and len(payload) > limit:
        raise PayloadTooLarge(
            f"payload for {topic!r} is {len(payload)} bytes, over the {limit}-byte limit "
            f"({limit // 1024} KB, mqtt.max_payload_bytes or AWS IoT Core's); "
            "publish fewer predictions per message"
        )


def status_payload(device: str, status: dict[str, Any], outbox: dict[str, int], offline: bool = False) -> Status:
    """The retained status: the runner's last status (state `online` unless it said otherwise), the outbox figures."""
    body = {"schema": STATUS, "device": device, "state": "online", "outbox": outbox, **status, "ts": utc_timestamp()}
    if offline:
        body["state"] = "offline"
    return Status.model_validate(body)


def offline_will(device: str) -> Status:
    """The last will: the minimal status {schema, device, state: offline}."""
    return Status(schema=STATUS, device=device, state="offline")


def load_schema(name: str) -> dict[str, Any]:
    """A shipped JSON Schema by payload name (`lensops.inference/1`) or file stem (`inference`)."""
    stem = SCHEMA_FILES.get(name, name)
    if stem not in SCHEMA_FILES.values():
        raise ValueError(f"schema {name!r} is not among {sorted(SCHEMA_FILES)}")
    text = _package_files("edge").joinpath("schemas", f"{stem}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
