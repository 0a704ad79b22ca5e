"""AWS IoT Core mode against a Mosquitto that, like IoT Core, requires mutual TLS."""

import sqlite3
import time

import pytest

from edge.mqtt import Publisher
from tests.edge.conftest import make_tls_files
from tests.edge.mqtt.helpers import config, inference

DEVICE = "cam-01"


@pytest.fixture
def tls(tmp_path):
    return make_tls_files(tmp_path / "tls", client_name=DEVICE)


def aws_config(url, tls, **overrides):
    return config(
        url,
        aws_iot=True,
        tls={"ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key)},
        **overrides,
    )


def test_payload_over_128_kb_goes_to_the_dead_letter_table_named_in_the_log_and_takes_no_seq(tls, tmp_path, caplog):
    publisher = Publisher.from_config(aws_config("mqtts://localhost:8883", tls), DEVICE, tmp_path)
    huge = inference(counts={"circle": 3000})  # ~180 KB of boxes
    assert publisher.publish_inference("door", huge) is None
    publisher.enqueue("lensops/cam-01/deployment", b"x" * (128 * 1024 + 1))
    assert publisher.publish_inference("door", inference()) == 0, "the refused payload took no seq"
    stats = publisher.stats()
    assert (stats.outbox_depth, stats.dead_letters) == (1, 2), stats
    logged = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(logged) == 2 and "lensops/cam-01/door/inference" in logged[0], logged
    assert "over the 131072-byte limit" in logged[0], logged
    publisher.stop()
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        rows = db.execute("SELECT topic, length(payload), reason FROM dead_letters ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["lensops/cam-01/door/inference", "lensops/cam-01/deployment"], rows
    assert rows[1][1] == 128 * 1024 + 1 and "over the 131072-byte limit" in rows[1][2], rows


def test_mutual_tls_thing_name_rate_limit_and_deeplens_topic(make_mosquitto, collectors, tls, tmp_path):
    # given a broker that requires a client certificate, and a publisher in AWS IoT mode
    broker = make_mosquitto(tls=tls)
    collector = collectors(broker.port, ["lensops/#", f"$aws/things/{DEVICE}/infer"], tls=tls)
    publisher = Publisher.from_config(aws_config(broker.url, tls, deeplens_topic=True), DEVICE, tmp_path).start()
    # when 130 results are enqueued at once (each goes to two topics: 260 publishes)
    for _ in range(130):
        publisher.publish_inference("door", inference())
    # then they arrive on both topics, no faster than 100 publishes per second
    assert publisher.wait_until_drained(15), publisher.stats()
    assert collector.wait_for(lambda ms: len([m for m in ms if "inference" in m.topic or "infer" in m.topic]) >= 260)
    lensops = [m for m in collector.messages if m.topic == f"lensops/{DEVICE}/door/inference"]
    deeplens = [m for m in collector.messages if m.topic == f"$aws/things/{DEVICE}/infer"]
    assert [m.json()["seq"] for m in lensops] == [m.json()["seq"] for m in deeplens] == list(range(130))
    span = max(m.at for m in lensops + deeplens) - min(m.at for m in lensops + deeplens)
    assert span >= 1.8, f"260 publishes (+1 status) at <= 100/s take over 2 s, took {span:.2f} s"
    # and the client id is the thing name
    assert f" as {DEVICE} " in broker.log.read_text(), "mosquitto logs the client id of each connection"
    publisher.stop()


def test_a_broker_requiring_mutual_tls_refuses_a_client_without_certificate(make_mosquitto, tls, tmp_path):
    broker = make_mosquitto(tls=tls)
    server_only = config(broker.url, tls={"ca_file": str(tls.ca)})
    publisher = Publisher.from_config(server_only, DEVICE, tmp_path).start()
    publisher.publish_inference("door", inference())
    deadline = time.monotonic() + 5
    while publisher.stats().last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = publisher.stats()
    assert not stats.connected and stats.last_error and stats.outbox_depth == 1, stats
    publisher.stop(drain_timeout_s=0)
