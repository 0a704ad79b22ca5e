"""MQTT topic names (DESIGN.md, "MQTT topics"); the prefix is applied here and nowhere else.

| topic                                   | retained |
|-----------------------------------------|----------|
| `<prefix>/<device>/<source>/inference`  | no       |
| `<prefix>/<device>/status`              | yes      |
| `<prefix>/<device>/deployment`          | no       |
| `<prefix>/fleets/<fleet>/deployment`    | yes      |
| `<prefix>/fleets/<fleet>/rings/<ring>/deployment` | yes |
| `<prefix>/fleets/<fleet>/rollout`       | yes      |
| `<prefix>/<device>/<source>/shadow`     | no       |
| `$aws/things/<thing>/infer` (DeepLens)  | no       |
"""

from __future__ import annotations

from dataclasses import dataclass

AWS_IOT_MAX_TOPIC_BYTES = 256
AWS_IOT_MAX_SLASHES = 7  # not counting the `$aws/things/<thing>/` part of reserved topics


def topic_level(name: str, what: str) -> str:
    """`name` if it can be one topic level (no `/`, `+`, `#`, NUL; not empty), else ValueError naming it."""
    if not name or any(c in name for c in "/+#\0"):
        raise ValueError(f"{what} {name!r} cannot be an MQTT topic level (empty, or contains / + # or NUL)")
    return name


def inference_topic(prefix: str, device: str, source: str) -> str:
    return f"{prefix}/{topic_level(device, 'device id')}/{topic_level(source, 'source id')}/inference"


def status_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{topic_level(device, 'device id')}/status"


def status_filter(prefix: str) -> str:
    """The filter matching every device's status topic (what `lensops fleet status` reads)."""
    return f"{prefix}/+/status"


def deployment_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{topic_level(device, 'device id')}/deployment"


def fleet_deployment_topic(prefix: str, fleet: str) -> str:
    return f"{prefix}/fleets/{topic_level(fleet, 'fleet')}/deployment"


def ring_deployment_topic(prefix: str, fleet: str, ring: str) -> str:
    """The retained notice of one rollout ring (`ring` is its index, "0", "1", ...)."""
    return f"{_rings(prefix, fleet)}/{topic_level(ring, 'ring')}/deployment"


def _rings(prefix: str, fleet: str) -> str:
    return f"{prefix}/fleets/{topic_level(fleet, 'fleet')}/rings"


def ring_deployments_filter(prefix: str, fleet: str) -> str:
    """The filter matching every ring notice of `fleet`."""
    return f"{_rings(prefix, fleet)}/+/deployment"


def fleet_notice_filters(prefix: str, fleet: str) -> list[str]:
    """What a device of `fleet` follows: the fleet notice and every ring notice (an ACL's read rules)."""
    return [fleet_deployment_topic(prefix, fleet), ring_deployments_filter(prefix, fleet)]


def device_publish_filters(prefix: str, device: str) -> list[str]:
    """Filters matching every LensOps topic `device` publishes (an ACL's write rules): status, deployment,
    and inference and shadow of any source. Not the DeepLens topic (`deeplens_topic`)."""
    own = device_filter(prefix, device)[:-2]
    return [f"{own}/status", f"{own}/deployment", f"{own}/+/inference", f"{own}/+/shadow"]


def device_filter(prefix: str, device: str) -> str:
    """The filter matching every topic under `device` (`<prefix>/<device>/#`)."""
    return f"{prefix}/{topic_level(device, 'device id')}/#"


def rollout_topic(prefix: str, fleet: str) -> str:
    """The retained report of the fleet's latest rollout decision."""
    return f"{prefix}/fleets/{topic_level(fleet, 'fleet')}/rollout"


def shadow_topic(prefix: str, device: str, source: str) -> str:
    return f"{prefix}/{topic_level(device, 'device id')}/{topic_level(source, 'source id')}/shadow"


def shadow_filter(prefix: str) -> str:
    """The filter matching every device's shadow reports."""
    return f"{prefix}/+/+/shadow"


def deeplens_topic(thing: str) -> str:
    return f"$aws/things/{topic_level(thing, 'thing name')}/infer"


def check_aws_topic(topic: str) -> str:
    """`topic` if AWS IoT Core accepts it (<= 256 bytes, <= 7 slashes), else ValueError naming it."""
    counted = topic.split("/", 3)[-1] if topic.startswith("$aws/things/") else topic
    if len(topic.encode()) > AWS_IOT_MAX_TOPIC_BYTES or counted.count("/") > AWS_IOT_MAX_SLASHES:
        raise ValueError(
            f"topic {topic!r} is over AWS IoT Core's limits "
            f"({AWS_IOT_MAX_TOPIC_BYTES} bytes, {AWS_IOT_MAX_SLASHES} slashes)"
        )
    return topic


@dataclass(frozen=True)
class Topics:
    """The topics of one device."""

    prefix: str
    device: str
    deeplens: bool = False

    def __post_init__(self) -> None:
        topic_level(self.device, "device id")

    def inference(self, source: str) -> str:
        return inference_topic(self.prefix, self.device, source)

    def inference_targets(self, source: str) -> list[str]:
        """Where one inference result goes: the LensOps topic, plus the DeepLens one when enabled."""
        topics = [self.inference(source)]
        if self.deeplens:
            topics.append(deeplens_topic(self.device))
        return topics

    @property
    def status(self) -> str:
        return status_topic(self.prefix, self.device)

    @property
    def deployment(self) -> str:
        return deployment_topic(self.prefix, self.device)

    def fleet_deployment(self, fleet: str) -> str:
        return fleet_deployment_topic(self.prefix, fleet)

    def ring_deployments(self, fleet: str) -> str:
        """The filter matching every ring notice of `fleet`."""
        return ring_deployments_filter(self.prefix, fleet)

    def shadow(self, source: str) -> str:
        return shadow_topic(self.prefix, self.device, source)
