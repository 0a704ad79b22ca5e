"""The device config: one YAML file parsed once into a typed model (`load_config`).

```yaml
device_id: cam-01
fleet: demo
registry: {type: mlflow, uri: "sqlite:///mlflow.db", model: shapes-detector, alias: production}
sources:
  - {id: door, uri: data/demo/video.mp4}
mqtt: {url: "mqtt://127.0.0.1:1883", topic_prefix: lensops, qos: 1}
stream: {port: 8080}
```

Relative paths (sources, `sqlite:///` registry files, keys, certificates, the state folder) are
taken from the config file's folder, so the runner behaves the same from any working folder.
`${NAME}` in a value is replaced by that environment variable (an unset one is an error), so one
file serves many devices: `device_id: ${AWS_IOT_THING_NAME}`, `ca_file: ${GG_ROOT_CA_PATH}`.
Unknown keys are errors naming the key and where it is. Secrets are never in the YAML: the
MQTT password comes from `password_env` or `password_file`, AWS credentials from the usual
AWS environment or instance role.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Optional

import yaml
from pydantic import Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator

from common.errors import UserError
from common.models import StrictModel
from edge.batching import BatchConfig
from edge.capture import CaptureConfig
from edge.config_errors import describe
from edge.mqtt.config import MqttConfig
from edge.package.runtimes import RuntimeOptionsConfig
from edge.registry import BACKENDS, config_union
from edge.shadow import ShadowConfig
from edge.sources import CAPTURE_NICE, SourceConfig
from edge.stream import StreamConfig

# Python's thread switch interval while a runner serves (sys.setswitchinterval; Python's default is 5 ms). A
# source's thread back from decoding or inference (both run without the GIL) waits up to this long for the
# GIL while another thread runs Python; with many sources those waits add up to frame ages of a few frame
# intervals and to dropped frames (16 720p cameras on a 2-core EPYC, one run each: 58 -> 1 dropped frames, frame
# age p99 189 -> 103 ms).
SWITCH_INTERVAL_MS = 1.0
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = r"^[A-Za-z0-9_.-]+$"  # usable as an MQTT topic level, a folder name and an AWS IoT thing name
# config keys that hold paths, resolved against the config file's folder before validation
PATH_KEYS = (
    ("state_dir",),
    ("registry", "public_key"),
    ("registry", "cache_dir"),
    ("capture", "dir"),
    ("shadow", "cache_dir"),
    ("mqtt", "password_file"),
    ("mqtt", "outbox", "path"),
    ("mqtt", "tls", "ca_file"),
    ("mqtt", "tls", "cert_file"),
    ("mqtt", "tls", "key_file"),
)


class ConfigError(UserError):
    """A config the runner cannot use; the message is one line per problem, naming file, key and value."""


class Following(StrictModel):
    """What a device follows in the registry, besides where the registry is (the backend's Config)."""

    model: str = Field(description="registered model the sources use unless a source names its own")
    alias: str = Field("production", description="alias (or fleet alias such as fleet-lobby) the device follows")
    public_key: Optional[Path] = Field(
        None, description="Ed25519 public key (PEM): refuse unsigned or mis-signed packages"
    )
    poll_s: float = Field(
        30.0, gt=0, description="seconds between alias checks (the fleet notice triggers one at once)"
    )
    cache_dir: Optional[Path] = Field(None, description="package cache (last-known-good); default <state_dir>/models")
    prefer_variant: Optional[str] = Field(
        None, description="serve only this package variant (default: fastest runnable)"
    )
    keep: int = Field(1, ge=0, description="older package versions kept on disk besides current and previous")

    @field_validator("public_key")
    @classmethod
    def _key_exists(cls, value: Optional[Path]) -> Optional[Path]:
        if value is not None and not value.is_file():
            raise ValueError(f"public_key: file {str(value)!r} does not exist")
        return value


def _device_side(backend: ModuleType) -> type:
    """The backend's Config plus what a device follows: one member of the device's registry union."""
    config = backend.Config
    return create_model(
        f"{backend.KEY.capitalize()}DeviceRegistry",
        __base__=(config, Following),
        __doc__=f"{config.__doc__}\n\nOn a device, also what it follows: {Following.__doc__}",
        __module__=__name__,
    )


# the device's `registry`: each backend's Config (exactly as params.yaml's pipeline.registry reads it) + Following
DeviceRegistryConfig = config_union(tuple(_device_side(backend) for backend in BACKENDS.values()))


class DeviceConfig(StrictModel):
    """Everything the runner needs: who the device is, where models come from, frames, MQTT, HTTP."""

    device_id: str = Field(pattern=NAME, description="device name in topics; the thing name on AWS IoT Core")
    fleet: Optional[str] = Field(
        None, pattern=NAME, description="fleet whose retained deployment notice the device follows"
    )
    registry: DeviceRegistryConfig = Field(
        description=f"where models are resolved and downloaded (type: {' | '.join(BACKENDS)})"
    )
    sources: list[SourceConfig] = Field(min_length=1, description="cameras, streams, video files, image folders")
    mqtt: MqttConfig = Field(description="the broker and what is published")
    stream: Optional[StreamConfig] = Field(None, description="the device's HTTP page and MJPEG streams (off if unset)")
    capture: Optional[CaptureConfig] = Field(None, description="save frames for retraining (off if unset)")
    shadow: Optional[ShadowConfig] = Field(
        None, description="run a candidate beside the champion on sampled frames, publish shadow reports (off if unset)"
    )
    state_dir: Optional[Path] = Field(
        None, description="outbox, package cache; default .lensops/<device_id> next to the config file"
    )
    threads: Optional[int] = Field(
        None,
        ge=1,
        description="inference threads per model (default: 1 when the device has at least as many sources as "
        "cores, else the runtime's: every core)",
    )
    runtimes: Dict[str, RuntimeOptionsConfig] = Field(
        default_factory=dict,
        description="per runtime key (onnxruntime, openvino, mxnet), session options that replace its defaults, "
        "e.g. {openvino: {performance_hint: THROUGHPUT}}",
    )
    latency_budget_ms: Optional[float] = Field(None, gt=0, description="roll back a new model slower than this")
    batch: BatchConfig = Field(
        default_factory=BatchConfig,
        description="frames of sources that share a model inferred as one batch (max_size, deadline_ms)",
    )
    capture_nice: int = Field(
        CAPTURE_NICE,
        ge=0,
        le=19,
        description="capture (decode) threads run this much nicer than inference and publishing (Linux), so a "
        "decoded frame is taken before the next is decoded when the cores are busy; 0: same priority",
    )
    switch_interval_ms: float = Field(
        SWITCH_INTERVAL_MS,
        gt=0,
        le=100,
        description="Python's thread switch interval while the runner serves (ms; Python's default 5): how long "
        "a source's thread may wait for the interpreter; shorter keeps frame ages low with many sources",
    )
    status_interval_s: float = Field(5.0, gt=0, description="seconds between retained status updates")
    exit_when_done: bool = Field(
        False,
        description="exit once every source has ended and the outbox is drained "
        "(replays); default: keep serving until stopped",
    )

    @model_validator(mode="before")
    @classmethod
    def _paths_from_config_folder(cls, data: Any, info: ValidationInfo) -> Any:
        base = (info.context or {}).get("base_dir")
        if not isinstance(data, dict) or base is None:
            return data
        data = _copy_dicts(data)
        sources = data.get("sources") if isinstance(data.get("sources"), list) else []
        source_keys = [("sources", i, "password_file") for i, src in enumerate(sources) if isinstance(src, dict)]
        for keys in (*PATH_KEYS, *source_keys):
            parent = data
            for key in keys[:-1]:
                if isinstance(parent, list):
                    parent = parent[key] if isinstance(key, int) and key < len(parent) else None
                else:
                    parent = parent.get(key) if isinstance(parent, dict) else None
            value = parent.get(keys[-1]) if isinstance(parent, dict) else None
            if isinstance(value, str) and value:
                path = Path(os.path.expanduser(value))
                parent[keys[-1]] = str(path if path.is_absolute() else Path(base) / path)
        return data

    @field_validator("runtimes", mode="before")
    @classmethod
    def _runtime_key_is_the_tag(cls, value: Any) -> Any:
        """`runtimes: {openvino: {...}}`: the key names the runtime (the options' tag); a `runtime` inside that
        names another is an error."""
        if not isinstance(value, dict):
            return value
        for key, opts in value.items():
            if isinstance(opts, dict) and opts.get("runtime", key) != key:
                raise ValueError(
                    f"{key}: runtime {opts['runtime']!r} under {key!r}: leave runtime out, the key names it"
                )
        return {key: {**opts, "runtime": key} if isinstance(opts, dict) else opts for key, opts in value.items()}

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "DeviceConfig":
        ids = [s.id for s in self.sources]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"sources: id {', '.join(repr(i) for i in twice)} is used more than once")
        self.mqtt.effective_client_id(self.device_id)  # aws_iot: the client id must be the thing name
        if self.shadow and self.shadow.cache_dir and self.shadow.cache_dir == self.registry.cache_dir:
            raise ValueError(
                f"shadow.cache_dir: {str(self.shadow.cache_dir)!r} is the champion's registry.cache_dir; "
                "the candidate needs a folder of its own"
            )
        return self

    def model_for(self, source: SourceConfig) -> str:
        return source.model or self.registry.model

    @property
    def models(self) -> list[str]:
        """Distinct model names the sources use, in order of first use (one model manager each)."""
        return list(dict.fromkeys(self.model_for(s) for s in self.sources))

    @property
    def state_path(self) -> Path:
        return self.state_dir or Path(".lensops") / self.device_id

    @property
    def cache_path(self) -> Path:
        return self.registry.cache_dir or self.state_path / "models"


def _copy_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_dicts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_dicts(v) for v in value]
    return value


def load_config(path: Path) -> DeviceConfig:
    """The config file parsed and validated; ConfigError naming the file, the key path and the problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys (device_id, registry, sources, mqtt, ...), got {type(raw).__name__}"
        )
    base = path.resolve().parent
    raw = _with_environment(raw, path, "")
    try:
        config = DeviceConfig.model_validate(raw, context={"base_dir": base, "store_must_exist": True})
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{path}: {line}" for line in describe(exc, DeviceConfig))) from None
    if config.state_dir is None:  # the default lives next to the config file too
        config = config.model_copy(update={"state_dir": base / ".lensops" / config.device_id})
    return config


def _with_environment(value: Any, path: Path, where: str) -> Any:
    """`value` with every `${NAME}` in its strings replaced from the environment; ConfigError if one is unset."""
    if isinstance(value, dict):
        return {k: _with_environment(v, path, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_environment(v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{path}: {where}: environment variable {name} is not set (used as ${{{name}}})")
        return os.environ[name]

    return ENV_REFERENCE.sub(lookup, value)
