"""One message the broker refuses never blocks the others: it goes to the outbox's dead-letter table,
checked at enqueue against max_payload_bytes, or after the broker closed the connection on it
POISON_STRIKES times in a row. Against a real Mosquitto with `max_packet_size 4096`."""

from __future__ import annotations

import logging
import re

import pytest

from edge.mqtt import Publisher, encode
from edge.mqtt.losses import POISON_STRIKES
from tests.edge.mqtt.helpers import config, inference

DEVICE = "cam-01"
SMALL, BIG = 30, 10
BIG_PAYLOAD = encode(inference(source="crowd", counts={"circle": 200}).numbered(1))  # seq 1..9: one digit


@pytest.fixture
def strict_broker(make_mosquitto):
    """A Mosquitto that closes the connection of a client sending a packet over 4096 bytes."""
    broker = make_mosquitto()
    broker.stop()
    broker.config.write_text(broker.config.read_text() + "max_packet_size 4096\n")
    return broker.start()


def publish_both(publisher: Publisher) -> None:
    """The issue's two sources: `shelf` publishes ~330 B messages, `crowd` ~12 KB ones (200 boxes)."""
    for i in range(SMALL):
        publisher.publish_inference("shelf", inference(source="shelf"))
        if i % 3 == 0:
            publisher.publish_inference("crowd", inference(source="crowd", counts={"circle": 200}))


@pytest.mark.parametrize("limit", [None, 4000], ids=["found by disconnects", "checked at enqueue"])
def test_a_message_the_broker_refuses_is_dead_lettered_and_blocks_nothing(
    strict_broker, collectors, tmp_path, caplog, limit
):
    # given a broker that refuses packets over 4 KB, and a device with (or without) that limit configured
    caplog.set_level(logging.ERROR, logger="edge.mqtt.publisher")
    collector = collectors(strict_broker.port, ["lensops/#"])
    overrides = {"reconnect_max_s": 0.3} | ({"max_payload_bytes": limit} if limit else {})
    publisher = Publisher.from_config(config(strict_broker.url, **overrides), DEVICE, tmp_path).start()
    try:
        # when the small and the big results are enqueued, interleaved
        publish_both(publisher)
        # then every small one is delivered, none stays blocked, and every big one is dead-lettered
        assert collector.wait_for(
            lambda ms: len({m.json()["seq"] for m in ms if m.topic.endswith("shelf/inference")}) == SMALL, 60
        ), publisher.stats()
        assert publisher.wait_until_drained(10), publisher.stats()
        stats = publisher.stats()
    finally:
        publisher.stop()
    assert stats.dead_letters == BIG and stats.outbox_depth == 0, stats
    assert stats.client_id_conflict is None, "a poison message's disconnects are not another client's"
    assert not [m for m in collector.messages if m.topic.endswith("crowd/inference")], "the broker took a big one?"
    logged = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(logged) == BIG and all("lensops/cam-01/crowd/inference" in m for m in logged), logged
    sizes = [int(re.search(r"dead-lettered a (\d+)-byte message", m).group(1)) for m in logged]
    assert all(abs(n - len(BIG_PAYLOAD)) <= 40 for n in sizes), (sizes, len(BIG_PAYLOAD))  # seq, instance
    if limit:  # checked at enqueue: the connection was never dropped
        assert stats.reconnects == 0 and "over the 4000-byte limit" in logged[0], (stats, logged[0])
    else:
        assert f"closed the connection {POISON_STRIKES} times in a row" in logged[0], logged[0]
    # and the status says so
    status = [m.json() for m in collector.messages if m.topic == f"lensops/{DEVICE}/status"]
    assert status and status[-1]["outbox"]["dead_letters"] == BIG, status[-1:]
