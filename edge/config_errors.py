"""Validation errors of the device config as one readable line each, naming the key path and the value."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from edge.registry import BACKENDS
from edge.source_kinds import KINDS

TAGS = tuple(BACKENDS)  # the registry union's tags: pydantic puts them in error locations
SOURCE_TAGS = tuple(kind.key() for kind in KINDS)  # the sources union's tags, right after sources[i]


def describe(error: ValidationError) -> list[str]:
    """One readable line per problem: `sources[0].colour: unknown key (expected one of: ...)`."""
    lines = []
    for item in error.errors():
        loc = [part for i, part in enumerate(item["loc"]) if not _is_tag(item["loc"], i)]  # a union's tag level
        where = _path(loc)
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1], item["loc"])
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            lines.append(
                f"{where}: unknown key"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
            )
            continue
        message = _strip_prefix(str(item["msg"]), "Value error, ")
        last = str(loc[-1]) if loc else ""
        message = _strip_prefix(message, f"{last}: ") if last else message
        if (
            item["type"] not in ("missing", "union_tag_invalid", "union_tag_not_found")
            and "input" in item
            and not isinstance(item["input"], (dict, list))
            and "value_error" not in item["type"]
        ):
            message += f" (got {item['input']!r})"
        lines.append(f"{where}: {message}" if where else message)
    return lines


def _is_tag(loc: tuple, i: int) -> bool:
    """Whether `loc[i]` is a tagged union's tag (`sources[0].stream.username`: a source kind, not a key;
    `stream` alone is the device's stream key)."""
    if loc[i] in TAGS:
        return True
    if i >= 2 and loc[i - 2] == "runtimes" and loc[i] == loc[i - 1]:  # runtimes.openvino.<tag openvino>
        return True
    return loc[i] in SOURCE_TAGS and i >= 2 and loc[i - 2] == "sources" and isinstance(loc[i - 1], int)


def _path(loc: list) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _allowed_keys(loc: list, raw_loc: tuple) -> list[str]:
    """The keys the model at `loc` accepts (walking DeviceConfig's fields), or [] when unknown."""
    from edge.config import DeviceConfig

    model: Any = DeviceConfig
    tags = [part for i, part in enumerate(raw_loc) if _is_tag(raw_loc, i)]
    dict_key = False  # the next part is a key of a dict field (runtimes.<key>), not a field
    for part in loc:
        if isinstance(part, int) or dict_key:
            dict_key = False
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        dict_key = typing.get_origin(field.annotation) is dict
        model = _model_in(field.annotation, tags)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _model_in(annotation: Any, tags: list) -> Any:
    """The BaseModel inside Optional[...], list[...] or a tagged union (picked by the union tag in the error)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    candidates = [_model_in(arg, tags) for arg in typing.get_args(annotation)]
    candidates = [c for c in candidates if c is not None]
    for candidate in candidates:
        tag = candidate.model_fields.get("type") or candidate.model_fields.get("runtime")
        if tag is not None and typing.get_args(tag.annotation) and typing.get_args(tag.annotation)[0] in tags:
            return candidate
    return candidates[0] if candidates else None


def _strip_prefix(text: str, prefix: str) -> str:
    """str.removeprefix, which Python 3.8 (the SageMaker MXNet container the pipeline steps run in) lacks."""
    return text[len(prefix) :] if text.startswith(prefix) else text
