"""The publisher against a real Mosquitto: order, contiguous seq, broker outages, the bound, status."""

import threading
import time

import jsonschema
import paho.mqtt.client as paho
import pytest

from edge.messages import InferenceResult
from edge.mqtt import Publisher, load_schema
from tests.edge.mqtt.helpers import config, first_occurrences, inference, inference_dict
from tests.edge.runner_setup import wait_until

DEVICE, SOURCE = "cam-01", "door"
INFERENCE_TOPIC = f"lensops/{DEVICE}/{SOURCE}/inference"
STATUS_TOPIC = f"lensops/{DEVICE}/status"


def seqs(collector) -> list[int]:
    return [m.json()["seq"] for m in collector.on(INFERENCE_TOPIC)]


def test_messages_arrive_in_order_with_contiguous_seq_and_valid_payloads(mosquitto, collectors, tmp_path):
    # given a subscriber and a publisher
    collector = collectors(mosquitto.port, ["lensops/#"])
    publisher = Publisher.from_config(config(mosquitto.url), DEVICE, tmp_path).start()
    # when 500 results are published
    returned = [publisher.publish_inference(SOURCE, inference()) for _ in range(500)]
    # then all arrive, in order, numbered 0..499, each valid against the shipped schema
    assert publisher.wait_until_drained(20), publisher.stats()
    assert collector.wait_for(lambda ms: len(seqs(collector)) >= 500, 10), len(seqs(collector))
    assert returned == list(range(500))
    assert seqs(collector) == list(range(500)), "in order, contiguous, no duplicates on a healthy link"
    schema = load_schema("inference")
    for received in collector.on(INFERENCE_TOPIC)[:20]:
        jsonschema.validate(received.json(), schema)
    stats = publisher.stats()
    assert (stats.connected, stats.outbox_depth, stats.dropped, stats.sent) == (True, 0, 0, 500), stats
    publisher.stop()


def test_status_is_retained_online_then_offline_on_stop(mosquitto, collectors, tmp_path):
    publisher = Publisher.from_config(config(mosquitto.url), DEVICE, tmp_path).start()
    publisher.publish_status({"state": "online", "sources": {SOURCE: {"state": "ok", "fps": 25.0}}})
    late = collectors(mosquitto.port, [STATUS_TOPIC])
    assert late.wait_for(lambda ms: any(m.json().get("sources") for m in ms), 10), late.messages
    publisher.stop()
    assert late.wait_for(lambda ms: ms[-1].json()["state"] == "offline", 10)
    retained = collectors(mosquitto.port, [STATUS_TOPIC])
    assert retained.wait_for(lambda ms: ms, 5)
    status = retained.messages[0]
    assert status.retain and status.json()["state"] == "offline", status
    jsonschema.validate(status.json(), load_schema("status"))


def test_broker_outage_loses_nothing_keeps_order_and_drains_the_backlog(make_mosquitto, collectors, tmp_path):
    # given a broker that keeps the subscriber's session over its restart (so the *subscriber* misses nothing)
    broker = make_mosquitto(persistence=True)
    collector = collectors(broker.port, [INFERENCE_TOPIC], client_id="watcher", persistent=True)
    publisher = Publisher.from_config(config(broker.url), DEVICE, tmp_path / "state").start()
    total, produced = 600, []

    def produce():  # ~150 results/s for 4 s, as a camera would
        for _ in range(total):
            produced.append(publisher.publish_inference(SOURCE, inference()))
            time.sleep(1 / 150)

    producer = threading.Thread(target=produce)
    producer.start()
    # when the broker goes away for 3 s mid-stream (SIGTERM: Mosquitto then saves the subscriber's session;
    # to the publisher it is the same dropped connection as a kill)
    time.sleep(0.7)
    broker.stop()
    time.sleep(0.2)
    assert not publisher.stats().connected
    time.sleep(2.8)
    depth_during_outage = publisher.stats().outbox_depth
    broker.start()
    producer.join()
    # then the backlog drains and every seq arrives once at least, first arrivals in order
    assert publisher.wait_until_drained(30), publisher.stats()
    got = collector.wait_for(lambda ms: len(set(seqs(collector))) >= total, 15)
    assert got, (sorted(set(range(total)) - set(seqs(collector))), broker.log.read_text()[-3000:])
    assert depth_during_outage > 100, f"the outage should have built a backlog, depth {depth_during_outage}"
    assert first_occurrences(seqs(collector)) == list(range(total)), "a gap or reordering"
    stats = publisher.stats()
    assert stats.reconnects >= 1 and stats.dropped == 0, stats
    publisher.stop()


