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

from edge.mqtt.config import MqttConfig
from edge.mqtt.connection import CONNECT_TIMEOUT_S, Backoff, ClientOpener, Opener, drop, pump
from edge.mqtt.outbox import Message, OutboxStore, StoredMessage
from edge.mqtt.payloads import (DEPLOYMENT, STATUS, PayloadTooLarge, check_size, encode, status_payload,
                                utc_timestamp)
from edge.mqtt.policy import PublishGate, RateLimiter
from edge.mqtt.topics import Topics, check_aws_topic
from edge.redact import redact_all

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.01  # longest an enqueued message waits before the drain thread looks again
TAKEOVER_WINDOW_S = 1.0  # a connection closed this soon after it was made ...
TAKEOVER_LOSSES = 3  # ... this many times in a row: another client has our client id
TAKEOVER_CLEAR_S = 30.0  # the conflict is over once a connection held this long
POISON_STRIKES = 3  # a message in flight when the broker closed the connection this many times in a row is dead-lettered


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
        return cls(qos=config.qos, inflight=config.inflight, max_payload_bytes=config.payload_limit,
                   max_publishes_per_s=config.publish_rate_limit, reconnect_max_s=config.reconnect_max_s,
                   sync_interval_s=config.outbox.sync_interval_s, aws_iot=config.aws_iot)


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

    def __init__(self, store: OutboxStore, opener: Opener, topics: Topics,
                 settings: PublisherSettings = PublisherSettings(), gate: Optional[PublishGate] = None):
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
        self._strikes: dict[int, int] = {}  # outbox id -> connections lost in a row while it was alone in flight
        self._connected_at = 0.0
        # in a row, closed within TAKEOVER_WINDOW_S: the oldest id in flight (None: the last loss dead-lettered one)
        self._quick_losses: Optional[list[Optional[int]]] = []
        self._suspect: Optional[int] = None  # the oldest outbox id in flight when the last connection was lost
        self._conflict: Optional[str] = None  # the client id conflict, while it lasts
        self.instance = uuid.uuid4().hex[:12]  # per start: tells two writers with one device id apart
        self._careful_until = 0  # send one message at a time up to this outbox id (after a loss with some in flight)
        self.dead_letters_at_start = self.store.dead_letters()
        self.dead_letters_this_run = 0  # set by stop()
        self._dead_logged = 0
        self._last_sync = time.monotonic()

    @classmethod
    def from_config(cls, config: MqttConfig, device_id: str, state_dir: Path) -> "Publisher":
        topics = Topics(config.topic_prefix, device_id, deeplens=config.deeplens_topic)
        will = encode({"schema": STATUS, "device": device_id, "state": "offline"})
        opener = ClientOpener(config, config.effective_client_id(device_id), topics.status, will)
        outbox = config.outbox
        store = OutboxStore(outbox.path or Path(state_dir) / "outbox.sqlite", outbox.max_messages, outbox.durability)
        return cls(store, opener, topics, PublisherSettings.from_config(config),
                   PublishGate(config.publish_policy, config.interval_s))

    # -- what the runner calls ------------------------------------------------------------

    def publish_inference(self, source_id: str, payload: dict[str, Any]) -> Optional[int]:
        """Enqueue one inference result if the publish policy wants it; returns its `seq` (None if skipped).

        `seq` is taken from the outbox in the same transaction as the message, so it is
        contiguous per source across restarts. A payload over max_payload_bytes goes to the dead-letter
        table without a seq (so it leaves no gap) and None is returned.
        """
        if not self.gate.should_publish(source_id, payload.get("counts") or {}):
            return None
        targets = self.topics.inference_targets(source_id)

        def build(seq: int) -> list[Message]:
            body = encode({**payload, "seq": seq, "instance": self.instance})
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
        self.enqueue(self.topics.deployment, body)

    def publish_status(self, status: dict[str, Any]) -> None:
        """Set the retained status; sent now if connected, and again after every reconnect.
        URL credentials in it are redacted (edge.redact): every subscriber of the status topic reads it."""
        self._status = redact_all(dict(status))
        self._status_due.set()

    def enqueue(self, topic: str, payload: Union[dict, list, str, bytes], qos: Optional[int] = None,
                retain: bool = False) -> None:
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
        if self._conflict and self._connected and time.monotonic() - self._connected_at >= TAKEOVER_CLEAR_S:
            self._clear_conflict(time.monotonic() - self._connected_at)
        return PublisherStats(connected=self._connected, outbox_depth=self.store.depth(),
                              dropped=self.store.dropped(), sent=self._sent,
                              reconnects=max(0, self._connections - 1), last_error=self._last_error,
                              dead_letters=self.store.dead_letters(), client_id_conflict=self._conflict)

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
            if self._thread.is_alive():
                log.error("MQTT publisher thread did not stop; outbox left open")
                self.undelivered = self.store.depth()
                self.dead_letters_this_run = self.store.dead_letters() - self.dead_letters_at_start
                return
        self.undelivered = self.store.depth()
        self.dead_letters_this_run = self.store.dead_letters() - self.dead_letters_at_start
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
                        self._after_loss(time.monotonic() - self._connected_at, self._suspect)
            except Exception as exc:  # a broken store or paho bug must not end publishing for good
                log.exception("MQTT publisher error")
                self._note_error(f"publisher error: {exc}")
            if not self._stopping.is_set():
                self._sleep(backoff.next_delay())

    def _after_loss(self, lived_s: float, suspect: Optional[int]) -> None:
        """Two clients with one client id: the broker closes one whenever the other connects (MQTT 3.1.1
        gives no reason). A connection closed within TAKEOVER_WINDOW_S, TAKEOVER_LOSSES times in a row,
        names the conflict, unless the last two losses had the same oldest message in flight: no progress
        between them is a message the broker refuses (`_strike`), not another client taking over."""
        if lived_s >= TAKEOVER_WINDOW_S:
            self._quick_losses = []
            if lived_s >= TAKEOVER_CLEAR_S:
                self._clear_conflict(lived_s)
            return
        if self._quick_losses is None:  # this loss dead-lettered the message it was on: start counting again
            self._quick_losses = []
            return
        self._quick_losses = (self._quick_losses + [suspect])[-TAKEOVER_LOSSES:]
        recent = self._quick_losses
        stuck = len(recent) >= 2 and recent[-1] is not None and recent[-1] == recent[-2]
        if len(recent) >= TAKEOVER_LOSSES and not stuck and not self._conflict:
            self._conflict = (f"client id {self._opener_client_id()!r} is in use by another client: the broker closed "
                              f"this connection within {TAKEOVER_WINDOW_S:g} s of connecting {TAKEOVER_LOSSES} "
                              "times in a row (two runners with one device_id or client_id?)")
            log.error("MQTT: %s", self._conflict)

    def _clear_conflict(self, held_s: float) -> None:
        if self._conflict:
            log.warning("MQTT: a connection held %.0f s; the client id conflict seems over", held_s)
        self._conflict = None

    def _opener_client_id(self) -> str:
        return getattr(self._opener, "client_id", "?")

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
        self._connected_at = time.monotonic()
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
            self._suspect = min((row.id for row in inflight.values()), default=None)
            if inflight and not self._stopping.is_set():
                # Which one did the broker refuse? Send what was in flight one at a time from now on
                # (careful mode) until past it; a loss with one message alone in flight (and no status
                # publish unacknowledged) names the message.
                if len(inflight) == 1 and not control:
                    self._strike(next(iter(inflight.values())))
                self._careful_until = max(self._careful_until, max(row.id for row in inflight.values()))

    def _strike(self, row: StoredMessage) -> None:
        """The connection was lost with `row` alone in flight: after POISON_STRIKES such losses in a row
        (no acknowledgement in between) the broker is refusing it; dead-letter it."""
        strikes = self._strikes.get(row.id, 0) + 1
        self._strikes = {row.id: strikes}  # in a row: another message's loss starts the count again
        if strikes >= POISON_STRIKES:
            self._strikes = {}
            self._quick_losses = None  # those losses were this message's, not another client's
            self._dead_letter(row, f"the broker closed the connection {strikes} times in a row while it was in "
                                   f"flight (over the broker's packet size limit, or refused by its ACL?)")

    def _dead_letter(self, message: Message | StoredMessage, reason: str) -> None:
        self.store.dead_letter(message, reason)
        self._dead_logged += 1
        if self._dead_logged <= 10 or self._dead_logged % 100 == 0:  # a source that is always too big: not every frame
            log.error("MQTT: dead-lettered a %d-byte message for %r (%d this run): %s", len(message.payload),
                      message.topic, self._dead_logged, reason)

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
            careful = cursor < self._careful_until or any(r.id <= self._careful_until for r in inflight.values())
            window = 1 if careful else self.settings.inflight
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
                if self._strikes and not self._strikes.keys() - set(acked):
                    self._strikes = {}
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

    def _status_payload(self, offline: bool = False) -> dict[str, Any]:
        stats = self.stats()
        outbox = {"depth": stats.outbox_depth, "dropped": stats.dropped, "sent": stats.sent,
                  "dead_letters": stats.dead_letters}
        status = {**self._status, "instance": self.instance}
        if self._conflict:
            status.update(state="degraded", client_id_conflict=self._conflict, last_error=self._conflict)
        return status_payload(self.topics.device, status, outbox, offline)

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

