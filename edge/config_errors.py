"""Validation errors of a typed config as one readable line each, naming the key path and the value.

Used for the device config (`edge.config.load_config`) and params.yaml (`pipelines.config.load_params`).
The error locations pydantic gives are walked along the config's own types, so a tagged union's tag
level (`registry.sagemaker.region`, `sources[0].stream.username`, `runtimes.openvino.openvino.device`) is
left out without a list of tags to keep, and an unknown key lists the keys of the model it is in.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Optional

from pydantic import BaseModel, ValidationError


def describe(error: ValidationError, root: Any) -> list[str]:
    """One readable line per problem: `sources[0].colour: unknown key (expected one of: ...)`; `root` is the
    type that was validated (a model class, or e.g. Dict[str, Model])."""
    lines = []
    for item in error.errors():
        loc, model = _walk(root, tuple(item["loc"]))
        where = _path(loc)
        if item["type"] == "extra_forbidden":
            allowed = _keys(model, loc)
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


def _walk(root: Any, raw: tuple) -> tuple[list, Optional[type]]:
    """(the location without union tag levels, the model holding its last part) for an error at `raw`."""
    loc: list = []
    annotation, holder = root, None
    for part in raw:
        if annotation is None:  # off the known types (a validator's own location): keep the rest as given
            loc.append(part)
            continue
        origin = typing.get_origin(_unwrap(annotation))
        if isinstance(part, int) and origin in (list, tuple):
            loc.append(part)
            annotation = typing.get_args(_unwrap(annotation))[0]
            continue
        if origin is dict:
            loc.append(part)
            annotation = typing.get_args(_unwrap(annotation))[1]
            continue
        members = _models(annotation)
        tagged = [m for m in members if part in _tags(m)]
        if len(members) > 1 and tagged:  # the union's tag level: not a key of the config
            annotation = tagged[0]
            continue
        holder = members[0] if members else None
        field = holder.model_fields.get(part) if holder is not None and isinstance(part, str) else None
        loc.append(part)
        annotation = field.annotation if field is not None else None
    return loc, holder


def _unwrap(annotation: Any) -> Any:
    """Optional[X] -> X and Annotated[X, ...] -> X (one level each, repeated)."""
    while True:
        args = typing.get_args(annotation)
        if hasattr(annotation, "__metadata__") and args:  # Annotated (typing.Annotated is 3.9+)
            annotation = args[0]
        elif typing.get_origin(annotation) is typing.Union and len(args) == 2 and type(None) in args:
            annotation = args[0] if args[1] is type(None) else args[1]
        else:
            return annotation


def _models(annotation: Any) -> list:
    """The model classes `annotation` stands for: itself, or the members of a (tagged) union."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is typing.Union:
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _tags(model: type) -> set:
    """The values of `model`'s single-value Literal fields (a tagged union's tag: `type`, `runtime`)."""
    return {tag for name in model.model_fields for tag in _tags_of(model, name)}


def _keys(model: Optional[type], loc: list) -> list[str]:
    """The keys a user writes in `model`; a tag field is left out where the section's key already is the tag
    (`runtimes.openvino` holds no `runtime: openvino`)."""
    if model is None:
        return []
    said = {part for part in loc if isinstance(part, str)}
    return [name for name in model.model_fields if not (_tags_of(model, name) & said)]


def _tags_of(model: type, name: str) -> set:
    annotation = model.model_fields[name].annotation
    single = typing.get_origin(annotation) is typing.Literal and len(typing.get_args(annotation)) == 1
    return set(typing.get_args(annotation)) if single else set()


def _path(loc: list) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _strip_prefix(text: str, prefix: str) -> str:
    """str.removeprefix, which Python 3.8 (the SageMaker MXNet container the pipeline steps run in) lacks."""
    return text[len(prefix) :] if text.startswith(prefix) else text