def test_the_bound_drops_the_oldest_while_offline_and_counts_them(mosquitto, collectors, tmp_path):
    # given a broker that is down and an outbox of 20
    mosquitto.stop()
    publisher = Publisher.from_config(config(mosquitto.url, outbox={"max_messages": 20}), DEVICE, tmp_path).start()
    # when 50 results are produced
    for _ in range(50):
        publisher.publish_inference(SOURCE, inference())
    stats = publisher.stats()
    assert (stats.connected, stats.outbox_depth, stats.dropped) == (False, 20, 30), stats
    # the network thread records the refused connection when it has tried (it may not have yet)
    failed = wait_until(lambda: publisher.stats().last_error, 10)
    assert failed and "cannot reach broker" in failed, publisher.stats()
    # then once the broker is back, the newest 20 arrive in order
    mosquitto.start()
    collector = collectors(mosquitto.port, [INFERENCE_TOPIC])
    assert publisher.wait_until_drained(15), publisher.stats()
    assert collector.wait_for(lambda ms: len(ms) >= 20, 5)
    assert seqs(collector) == list(range(30, 50))
    publisher.stop()


def test_payload_that_is_not_json_is_refused_before_it_takes_a_seq(mosquitto, tmp_path):
    publisher = Publisher.from_config(config(mosquitto.url), DEVICE, tmp_path)
    latency = {"preprocess": 0.9, "inference": 1.6, "total": float("nan")}
    with pytest.raises(ValueError, match="finite number"):  # NaN is not JSON: no payload can hold it
        publisher.publish_inference(SOURCE, InferenceResult.model_validate({**inference_dict(), "latency_ms": latency}))
    assert publisher.publish_inference(SOURCE, inference()) == 0
    publisher.stop()


def test_throughput_and_enqueue_latency(mosquitto, tmp_path):
    # given a connected publisher (no subscriber in this process: it would compete for the GIL)
    publisher = Publisher.from_config(config(mosquitto.url), DEVICE, tmp_path).start()
    while not publisher.stats().connected:
        time.sleep(0.01)
    payload, total, took = inference(), 5000, []
    # when 5000 results are enqueued flat out while the publisher drains
    start = time.perf_counter()
    for _ in range(total):
        t0 = time.perf_counter()
        publisher.publish_inference(SOURCE, payload)
        took.append(time.perf_counter() - t0)
    # then all are acknowledged by the broker (QoS 1) at a useful rate, and enqueue stays cheap
    assert publisher.wait_until_drained(60), publisher.stats()
    rate = total / (time.perf_counter() - start)
    took.sort()
    p50_ms, p99_ms = took[total // 2] * 1000, took[int(total * 0.99)] * 1000
    print(f"\n{rate:.0f} messages/s acknowledged at QoS 1; enqueue p50 {p50_ms:.3f} ms, p99 {p99_ms:.3f} ms")
    assert publisher.stats().sent == total
    # targets are >= 2000/s and p99 well under 1 ms; the floors here leave room for a shared CI machine
    assert rate > 500 and p50_ms < 1.0, (rate, p50_ms, p99_ms)
    publisher.stop()


def test_deployment_events_are_published_in_the_shipped_shape(mosquitto, collectors, tmp_path):
    collector = collectors(mosquitto.port, [f"lensops/{DEVICE}/deployment"])
    publisher = Publisher.from_config(config(mosquitto.url), DEVICE, tmp_path).start()
    publisher.publish_deployment(
        {
            "state": "rejected",
            "reason": "sha256 mismatch in variants/onnx-fp32/model.onnx",
            "model": "shapes-detector",
            "version": "8",
        }
    )
    assert collector.wait_for(lambda ms: ms, 10)
    event = collector.messages[0].json()
    jsonschema.validate(event, load_schema("deployment"))
    assert (event["device"], event["state"]) == (DEVICE, "rejected")
    publisher.stop()


def promote(port: int, topic: str, payload: bytes) -> None:
    """What `promote` does: publish the fleet notice, retained."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_subscription_gets_the_retained_fleet_notice_and_is_renewed_after_a_reconnect(mosquitto, tmp_path):
    # given a retained fleet deployment notice on the broker
    topic = "lensops/fleets/demo/deployment"
    promote(mosquitto.port, topic, b'{"version": "7"}')
    received, arrived = [], threading.Event()

    def on_notice(got_topic, payload):
        received.append((got_topic, payload))
        arrived.set()

    # when the device subscribes, then the broker restarts and a new notice is promoted
    publisher = Publisher.from_config(config(mosquitto.url), DEVICE, tmp_path)
    publisher.subscribe(publisher.topics.fleet_deployment("demo"), on_notice)
    publisher.start()
    assert arrived.wait(10), "the retained notice arrives after connecting"
    arrived.clear()
    mosquitto.stop()
    mosquitto.start()
    promote(mosquitto.port, topic, b'{"version": "8"}')
    # then both notices reach the handler (the subscription was made again on the new connection)
    assert arrived.wait(10), received
    assert received == [(topic, b'{"version": "7"}'), (topic, b'{"version": "8"}')]
    publisher.stop()
