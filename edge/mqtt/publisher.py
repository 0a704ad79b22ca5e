"""The device's MQTT publisher: callers enqueue into the disk outbox, one thread drains it in order.

The drain thread owns the paho client and runs its network loop itself. Per connection it
sends the outbox oldest-first with up to `inflight` unacknowledged QoS 1 messages, deletes a
message only on its PUBACK, and on a lost connection drops the connection's state and starts
again from the oldest unacknowledged message on a new connection (after a jittered backoff
capped at `reconnect_max_s`). Delivery is at least once: a message whose PUBACK was lost is
sent again, with the same `seq`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge.messages import SHADOW, Deployment, InferenceResult, ShadowReport, Status
from edge.messages import Message as TypedMessage
from edge.mqtt.config import MqttConfig
from edge.mqtt.connection import CONNECT_TIMEOUT_S, Backoff, ClientOpener, Opener, drop, pump
from edge.mqtt.losses import POISON_STRIKES, LossTracker
from edge.mqtt.outbox import Message, OutboxStore, StoredMessage
from edge.mqtt.payloads import (
    DEPLOYMENT,
    STATUS,
    PayloadTooLarge,
    check_size,
    encode,
    offline_will,
    status_payload,
    utc_timestamp,
)
from edge.mqtt.policy import PublishGate, RateLimiter
from edge.mqtt.topics import Topics, check_aws_topic
from edge.redact import redact_all

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.01  # longest an enqueued message waits before the drain thread looks again


@dataclass(frozen=True)
class PublisherSettings:
    qos: int = 1
    inflight: int = 100
    max_payload_bytes: Optional[int] = None
    max_publishes_per_s: Optional[float] = None
    reconnect_max_s: float = 30.0
    sync_interval_s: float = 1.0
    aws_iot: bool = False

    @classmethod
    def from_config(cls, config: MqttConfig) -> "PublisherSettings":
        return cls(
            qos=config.qos,
            inflight=config.inflight,
            max_payload_bytes=config.payload_limit,
            max_publishes_per_s=config.publish_rate_limit,
            reconnect_max_s=config.reconnect_max_s,
            sync_interval_s=config.outbox.sync_interval_s,
            aws_iot=config.aws_iot,
        )


@dataclass(frozen=True)
class PublisherStats:
    connected: bool
    outbox_depth: int
    dropped: int
    sent: int
    reconnects: int
    last_error: Optional[str]
    dead_letters: int = 0  # messages in the outbox's dead-letter table (too large, or poison)
    client_id_conflict: Optional[str] = None  # set while another client seems to use our client id

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Publisher:
    """Enqueue from any thread; `start()` the drain thread; `stop()` drains briefly and says offline."""

    def __init__(
        self,
        store: OutboxStore,
        opener: Opener,
        topics: Topics,
        settings: PublisherSettings = PublisherSettings(),
        gate: Optional[PublishGate] = None,
    ):
        self.store = store
        self.topics = topics
        self.settings = settings
        self.gate = gate or PublishGate()
        self._opener = opener
        self._limiter = RateLimiter(settings.max_publishes_per_s) if settings.max_publishes_per_s else None
        self._status: dict[str, Any] = {}
        self._status_due = threading.Event()
        self._subscriptions: dict[str, tuple[Callable[[str, bytes], None], int]] = {}
        self._subscribe_due = threading.Event()
        self._stopping = threading.Event()
        self._drain_deadline = 0.0
        self._thread: Optional[threading.Thread] = None
        self._connected = False
        self._connections = 0
        self._sent = 0
        self._last_error: Optional[str] = None
        self.undelivered: Optional[int] = None  # messages left in the outbox when stop() returned
        self._losses = LossTracker(getattr(opener, "client_id", "?"))  # poison messages, client id conflicts
        self.instance = uuid.uuid4().hex[:12]  # per start: tells two writers with one device id apart
        self.dead_letters_at_start = self.store.dead_letters()
        self.dead_letters_this_run = 0  # set by stop()
        self._dead_logged = 0
        self._last_sync = time.monotonic()

    @classmethod
    def from_config(cls, config: MqttConfig, device_id: str, state_dir: Path) -> "Publisher":
        topics = Topics(config.topic_prefix, device_id, deeplens=config.deeplens_topic)
        will = encode(offline_will(device_id))
        opener = ClientOpener(config, config.effective_client_id(device_id), topics.status, will)
        outbox = config.outbox
        store = OutboxStore(outbox.path or Path(state_dir) / "outbox.sqlite", outbox.max_messages, outbox.durability)
        return cls(
            store,
            opener,
            topics,
            PublisherSettings.from_config(config),
            PublishGate(config.publish_policy, config.interval_s),
        )

    # -- what the runner calls ------------------------------------------------------------

    def publish_inference(self, source_id: str, payload: InferenceResult) -> Optional[int]:
        """Enqueue one inference result if the publish policy wants it; returns its `seq` (None if skipped).

        `seq` is taken from the outbox in the same transaction as the message, so it is
        contiguous per source across restarts. A payload over max_payload_bytes goes to the dead-letter
        table without a seq (so it leaves no gap) and None is returned.
        """
        if not self.gate.should_publish(source_id, payload.counts):
            return None
        targets = self.topics.inference_targets(source_id)

        def build(seq: int) -> list[Message]:
            body = encode(payload.numbered(seq, self.instance))
            return [self._checked(Message(topic, body, self.settings.qos)) for topic in targets]

        try:
            return self.store.append_numbered(source_id, build)
        except PayloadTooLarge as exc:  # takes no seq: the next result gets this one's number
            body = encode(payload)
            for topic in targets:
                self._dead_letter(Message(topic, body, self.settings.qos), str(exc))
            return None

    def publish_deployment(self, event: dict[str, Any]) -> None:
        """Enqueue a deployment event (downloading, verifying, activated, rejected, rolled_back)."""
        body = {"schema": DEPLOYMENT, "device": self.topics.device, "ts": utc_timestamp(), **redact_all(event)}
        self.enqueue(self.topics.deployment, Deployment.model_validate(body))

    def publish_shadow(self, source_id: str, report: dict[str, Any]) -> None:
        """Enqueue a shadow report (edge/shadow.py) on <prefix>/<device>/<source>/shadow, QoS as configured, not
        retained; schema, device and instance are added here. pydantic.ValidationError when it does not fit
        `lensops.shadow/1`."""
        body = {"schema": SHADOW, "device": self.topics.device, **redact_all(report), "instance": self.instance}
        self.enqueue(self.topics.shadow(source_id), ShadowReport.model_validate(body))

    def publish_status(self, status: dict[str, Any]) -> None:
        """Set the retained status; sent now if connected, and again after every reconnect.
        URL credentials in it are redacted (edge.redact): every subscriber of the status topic reads it."""
        self._status = redact_all(dict(status))
        self._status_due.set()

    def enqueue(
        self,
        topic: str,
        payload: Union[TypedMessage, dict, list, str, bytes],
        qos: Optional[int] = None,
        retain: bool = False,
    ) -> None:
        """Commit one message to the outbox; it is sent in order once connected (a payload over
        max_payload_bytes goes to the dead-letter table instead)."""
        qos = self.settings.qos if qos is None else qos
        message = Message(topic, encode(payload), qos, retain)
        try:
            self.store.append(self._checked(message))
        except PayloadTooLarge as exc:
            self._dead_letter(message, str(exc))

    def subscribe(self, topic: str, handler: Callable[[str, bytes], None], qos: int = 1) -> None:
        """Call `handler(topic, payload)` for messages matching `topic` (e.g. the retained fleet deployment notice).

        On this connection because AWS IoT Core allows one connection per thing name. Renewed on
        every reconnect; runs on the publisher thread, so hand slow work to another thread.
        """
        self._subscriptions[topic] = (handler, qos)
        self._subscribe_due.set()

    def stats(self) -> PublisherStats:
        conflict = self._losses.current_conflict(self._connected, time.monotonic())
        return PublisherStats(
            connected=self._connected,
            outbox_depth=self.store.depth(),
            dropped=self.store.dropped(),
            sent=self._sent,
            reconnects=max(0, self._connections - 1),
            last_error=self._last_error,
            dead_letters=self.store.dead_letters(),
            client_id_conflict=conflict,
        )

    @property
    def last_error(self) -> Optional[str]:
        """The last connection or send error (None after a successful connect)."""
        return self._last_error

    def wait_until_drained(self, timeout_s: float) -> bool:
        """True once every enqueued message was acknowledged, False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.store.depth() > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self) -> "Publisher":
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Send what can be sent within `drain_timeout_s`, publish status offline, disconnect, close the outbox."""
        self._drain_deadline = time.monotonic() + drain_timeout_s
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(drain_timeout_s + CONNECT_TIMEOUT_S + 5)
        self.undelivered = self.store.depth()
        self.dead_letters_this_run = self.store.dead_letters() - self.dead_letters_at_start
        if self._thread is not None and self._thread.is_alive():
            log.error("MQTT publisher thread did not stop; outbox left open")
            return
        self.store.close()

    # -- the drain thread ---------------------------------------------------------------------

    def _checked(self, message: Message) -> Message:
        check_size(message.topic, message.payload, self.settings.max_payload_bytes)
        if self.settings.aws_iot:
            check_aws_topic(message.topic)
        return message

    def _run(self) -> None:
        backoff = Backoff(self.settings.reconnect_max_s)
        while not self._stopping.is_set():
            try:
                client = self._connect()
                if client is not None:
                    backoff.reset()
                    try:
                        self._serve(client)
                    finally:
                        self._connected = False
                        drop(client)
                    if not self._stopping.is_set():
                        self._losses.after_loss(time.monotonic() - self._losses.connected_at)
            except Exception as exc:  # a broken store or paho bug must not end publishing for good
                log.exception("MQTT publisher error")
                self._note_error(f"publisher error: {exc}")
            if not self._stopping.is_set():
                self._sleep(backoff.next_delay())

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
            self._maybe_sync()
            if time.monotonic() >= deadline:
                return

    def _connect(self) -> Optional[mqtt.Client]:
        try:
            client = self._opener.open()
        except OSError as exc:
            self._note_error(f"cannot reach broker: {exc}")
            return None
        result: list[mqtt.ReasonCode] = []
        client.on_connect = lambda _c, _u, _flags, code, _props: result.append(code)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not result and time.monotonic() < deadline and pump(client, 0.05):
            pass
        if not result or result[0].is_failure:
            self._note_error(f"broker refused the connection: {result[0]}" if result else "no CONNACK from broker")
            drop(client)
            return None
        self._connections += 1
        self._connected = True
        self._losses.connected(time.monotonic())
        self._last_error = None
        log.info("MQTT connected (%d connection(s) so far)", self._connections)
        return client

    def _serve(self, client: mqtt.Client) -> None:
        inflight: dict[int, StoredMessage] = {}  # mid -> outbox row
        acked: list[int] = []

        def on_publish(_c, _u, mid: int, _code, _props) -> None:
            row = inflight.pop(mid, None)
            if row is not None:
                acked.append(row.id)

        control: set[int] = set()  # mids of this connection's status publishes not yet acknowledged

        def on_publish_or_control(client_, userdata, mid: int, code, props) -> None:
            control.discard(mid)
            on_publish(client_, userdata, mid, code, props)

        try:
            self._serve_rows(client, inflight, acked, on_publish_or_control, control)
        finally:
            poison = None if self._stopping.is_set() else self._losses.lost(list(inflight.values()), bool(control))
            if poison is not None:
                self._dead_letter(
                    poison,
                    f"the broker closed the connection {POISON_STRIKES} times in a row while "
                    f"it was in flight (over the broker's packet size limit, or refused by its ACL?)",
                )

    def _dead_letter(self, message: Message | StoredMessage, reason: str) -> None:
        self.store.dead_letter(message, reason)
        self._dead_logged += 1
        if self._dead_logged <= 10 or self._dead_logged % 100 == 0:  # a source that is always too big: not every frame
            log.error(
                "MQTT: dead-lettered a %d-byte message for %r (%d this run): %s",
                len(message.payload),
                message.topic,
                self._dead_logged,
                reason,
            )

    def _serve_rows(self, client: mqtt.Client, inflight: dict, acked: list, on_publish, control: set) -> None:
        client.on_publish = on_publish
        client.on_message = self._dispatch
        self._status_due.set()  # the broker may hold our will (`offline`) as the retained status
        self._subscribe_due.set()  # clean session: subscriptions are made again on every connection
        cursor = 0
        while True:
            if self._stopping.is_set() and (self.store.depth() == 0 or time.monotonic() > self._drain_deadline):
                self._say_offline(client)
                return
            if self._status_due.is_set() and self._may_publish():
                self._status_due.clear()
                control.add(client.publish(self.topics.status, encode(self._status_payload()), 1, True).mid)
            if self._subscribe_due.is_set():
                self._subscribe_due.clear()
                if self._subscriptions:
                    client.subscribe([(topic, qos) for topic, (_, qos) in dict(self._subscriptions).items()])
            busy = False
            window = 1 if self._losses.careful(cursor, inflight.values()) else self.settings.inflight
            room = window - len(inflight)
            for row in self.store.pending(cursor, room) if room > 0 else ():
                if not self._may_publish():
                    break
                info = client.publish(row.topic, row.payload, row.qos, row.retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    return
                cursor = row.id
                if row.qos == 0:
                    acked.append(row.id)
                else:
                    inflight[info.mid] = row
                busy = True
            alive = pump(client, 0.0 if busy else IDLE_WAIT_S)
            if acked:
                self._sent += self.store.remove(acked)
                self._losses.acked(acked)
                acked.clear()
            self._maybe_sync()
            if not alive:
                self._note_error("connection to broker lost")
                return

    def _dispatch(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        for topic, (handler, _) in dict(self._subscriptions).items():
            if mqtt.topic_matches_sub(topic, message.topic):
                try:
                    handler(message.topic, bytes(message.payload))
                except Exception:  # one failing handler must not stop publishing
                    log.exception("MQTT handler for %s failed", topic)

    def _may_publish(self) -> bool:
        return self._limiter is None or self._limiter.try_acquire()

    def _status_payload(self, offline: bool = False) -> Status:
        stats = self.stats()
        outbox = {
            "depth": stats.outbox_depth,
            "dropped": stats.dropped,
            "sent": stats.sent,
            "dead_letters": stats.dead_letters,
        }
        status = {**self._status, "instance": self.instance}
        if stats.client_id_conflict:
            status.update(
                state="degraded", client_id_conflict=stats.client_id_conflict, last_error=stats.client_id_conflict
            )
        try:
            return status_payload(self.topics.device, status, outbox, offline)
        except ValidationError as exc:  # a runner bug must not stop the status (or the drain thread)
            log.error("MQTT: status does not fit %s, sending a minimal one: %s", STATUS, exc)
            minimal = {"state": "degraded", "instance": self.instance, "last_error": f"invalid status: {exc}"[:500]}
            return status_payload(self.topics.device, minimal, outbox, offline)

    def _say_offline(self, client: mqtt.Client) -> None:
        info = client.publish(self.topics.status, encode(self._status_payload(offline=True)), 1, True)
        deadline = time.monotonic() + 1.0
        while not info.is_published() and time.monotonic() < deadline and pump(client, 0.05):
            pass
        client.disconnect()
        while client.socket() is not None and time.monotonic() < deadline + 0.5 and pump(client, 0.05):
            pass

    def _maybe_sync(self) -> None:
        if time.monotonic() - self._last_sync >= self.settings.sync_interval_s:
            self._last_sync = time.monotonic()
            self.store.checkpoint()

    def _note_error(self, message: str) -> None:
        # One warning per outage; the retries of the same outage go to debug.
        (log.debug if self._last_error else log.warning)("MQTT: %s", message)
        self._last_error = message
