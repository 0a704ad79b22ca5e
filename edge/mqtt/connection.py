"""Opening one paho-mqtt 2.x connection from `MqttConfig`: TLS / mutual TLS, credentials, last will.

The publisher opens a fresh client for every connection attempt (its own outbox, not paho's
memory, is what gets resent), and runs its network loop itself, so paho never reconnects on
its own.
"""

from __future__ import annotations

import random
import select
import ssl
from typing import Optional, Protocol

import paho.mqtt.client as mqtt

from edge.mqtt.config import MqttConfig

CONNECT_TIMEOUT_S = 10.0
OK = mqtt.MQTT_ERR_SUCCESS


class Opener(Protocol):
    """Anything that returns a connected (CONNECT sent) paho client, or raises OSError."""

    def open(self) -> mqtt.Client: ...


def ssl_context(config: MqttConfig) -> Optional[ssl.SSLContext]:
    """The TLS context for an mqtts:// URL: the configured CA (or the system's), the client certificate for mTLS."""
    if not config.use_tls:
        return None
    tls = config.tls
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
    if tls and tls.cert_file:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls and tls.insecure:
        context.check_hostname = False
    if config.aws_iot and config.port == 443:
        context.set_alpn_protocols(["x-amzn-mqtt-ca"])  # AWS IoT Core's MQTT over 443
    return context


class ClientOpener:
    """Makes and connects a paho client; `open()` raises OSError when the broker cannot be reached."""

    def __init__(self, config: MqttConfig, client_id: str, will_topic: str, will_payload: bytes):
        self.config = config
        self.client_id = client_id
        self.will = (will_topic, will_payload)
        self._password = config.password()  # read once at start: a missing secret fails at boot
        self._ssl = ssl_context(config)

    def open(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.will_set(self.will[0], self.will[1], qos=1, retain=True)
        if self.config.username:
            client.username_pw_set(self.config.username, self._password)
        if self._ssl is not None:
            client.tls_set_context(self._ssl)  # paho takes `insecure` from context.check_hostname
        # The publisher keeps its own window; paho's (0 = none) would rescan all in-flight messages per PUBACK.
        client.max_inflight_messages_set(0)
        client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive)
        return client


class Backoff:
    """Jittered exponential delays: 0.5 s, 1 s, 2 s, ... capped at `cap_s`, each drawn in [d/2, d]."""

    def __init__(self, cap_s: float = 30.0, first_s: float = 0.5, rng: Optional[random.Random] = None):
        self.cap_s = cap_s
        self.first_s = first_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.first_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def pump(client: mqtt.Client, timeout: float) -> bool:
    """One turn of paho's network loop (read, write, keep-alive); False once the connection is gone."""
    sock = client.socket()
    if sock is None:
        return False
    pending = sock.pending() if hasattr(sock, "pending") else 0
    try:
        readable, writable, _ = select.select(
            [sock], [sock] if client.want_write() else [], [], 0.0 if pending else timeout
        )
    except (OSError, ValueError, TypeError):
        return False
    if (readable or pending) and client.loop_read() != OK:
        return False
    if writable and client.socket() is not None and client.loop_write() != OK:
        return False
    return client.loop_misc() == OK


def drop(client: mqtt.Client) -> None:
    """Drop a client's socket (a connection we give up on: no DISCONNECT, so the broker sends our will)."""
    sock = client.socket()
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
