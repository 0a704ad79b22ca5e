"""The disk outbox: ordered, bounded (drop-oldest, counted), numbered, and still there after reopening."""

import time

import pytest

from edge.mqtt import Durability, Message, OutboxBusy, OutboxStore


def message(i: int) -> Message:
    return Message("lensops/cam-01/door/inference", f"m{i}".encode())


def test_messages_come_out_in_order_and_leave_only_when_removed(tmp_path):
    with OutboxStore(tmp_path / "outbox.sqlite") as store:
        for i in range(5):
            store.append(message(i))
        first = store.pending(limit=3)
        assert [m.payload for m in first] == [b"m0", b"m1", b"m2"]
        assert [m.payload for m in store.pending(after_id=first[-1].id)] == [b"m3", b"m4"]
        assert store.remove([first[0].id, first[1].id]) == 2
        assert store.depth() == 3
        assert [m.payload for m in store.pending()] == [b"m2", b"m3", b"m4"], "unacknowledged stay"


def test_bound_drops_the_oldest_and_counts_them_persistently(tmp_path):
    path = tmp_path / "outbox.sqlite"
    with OutboxStore(path, max_messages=10) as store:
        for i in range(25):
            store.append(message(i))
        assert (store.depth(), store.dropped()) == (10, 15)
    with OutboxStore(path, max_messages=10) as store:
        assert [m.payload for m in store.pending(limit=100)] == [f"m{i}".encode() for i in range(15, 25)]
        assert store.dropped() == 15, "the drop count survives a restart"


def test_sequence_numbers_are_contiguous_per_key_across_reopen(tmp_path):
    path = tmp_path / "outbox.sqlite"
    with OutboxStore(path) as store:
        seqs = [store.append_numbered("door", lambda s: [message(s)]) for _ in range(3)]
        assert store.append_numbered("yard", lambda s: [message(s)]) == 0, "keys are independent"
    with OutboxStore(path) as store:
        assert store.last_seq("door") == 2
        seqs.append(store.append_numbered("door", lambda s: [message(s)]))
    assert seqs == [0, 1, 2, 3]


def test_a_failing_build_writes_nothing_and_takes_no_number(tmp_path):
    with OutboxStore(tmp_path / "outbox.sqlite", max_messages=2) as store:
        store.append_numbered("door", lambda s: [message(s)])
        store.append_numbered("door", lambda s: [message(s)])

        def too_big(seq):
            raise ValueError(f"message {seq} is too big")

        with pytest.raises(ValueError):
            store.append_numbered("door", too_big)
        assert (store.depth(), store.dropped(), store.last_seq("door")) == (2, 0, 1)
        assert store.append_numbered("door", lambda s: [message(s)]) == 2


def test_one_owner_at_a_time(tmp_path):
    with OutboxStore(tmp_path / "outbox.sqlite"):
        with pytest.raises(OutboxBusy, match="in use by another runner"):
            OutboxStore(tmp_path / "outbox.sqlite")


@pytest.mark.parametrize("durability", list(Durability))
def test_enqueue_is_fast(tmp_path, durability):
    with OutboxStore(tmp_path / "outbox.sqlite", durability=durability) as store:
        payload = b"x" * 400
        took = []
        for _ in range(500):
            start = time.perf_counter()
            store.append(Message("t", payload))
            took.append(time.perf_counter() - start)
        store.checkpoint()
    took.sort()
    p50_ms, p99_ms = took[len(took) // 2] * 1000, took[int(len(took) * 0.99)] * 1000
    print(f"outbox {durability.value}: enqueue p50 {p50_ms:.3f} ms, p99 {p99_ms:.3f} ms")
    if durability is Durability.PROCESS:  # `power` costs an fsync each: as fast as the disk
        # the target is p99 well under 1 ms; the median is asserted because a shared CI box preempts us
        assert p50_ms < 0.5, f"enqueue p50 {p50_ms:.3f} ms, p99 {p99_ms:.3f} ms"
