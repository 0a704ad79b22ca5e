"""Reading what runners publish: a subscriber that keeps every message of the topics it follows.

For notebooks, benchmarks and operators' scripts (the fleet side); a device never needs it. Messages
arrive at least once (QoS 1), so `inference` keeps one payload per (source, seq).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence
from urllib.parse import urlsplit

from edge.mqtt.config import SCHEMES


@dataclass(frozen=True)
class Received:
    topic: str
    payload: dict  # the message's JSON ({"raw": text} when it is not JSON)
    received_at: float  # time.time() on arrival (s)


class ResultCollector:
    """Subscribe (QoS 1) to `topics` on the broker at `url` (mqtt://host:port) and keep what arrives.

    Errors: ConnectionError naming the broker when it cannot connect and subscribe within `timeout_s`.
    Use as a context manager, or call close()."""

    def __init__(self, url: str, topics: Sequence[str], timeout_s: float = 10.0):
        import paho.mqtt.client as mqtt

        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or SCHEMES.get(parts.scheme, 1883)
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_connect = lambda client, *_: client.subscribe([(topic, 1) for topic in topics])
        self._refused: list = []

        def on_subscribe(_client, _userdata, _mid, reason_codes, _properties) -> None:
            self._refused = [code for code in reason_codes if code.is_failure]
            subscribed.set()

        self._client.on_subscribe = on_subscribe
        self._client.on_message = self._on_message
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the MQTT broker at {url}: {exc}") from None
        self._client.loop_start()
        if not subscribed.wait(timeout_s) or self._refused:
            self.close()
            why = f"refused ({self._refused})" if self._refused else f"no answer in {timeout_s} s"
            raise ConnectionError(f"could not subscribe to {list(topics)} on the MQTT broker at {url}: {why}")

    def _on_message(self, _client, _userdata, message) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            payload = {"raw": message.payload.decode(errors="replace")}
        with self._lock:
            self.messages.append(Received(message.topic, payload, time.time()))

    def received(self, suffix: str = "") -> list[Received]:
        """The messages so far whose topic ends with `suffix` (all by default), in arrival order."""
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def inference(self) -> dict[str, dict[int, dict]]:
        """Inference payloads per source and seq (a redelivered message counted once; a message without
        `source` and `seq` is left out)."""
        by_source: dict[str, dict[int, dict]] = {}
        for message in self.received("/inference"):
            if "source" not in message.payload or "seq" not in message.payload:
                continue
            by_source.setdefault(message.payload["source"], {})[message.payload["seq"]] = message.payload
        return by_source

    def wait_for(self, done: Callable[["ResultCollector"], bool], timeout_s: float) -> bool:
        """Poll `done(self)` every 50 ms until it holds (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self):
                return True
            time.sleep(0.05)
        return done(self)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "ResultCollector":
        return self

    def __exit__(self, *exc: Optional[object]) -> None:
        self.close()
