"""`lensops broker` (edge.broker, amqtt) in its own process: the publisher and a subscriber talk through it."""

import signal
import socket
import subprocess
import sys

from edge.mqtt import Publisher
from tests.edge.conftest import free_port, wait_for_port
from tests.edge.mqtt.helpers import config, inference


def test_embedded_broker_carries_the_publisher_and_stops_on_sigterm(collectors, tmp_path):
    # given the embedded broker on a free port
    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, "-m", "edge.broker", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, 20)
        collector = collectors(port, ["lensops/#"])
        # when the publisher sends 50 results and a status through it
        publisher = Publisher.from_config(config(f"mqtt://127.0.0.1:{port}"), "cam-01", tmp_path).start()
        publisher.publish_status({"state": "online"})
        for _ in range(50):
            publisher.publish_inference("door", inference())
        # then the subscriber gets them in order
        assert publisher.wait_until_drained(20), publisher.stats()
        topic = "lensops/cam-01/door/inference"
        assert collector.wait_for(lambda ms: len([m for m in ms if m.topic == topic]) >= 50, 10)
        assert [m.json()["seq"] for m in collector.on(topic)] == list(range(50))
        publisher.stop()
    finally:
        # and SIGTERM stops the broker cleanly
        broker.send_signal(signal.SIGTERM)
        out, err = broker.communicate(timeout=20)
    assert broker.returncode == 0, err
    assert f"listening on mqtt://127.0.0.1:{port}" in out


def test_a_port_in_use_is_a_clear_error_and_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "edge.broker", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr, result.stderr
