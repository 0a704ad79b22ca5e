"""What the publisher learns from lost connections: which message the broker refuses (a poison message)
and whether another client has our client id (a takeover). State only, no I/O: the publisher reports
connects, acknowledgements and losses, and acts on what this returns.

Poison: after a loss with messages in flight the publisher sends one message at a time ("careful
mode") until past them, so a loss with one message alone in flight (and no status publish
unacknowledged) names it; POISON_STRIKES such losses in a row (no acknowledgement in between) and
the publisher dead-letters it.

Takeover: two clients with one client id make the broker close one whenever the other connects (MQTT
3.1.1 gives no reason). A connection closed within TAKEOVER_WINDOW_S, TAKEOVER_LOSSES times in a
row, names the conflict, unless the last two losses had the same oldest message in flight: no
progress between them is a refused message, not another client. It lasts until a connection holds
TAKEOVER_CLEAR_S.
"""

from __future__ import annotations

import logging
from typing import Iterable, Optional

from edge.mqtt.outbox import StoredMessage

log = logging.getLogger("edge.mqtt.publisher")
TAKEOVER_WINDOW_S = 1.0  # a connection closed this soon after it was made ...
TAKEOVER_LOSSES = 3  # ... this many times in a row: another client has our client id
TAKEOVER_CLEAR_S = 30.0  # the conflict is over once a connection held this long
POISON_STRIKES = (
    3  # a message alone in flight when the broker closed the connection this many times in a row is dead-lettered
)


class LossTracker:
    def __init__(self, client_id: str):
        self.client_id = client_id
        self.connected_at = 0.0
        self.conflict: Optional[str] = None  # the client id conflict, while it lasts
        self._strikes: dict[int, int] = {}  # outbox id -> losses in a row while it was alone in flight
        self._careful_until = 0  # send one message at a time up to this outbox id
        # in a row, closed within TAKEOVER_WINDOW_S: the oldest id in flight (None: the last loss dead-lettered one)
        self._quick_losses: Optional[list[Optional[int]]] = []
        self._suspect: Optional[int] = None  # the oldest outbox id in flight when the last connection was lost

    def connected(self, now: float) -> None:
        self.connected_at = now

    def careful(self, cursor: int, inflight: Iterable[StoredMessage]) -> bool:
        """Whether to keep one message in flight: until past (and acknowledged) what was in flight at a loss."""
        return cursor < self._careful_until or any(row.id <= self._careful_until for row in inflight)

    def acked(self, ids: list[int]) -> None:
        if self._strikes and not self._strikes.keys() - set(ids):
            self._strikes = {}

    def lost(self, inflight: list[StoredMessage], control_pending: bool) -> Optional[StoredMessage]:
        """The connection was lost with `inflight` unacknowledged; the message to dead-letter, if any."""
        self._suspect = min((row.id for row in inflight), default=None)
        if not inflight:
            return None
        self._careful_until = max(self._careful_until, max(row.id for row in inflight))
        if len(inflight) != 1 or control_pending:
            return None
        row = inflight[0]
        strikes = self._strikes.get(row.id, 0) + 1
        self._strikes = {row.id: strikes}  # in a row: another message's loss starts the count again
        if strikes < POISON_STRIKES:
            return None
        self._strikes = {}
        self._quick_losses = None  # those losses were this message's, not another client's
        return row

    def after_loss(self, lived_s: float) -> None:
        """Count a loss `lived_s` after connecting towards a client id conflict (see the module doc)."""
        if lived_s >= TAKEOVER_WINDOW_S:
            self._quick_losses = []
            if lived_s >= TAKEOVER_CLEAR_S:
                self._clear(lived_s)
            return
        if self._quick_losses is None:  # this loss dead-lettered the message it was on: start counting again
            self._quick_losses = []
            return
        self._quick_losses = (self._quick_losses + [self._suspect])[-TAKEOVER_LOSSES:]
        recent = self._quick_losses
        stuck = len(recent) >= 2 and recent[-1] is not None and recent[-1] == recent[-2]
        if len(recent) >= TAKEOVER_LOSSES and not stuck and not self.conflict:
            self.conflict = (
                f"client id {self.client_id!r} is in use by another client: the broker closed "
                f"this connection within {TAKEOVER_WINDOW_S:g} s of connecting {TAKEOVER_LOSSES} "
                "times in a row (two runners with one device_id or client_id?)"
            )
            log.error("MQTT: %s", self.conflict)

    def current_conflict(self, connected: bool, now: float) -> Optional[str]:
        """The conflict, cleared once the current connection has held TAKEOVER_CLEAR_S."""
        if self.conflict and connected and now - self.connected_at >= TAKEOVER_CLEAR_S:
            self._clear(now - self.connected_at)
        return self.conflict

    def _clear(self, held_s: float) -> None:
        if self.conflict:
            log.warning("MQTT: a connection held %.0f s; the client id conflict seems over", held_s)
        self.conflict = None
