"""Source kinds as plugins: one module per kind, collected here into the config's tagged union.

Each kind module (camera, stream, file, folder) holds `KEY` and its config class (`FileSourceConfig`,
`type: Literal[KEY] = KEY`, a subclass of `base.SourceKind`): its own config keys, how it recognises a
URI, how it opens a reader and the behaviour flags the runner reads. `KINDS` lists the classes;
`SourceConfig` is their union, tagged by `type`. A source without `type` gets the first kind (in `KINDS`
order) whose `target()` takes its uri, so every device YAML written before `type` existed parses as it did;
an explicit `type` picks the kind (an unknown one is an error listing the valid ones).

To add a kind: a module beside these (copy the closest one), its class added to `KINDS`, a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo, WrapValidator
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import Annotated

from edge.redact import redact
from edge.source_kinds import camera, file, folder, stream
from edge.source_kinds.base import (
    Reader,
    ReplayKind,
    SourceError,
    SourceKind,
    UndecodableSource,
    first_frame,
    local_path,
    scheme_of,
)

__all__ = [
    "KINDS",
    "Reader",
    "ReplayKind",
    "SourceConfig",
    "SourceError",
    "SourceKind",
    "UndecodableSource",
    "first_frame",
    "kind_of",
    "parse_source",
    "source_config_union",
]

# the kinds, in the order a uri without `type` is tried
KINDS: tuple[type[SourceKind], ...] = (
    camera.CameraSourceConfig,
    stream.StreamSourceConfig,
    file.FileSourceConfig,
    folder.FolderSourceConfig,
)

# what every kind's config class declares besides its `type` field
DECLARED = ("NOUN", "URI_FORMS", "PATHS", "DROPS_BY_DEFAULT", "CONSECUTIVE_FRAMES", "CHECK_FIRST_FRAME")


def kind_of(uri: str, base_dir: Optional[Path] = None, kinds: Sequence[type[SourceKind]] = KINDS) -> type[SourceKind]:
    """The first kind whose `target()` takes `uri`; relative paths are taken from `base_dir` (default: the
    working folder). ValueError naming the value for an unknown scheme, a missing path or an empty folder."""
    text = str(uri).strip()
    if not text:
        raise ValueError("empty source uri")
    for kind in kinds:
        if kind.target(text, base_dir) is not None:
            return kind
    scheme = scheme_of(text)
    if scheme not in (None, "file"):
        raise ValueError(f"unknown scheme '{scheme}://' in {redact(text)!r}; expected {_forms(kinds)}")
    path = local_path(text, base_dir)
    nouns = [kind.NOUN for kind in kinds if kind.PATHS]
    raise ValueError(f"{' or '.join(nouns) or 'path'} not found: {str(path)!r}")


def source_config_union(kinds: Sequence[type[SourceKind]]) -> Any:
    """The tagged union of `kinds` (each a SourceKind subclass with a distinct `type` literal), with the
    validator that fills `type` from the uri and names the valid types; TypeError for a kind that does
    not declare what SourceKind asks of it."""
    keys = []
    for kind in kinds:
        missing = [name for name in DECLARED if not hasattr(kind, name)]
        if missing or "type" not in kind.model_fields or not isinstance(kind.model_fields["type"].default, str):
            raise TypeError(f"{kind.__module__}.{kind.__name__} declares no {', '.join(missing) or 'type default'}")
        keys.append(kind.key())
    if len(set(keys)) != len(keys):
        raise TypeError(f"source kinds with the same key: {keys}")
    return Annotated[Union[tuple(kinds)], Field(discriminator="type"), WrapValidator(_dispatcher(tuple(kinds)))]


def _dispatcher(kinds: tuple[type[SourceKind], ...]) -> Callable[[Any, Any, ValidationInfo], Any]:
    by_key = {kind.key(): kind for kind in kinds}

    def source_config(data: Any, handler: Any, info: ValidationInfo) -> Any:
        """`type` from the uri when not given; the unknown type, the type that does not take the uri and
        the key of another kind as one line each, before the tagged union validates the chosen kind."""
        if not isinstance(data, dict):
            return handler(data)  # the union says what is wrong
        base_dir = (info.context or {}).get("base_dir")
        name = data.get("id", "?")
        given = data.get("type")
        if not isinstance(data.get("uri"), (str, int)) or isinstance(data.get("uri"), bool):
            if given is None:  # no kind to ask: say what is wrong with the uri here
                missing = "uri" not in data
                raise _error_at("uri", "Field required" if missing else "Input should be a valid string", data, missing)
            return handler(data)  # the given kind says what is wrong with the uri
        uri = str(data["uri"]).strip()
        if given is None:
            try:
                kind = kind_of(uri, base_dir, kinds)
            except ValueError as exc:
                raise _error_at("uri", str(exc), data["uri"]) from None
            data = {**data, "type": kind.key()}
        elif not isinstance(given, str) or given not in by_key:
            raise _error_at(
                "type", f"source '{name}': unknown type {given!r}; expected one of: {', '.join(by_key)}", given
            )
        else:
            kind = by_key[given]
            if uri and not _takes(kind, uri, base_dir):
                try:
                    other = kind_of(uri, base_dir, kinds).key()
                except ValueError as exc:
                    raise _error_at("uri", str(exc), data["uri"]) from None
                raise _error_at(
                    "type",
                    f"source '{name}': type {given} takes {kind.URI_FORMS}, but {redact(uri)!r} is a {other}: "
                    f"give type {other}, or leave type out",
                    given,
                )
        for key in [key for key in data if key not in kind.model_fields]:
            owners = [k.NOUN + "s" for k in kinds if key in k.model_fields]
            if not owners:
                continue  # no kind's key: the chosen kind says it is unknown
            if data[key] in (None, False):  # `loop: false` on a stream says nothing (and always parsed)
                data = {k: v for k, v in data.items() if k != key}
                continue
            raise ValueError(
                f"source '{name}': {key} applies to {' and '.join(owners)}, not to the {kind.key()} {redact(uri)!r}"
            )
        return handler(data)

    return source_config


def _takes(kind: type[SourceKind], uri: str, base_dir: Optional[Path]) -> bool:
    try:
        return kind.target(uri, base_dir) is not None
    except ValueError:  # its kind of uri, but unusable: the kind's own validator says why
        return True


def _forms(kinds: Sequence[type[SourceKind]]) -> str:
    forms = [kind.URI_FORMS for kind in kinds]
    return ", ".join(forms[:-1]) + f" or {forms[-1]}" if len(forms) > 1 else "".join(forms)


def _error_at(key: str, message: str, value: Any, missing: bool = False) -> ValidationError:
    """A validation error located at `key` of the source (raised from the union's validator)."""
    error = "missing" if missing else PydanticCustomError("value_error", "Value error, {reason}", {"reason": message})
    return ValidationError.from_exception_data("SourceConfig", [InitErrorDetails(type=error, loc=(key,), input=value)])


SourceConfig = source_config_union(KINDS)
"""Any source kind's config, tagged by `type`; for annotations (`list[SourceConfig]`)."""

_ADAPTER: TypeAdapter = TypeAdapter(SourceConfig)


def parse_source(data: Any, base_dir: Optional[Path] = None) -> SourceKind:
    """One source's config (a dict as in the YAML) validated into its kind's config class; relative paths are
    taken from `base_dir`. pydantic.ValidationError (a ValueError) naming the key and the value."""
    return _ADAPTER.validate_python(data, context={"base_dir": base_dir} if base_dir is not None else None)
