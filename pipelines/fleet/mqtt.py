"""A short-lived MQTT client for the fleet side (promote, `lensops fleet ...`), from an mqtt:// or mqtts:// URL.

`connect` raises UserError naming the URL when the broker does not answer; `publish` waits for the
broker's acknowledgement (QoS 1); `read_retained` collects the retained messages under a topic filter;
`listen` collects every message under a topic filter for a while.
The URL's user info is the MQTT username and password (redacted in every message).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from common.errors import UserError
from edge.redact import redact

DEFAULT_TIMEOUT_S = 10.0


def check_url(url: str, field: str = "mqtt_url") -> str:
    """`url` if it is an mqtt:// or mqtts:// URL with a host, else UserError naming `field`."""
    parsed = urlparse(url or "")
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise UserError(f"{field}: '{redact(url)}' is not an mqtt:// or mqtts:// URL")
    return url


def connect(url: str, client_id: str, field: str = "mqtt_url", timeout_s: float = DEFAULT_TIMEOUT_S) -> mqtt.Client:
    """A connected client with its network loop running (MQTT 3.1.1, clean session); `close` it when done.

    Raises UserError when the broker is unreachable or refuses the connection (bad credentials, ACL)."""
    parsed = urlparse(check_url(url, field))
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if parsed.scheme == "mqtts":
        client.tls_set()
    if parsed.username:
        client.username_pw_set(parsed.username, parsed.password)
    connected = threading.Event()
    refused: list = []

    def on_connect(_client, _userdata, _flags, code, _props) -> None:
        if code.is_failure:
            refused.append(str(code))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(parsed.hostname, parsed.port or (8883 if parsed.scheme == "mqtts" else 1883))
    except OSError as exc:
        raise UserError(f"MQTT broker {redact(url)} unreachable: {exc}") from None
    client.loop_start()
    if not connected.wait(timeout_s) or refused:
        close(client)
        why = f"refused the connection ({refused[0]})" if refused else f"did not answer within {timeout_s:g} s"
        raise UserError(f"MQTT broker {redact(url)} {why}")
    return client


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def publish(
    client: mqtt.Client,
    topic: str,
    payload: Union[dict, bytes, str],
    retain: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Publish at QoS 1 and wait for the broker's acknowledgement (UserError when it does not come).

    `payload` b"" with `retain` clears the retained message of `topic`."""
    data = json.dumps(payload) if isinstance(payload, dict) else payload
    info = client.publish(topic, data, qos=1, retain=retain)
    try:
        info.wait_for_publish(timeout_s)
    except (RuntimeError, ValueError) as exc:  # paho: not connected, or the queue refused the message
        raise UserError(f"MQTT publish on {topic} failed: {exc}") from None
    if not info.is_published():
        raise UserError(f"the MQTT broker did not acknowledge {topic} within {timeout_s:g} s")


def publish_retained(
    url: str,
    items: List[Tuple[str, Union[dict, bytes]]],
    client_id: str,
    field: str = "mqtt_url",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """(topic, payload) pairs published retained at QoS 1 on one connection, each acknowledged (`publish`);
    UserError naming the URL when the broker is unreachable."""
    client = connect(url, client_id, field, timeout_s)
    try:
        for topic, payload in items:
            publish(client, topic, payload, retain=True, timeout_s=timeout_s)
    finally:
        close(client)


def read_retained(
    url: str, topic_filter: str, settle_s: float = 1.0, client_id: Optional[str] = None, field: str = "mqtt_url"
) -> Dict[str, bytes]:
    """The retained messages under `topic_filter` (wildcards allowed): topic -> payload.

    A broker sends the retained messages at once after the subscription; collection ends when none
    arrived for `settle_s` seconds after the subscription was acknowledged. Live updates of the same
    topics (devices keep publishing) are not waited for."""
    found: Dict[str, bytes] = {}
    last = [time.monotonic()]
    subscribed = threading.Event()
    client = connect(url, client_id or f"lensops-read-{int(time.time() * 1000) % 10**9}", field)
    try:

        def on_message(_client, _userdata, message) -> None:
            if message.retain:  # sent for the subscription; a live update (retain False) must not hold us up
                if message.payload:
                    found[message.topic] = message.payload
                last[0] = time.monotonic()

        def on_subscribe(*_args) -> None:
            last[0] = time.monotonic()
            subscribed.set()

        client.on_message, client.on_subscribe = on_message, on_subscribe
        client.subscribe(topic_filter, qos=1)
        if not subscribed.wait(DEFAULT_TIMEOUT_S):
            raise UserError(f"MQTT broker {redact(url)} did not acknowledge the subscription to {topic_filter}")
        while time.monotonic() - last[0] < settle_s:
            time.sleep(0.05)
    finally:
        close(client)
    return dict(found)


class Subscription:
    """Every message under `topic_filter` (wildcards allowed) from the acknowledged subscription on, retained or
    not, kept as (topic, payload) in arrival order; a context manager (UserError when the broker is unreachable
    or does not acknowledge the subscription)."""

    def __init__(self, url: str, topic_filter: str, client_id: Optional[str] = None, field: str = "mqtt_url"):
        self.url, self.topic_filter = url, topic_filter
        self._found: List[Tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = connect(url, client_id or f"lensops-listen-{int(time.time() * 1000) % 10**9}", field)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: subscribed.set()
        # clean session: after paho reconnects (a broker restart), subscribe again
        self.client.on_connect = lambda client, *_args: client.subscribe(topic_filter, qos=1)
        self.client.subscribe(topic_filter, qos=1)
        if not subscribed.wait(DEFAULT_TIMEOUT_S):
            close(self.client)
            raise UserError(f"MQTT broker {redact(url)} did not acknowledge the subscription to {topic_filter}")

    def _on_message(self, _client, _userdata, message) -> None:
        with self._lock:
            self._found.append((message.topic, bytes(message.payload)))

    def messages(self) -> List[Tuple[str, bytes]]:
        with self._lock:
            return list(self._found)

    def close(self) -> None:
        close(self.client)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def listen(
    url: str, topic_filter: str, listen_s: float, client_id: Optional[str] = None, field: str = "mqtt_url"
) -> List[Tuple[str, bytes]]:
    """Every message under `topic_filter` (wildcards allowed) arriving within `listen_s` seconds after the
    subscription was acknowledged, retained or not: (topic, payload) in arrival order."""
    with Subscription(url, topic_filter, client_id, field) as subscription:
        time.sleep(listen_s)
        return subscription.messages()
