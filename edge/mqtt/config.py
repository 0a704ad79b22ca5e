"""The `mqtt:` section of the device config, parsed once into a typed, validated model.

```yaml
mqtt: {url: "mqtt://127.0.0.1:1883", topic_prefix: lensops, qos: 1}
```

Secrets are never read from the YAML: `password_env` names an environment variable and
`password_file` a file that holds the password.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

from common.models import StrictModel
from edge.secrets import read_password, refuse_password_key
from pydantic import Field, field_validator, model_validator

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
AWS_IOT_MAX_PAYLOAD_BYTES = 128 * 1024
AWS_IOT_MAX_PUBLISHES_PER_S = 100
AWS_IOT_MAX_INFLIGHT = 100


class PublishPolicy(str, Enum):
    """When an inference result is published: every frame, when the counts change, or at an interval."""

    EVERY_FRAME = "every_frame"
    ON_CHANGE = "on_change"
    INTERVAL = "interval"


class Durability(str, Enum):
    """How far an enqueued message is durable when `enqueue` returns.

    `process`: committed to SQLite's write-ahead log (in the OS page cache) -- survives `kill -9`
    of the runner and a clean reboot; a power cut loses at most the last `sync_interval_s`.
    `power`: fsync on every enqueue -- survives a power cut too, at ~1-5 ms per message.
    """

    PROCESS = "process"
    POWER = "power"


def _existing_file(field: str, value: Optional[Path]) -> Optional[Path]:
    if value is not None and not Path(value).is_file():
        raise ValueError(f"{field}: file {str(value)!r} does not exist")
    return value


class TlsConfig(StrictModel):
    """TLS towards the broker; `cert_file` + `key_file` make it mutual TLS (AWS IoT Core)."""

    ca_file: Optional[Path] = Field(
        None, description="CA bundle that signed the broker's certificate; system CAs if unset"
    )
    cert_file: Optional[Path] = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: Optional[Path] = Field(None, description="private key (PEM) of the client certificate")
    insecure: bool = Field(False, description="skip the broker host name check (test brokers only)")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file_exists(cls, value: Optional[Path], info) -> Optional[Path]:
        return _existing_file(f"tls.{info.field_name}", value)

    @model_validator(mode="after")
    def _cert_needs_key(self) -> "TlsConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: cert_file and key_file go together (mutual TLS needs both)")
        return self


class OutboxConfig(StrictModel):
    """The disk-backed outbox that holds messages until the broker acknowledged them."""

    path: Optional[Path] = Field(None, description="SQLite file; default <state dir>/outbox.sqlite")
    max_messages: int = Field(100_000, gt=0, description="bound; beyond it the oldest message is dropped (and counted)")
    durability: Durability = Field(
        Durability.PROCESS, description="process (survives kill -9) or power (fsync each message)"
    )
    sync_interval_s: float = Field(1.0, gt=0, description="how often the log is fsynced in `process` durability")


class MqttConfig(StrictModel):
    """Connection to the broker and what the device publishes."""

    url: str = Field(description="mqtt://host[:port] or mqtts://host[:port] (TLS, port 8883 by default)")
    topic_prefix: str = Field("lensops", description="first level of every topic")
    qos: Literal[0, 1] = Field(1, description="QoS of inference and deployment messages (1 = at least once)")
    client_id: Optional[str] = Field(
        None, description="MQTT client id; default lensops-<device id> (the thing name in aws_iot mode)"
    )
    keepalive: int = Field(30, ge=5, le=1200, description="seconds between keep-alive pings")
    username: Optional[str] = Field(None, description="broker user name")
    password_env: Optional[str] = Field(None, description="name of the environment variable holding the password")
    password_file: Optional[Path] = Field(None, description="file holding the password")
    tls: Optional[TlsConfig] = Field(None, description="TLS settings; needs an mqtts:// URL")
    aws_iot: bool = Field(
        False, description="AWS IoT Core limits: thing-name client id, 128 KB payloads, 100 publishes/s"
    )
    deeplens_topic: bool = Field(
        False, description="also publish inference to $aws/things/<thing>/infer (aws_iot only)"
    )
    inflight: int = Field(100, ge=1, le=65535, description="QoS 1 messages sent but not yet acknowledged")
    max_publishes_per_s: Optional[float] = Field(None, gt=0, description="rate limit; 100 in aws_iot mode")
    max_payload_bytes: Optional[int] = Field(
        None,
        ge=64,
        description="largest payload the broker takes "
        "(Mosquitto's max_packet_size less the topic and ~8 bytes of header); a larger message goes "
        "to the dead-letter table at enqueue; 131072 (and at most that) in aws_iot mode",
    )
    reconnect_max_s: float = Field(30.0, gt=0, le=300, description="cap of the jittered exponential reconnect backoff")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="disk-backed outbox")
    publish_policy: PublishPolicy = Field(PublishPolicy.EVERY_FRAME, description="every_frame, on_change or interval")
    interval_s: Optional[float] = Field(
        None, gt=0, description="seconds between publishes (interval); heartbeat for on_change"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_secrets_in_yaml(cls, data: Any) -> Any:
        return refuse_password_key(data)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"url: scheme {parts.scheme!r} of {url!r} is not one of {', '.join(SCHEMES)}")
        if not parts.hostname:
            raise ValueError(f"url: {url!r} has no host")
        try:
            parts.port
        except ValueError:
            raise ValueError(f"url: {url!r} has an invalid port") from None
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(
                f"url: {url!r} must be scheme://host[:port] only (credentials go in username/password_env)"
            )
        return url

    @field_validator("topic_prefix")
    @classmethod
    def _plain_prefix(cls, prefix: str) -> str:
        if not prefix or any(c in prefix for c in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"topic_prefix: {prefix!r} must be non-empty, without + # or a leading/trailing /")
        return prefix

    @field_validator("password_file")
    @classmethod
    def _password_file_exists(cls, value: Optional[Path]) -> Optional[Path]:
        return _existing_file("password_file", value)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "MqttConfig":
        if self.password_env and self.password_file:
            raise ValueError("password_env and password_file: give one of them, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password (password_env / password_file) requires username")
        if self.tls is not None and not self.use_tls:
            raise ValueError(f"tls is set but url {self.url!r} is not mqtts://")
        if self.publish_policy is PublishPolicy.INTERVAL and self.interval_s is None:
            raise ValueError("publish_policy interval requires interval_s")
        if self.deeplens_topic and not self.aws_iot:
            raise ValueError("deeplens_topic requires aws_iot: true")
        if self.aws_iot:
            self._check_aws_iot()
        return self

    def _check_aws_iot(self) -> None:
        if not self.use_tls:
            raise ValueError(f"aws_iot: AWS IoT Core needs TLS, but url {self.url!r} is not mqtts://")
        if self.max_publishes_per_s is not None and self.max_publishes_per_s > AWS_IOT_MAX_PUBLISHES_PER_S:
            raise ValueError(
                f"max_publishes_per_s: {self.max_publishes_per_s} is over AWS IoT Core's "
                f"{AWS_IOT_MAX_PUBLISHES_PER_S} per connection"
            )
        if self.inflight > AWS_IOT_MAX_INFLIGHT:
            raise ValueError(f"inflight: {self.inflight} is over AWS IoT Core's {AWS_IOT_MAX_INFLIGHT}")
        if self.max_payload_bytes is not None and self.max_payload_bytes > AWS_IOT_MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"max_payload_bytes: {self.max_payload_bytes} is over AWS IoT Core's {AWS_IOT_MAX_PAYLOAD_BYTES}"
            )

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or SCHEMES[parts.scheme]

    @property
    def payload_limit(self) -> Optional[int]:
        """max_payload_bytes, or AWS IoT Core's 128 KB in aws_iot mode when it is not set."""
        if self.aws_iot and self.max_payload_bytes is None:
            return AWS_IOT_MAX_PAYLOAD_BYTES
        return self.max_payload_bytes

    @property
    def publish_rate_limit(self) -> Optional[float]:
        if self.aws_iot:
            return min(self.max_publishes_per_s or AWS_IOT_MAX_PUBLISHES_PER_S, AWS_IOT_MAX_PUBLISHES_PER_S)
        return self.max_publishes_per_s

    def effective_client_id(self, device_id: str) -> str:
        """The client id: the thing name (= device id) in aws_iot mode, else `client_id` or lensops-<device>."""
        if self.aws_iot:
            if self.client_id not in (None, device_id):
                raise ValueError(
                    f"client_id: {self.client_id!r} must equal the device id / thing name {device_id!r} in aws_iot mode"
                )
            return device_id
        return self.client_id or f"lensops-{device_id}"

    def password(self) -> Optional[str]:
        """The password from the environment or the password file; ValueError naming what is missing."""
        return read_password(self.password_env, self.password_file)
