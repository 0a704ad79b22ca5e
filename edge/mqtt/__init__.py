"""The device's MQTT side: typed config, topic names, the disk-backed outbox and the publisher."""

from edge.mqtt.config import Durability, MqttConfig, OutboxConfig, PublishPolicy, TlsConfig
from edge.mqtt.outbox import Message, OutboxBusy, OutboxStore
from edge.mqtt.payloads import PayloadTooLarge, encode, load_schema, utc_timestamp
from edge.mqtt.policy import PublishGate, RateLimiter
from edge.mqtt.publisher import Publisher, PublisherSettings, PublisherStats
from edge.mqtt.topics import Topics

__all__ = [
    "Durability",
    "Message",
    "MqttConfig",
    "OutboxBusy",
    "OutboxConfig",
    "OutboxStore",
    "PayloadTooLarge",
    "PublishGate",
    "PublishPolicy",
    "Publisher",
    "PublisherSettings",
    "PublisherStats",
    "RateLimiter",
    "TlsConfig",
    "Topics",
    "encode",
    "load_schema",
    "utc_timestamp",
]
