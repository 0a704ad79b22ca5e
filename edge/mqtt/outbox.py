"""A disk-backed FIFO of outgoing MQTT messages that survives `kill -9` and reboot.

SQLite in WAL mode. Every `append` is its own committed transaction before it returns, so
an enqueue the caller saw return is never lost when the process dies: with the default
`process` durability (synchronous=NORMAL) the commit is in the OS page cache, which a killed
process cannot take with it, and `checkpoint()` (called every ~second by the publisher)
fsyncs it, bounding what a power cut can lose; with `power` durability every commit is
fsynced. Messages leave only through `remove()` once the broker acknowledged them, as the
oldest when the bound is reached (counted, persistently), or into the `dead_letters` table
(`dead_letter()`: too large for the broker, or a poison message the broker disconnects on;
counted, kept for inspection with their reason). Per-key sequence numbers live in
the same file and are advanced in the same transaction as the messages they number.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from common.errors import UserError
from edge.mqtt.config import Durability

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, so a send cursor stays valid
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sequences (key TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (  -- messages that will never be sent, kept for inspection
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    reason TEXT NOT NULL,
    ts REAL NOT NULL
);
"""


DEAD_LETTERS_KEPT = 1000  # newest dead letters kept for inspection; older ones are only counted


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class StoredMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class OutboxBusy(UserError):
    """Another process (or another store in this one) has the outbox file open."""


class OutboxStore:
    """Bounded, ordered, persistent outbox. Thread-safe; one owner of the file at a time."""

    def __init__(self, path: Path, max_messages: int = 100_000, durability: Durability = Durability.PROCESS):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_messages = max_messages
        # Two writers would interleave sequence numbers; the kernel drops this lock when the owner dies.
        self._owner = open(f"{self.path}.lock", "a")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.close()
            raise OutboxBusy(f"{self.path}: the outbox is in use by another runner") from None
        self._lock = threading.Lock()
        self._db = self._open(Durability(durability))
        self._db.executescript(_SCHEMA)
        self._depth = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        self._dropped = self._counter("dropped")
        self._dead = self._counter("dead_letters")
        self._syncer: Optional[sqlite3.Connection] = None

    def _open(self, durability: Durability) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=" + ("FULL" if durability is Durability.POWER else "NORMAL"))
        # Checkpoints run from checkpoint() on a second connection, never inside an enqueue.
        db.execute("PRAGMA wal_autocheckpoint=0")
        return db

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def append(self, message: Message) -> None:
        """Commit one message to the end of the outbox (drops the oldest beyond the bound)."""
        with self._lock:
            self._write(lambda: self._insert([message]))

    def append_numbered(self, key: str, build: Callable[[int], Sequence[Message]]) -> int:
        """Take the next sequence number of `key`, build the messages that carry it and commit both at once.

        If `build` raises, nothing is written and the number is not used. Numbers start at 0.
        """
        with self._lock:

            def numbered() -> int:
                row = self._db.execute("SELECT last FROM sequences WHERE key = ?", (key,)).fetchone()
                seq = 0 if row is None else row[0] + 1
                self._insert(build(seq))
                self._db.execute(
                    "INSERT INTO sequences(key, last) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET last = excluded.last",
                    (key, seq),
                )
                return seq

            return self._write(numbered)

    def last_seq(self, key: str) -> Optional[int]:
        """The last sequence number taken for `key`, None before the first."""
        with self._lock:
            row = self._db.execute("SELECT last FROM sequences WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _write(self, body: Callable[[], object]):
        depth, dropped = self._depth, self._dropped
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = body()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._depth, self._dropped = depth, dropped
            raise
        return result

    def _insert(self, messages: Sequence[Message]) -> None:
        self._db.executemany(
            "INSERT INTO messages(topic, payload, qos, retain) VALUES(?, ?, ?, ?)",
            [(m.topic, bytes(m.payload), int(m.qos), int(m.retain)) for m in messages],
        )
        self._depth += len(messages)
        excess = self._depth - self.max_messages
        if excess > 0:
            self._db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)", (excess,)
            )
            self._depth -= excess
            self._dropped += excess
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES('dropped', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (self._dropped,),
            )

    def pending(self, after_id: int = 0, limit: int = 100) -> list[StoredMessage]:
        """Up to `limit` messages with id > `after_id`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [StoredMessage(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in rows]

    def remove(self, ids: Iterable[int]) -> int:
        """Delete acknowledged messages; returns how many were still there."""
        ids = [(i,) for i in ids]
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._db.executemany("DELETE FROM messages WHERE id = ?", ids).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth -= removed
        return removed

    def dead_letter(self, message: Message | StoredMessage, reason: str) -> None:
        """Put a message in the dead-letter table (and take it out of the queue if it is there), at once.
        The table keeps the newest DEAD_LETTERS_KEPT; the count of all of them is kept in `counters`."""
        with self._lock:

            def move() -> None:
                self._db.execute(
                    "INSERT INTO dead_letters(topic, payload, qos, retain, reason, ts) "
                    "VALUES(?, ?, ?, ?, ?, strftime('%s', 'now'))",
                    (message.topic, bytes(message.payload), int(message.qos), int(message.retain), reason),
                )
                self._db.execute(
                    "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?", (DEAD_LETTERS_KEPT,)
                )
                if isinstance(message, StoredMessage):
                    gone = self._db.execute("DELETE FROM messages WHERE id = ?", (message.id,)).rowcount
                    self._depth -= gone
                self._db.execute(
                    "INSERT INTO counters(name, value) VALUES('dead_letters', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    (self._dead + 1,),
                )

            self._write(move)
            self._dead += 1

    def dead_letters(self) -> int:
        """Messages dead-lettered since the outbox file was created (the table keeps the newest DEAD_LETTERS_KEPT)."""
        return self._dead

    def depth(self) -> int:
        return self._depth

    def dropped(self) -> int:
        """Messages dropped by the bound since the outbox file was created."""
        return self._dropped

    def checkpoint(self) -> None:
        """Fsync the write-ahead log and fold it into the database (bounds what a power cut can lose)."""
        if self._syncer is None:
            self._syncer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._syncer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        with self._lock:
            if self._owner.closed:
                return
            if self._syncer is not None:
                self._syncer.close()
                self._syncer = None
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._owner.close()

    def __enter__(self) -> "OutboxStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
