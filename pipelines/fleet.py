"""The retained fleet deployment notice `promote` publishes (DESIGN.md, `<prefix>/fleets/<fleet>/deployment`)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import urlparse

from common.errors import UserError
from edge.messages import FLEET_DEPLOYMENT, FleetDeployment

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
    import paho.mqtt.client as mqtt

    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise UserError(f"promote.mqtt_url: '{url}' is not an mqtt:// or mqtts:// URL")
    topic = f"{topic_prefix}/fleets/{fleet}/deployment"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lensops-promote-{fleet}")
    if parsed.scheme == "mqtts":
        client.tls_set()
    if parsed.username:
        client.username_pw_set(parsed.username, parsed.password)
    try:
        client.connect(parsed.hostname, parsed.port or (8883 if parsed.scheme == "mqtts" else 1883))
    except OSError as exc:
        raise UserError(f"MQTT broker {url} unreachable: {exc}") from None
    client.loop_start()
    try:
        info = client.publish(topic, json.dumps(payload.to_dict()), qos=1, retain=True)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise UserError(f"MQTT broker {url} did not acknowledge the notice on {topic} within {timeout} s")
    finally:
        client.disconnect()
        client.loop_stop()
    return topic
