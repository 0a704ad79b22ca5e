"""The retained fleet deployment notice `promote` publishes (DESIGN.md, `<prefix>/fleets/<fleet>/deployment`)."""

from __future__ import annotations

from datetime import datetime, timezone

from edge.messages import FLEET_DEPLOYMENT, FleetDeployment
from edge.mqtt.topics import fleet_deployment_topic
from pipelines.fleet import mqtt

# The id its JSON Schema (edge/schemas/fleet_deployment.schema.json) requires. Until the notice was built from
# edge.messages.FleetDeployment it was sent as "lensops.fleet-deployment/1", which that schema rejected.
NOTICE_SCHEMA = FLEET_DEPLOYMENT


def notice(model: str, alias: str, version: str, package_uri: str, sha256: str) -> FleetDeployment:
    return FleetDeployment(
        schema=NOTICE_SCHEMA,
        model=model,
        alias=alias,
        version=str(version),
        package_uri=package_uri,
        sha256=sha256,
        ts=datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )


def publish_notice(url: str, topic_prefix: str, fleet: str, payload: FleetDeployment, timeout: float = 10.0) -> str:
    """Publish `payload` retained at QoS 1 and wait for the broker's acknowledgement; returns the topic."""
    topic = fleet_deployment_topic(topic_prefix, fleet)
    mqtt.publish_retained(url, [(topic, payload.to_dict())], f"lensops-promote-{fleet}", "promote.mqtt_url", timeout)
    return topic
