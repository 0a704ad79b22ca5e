"""A publisher process killed with SIGKILL: nothing it accepted is lost, seq continues, the will says offline."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.edge.mqtt.helpers import first_occurrences

CHILD = Path(__file__).with_name("publisher_child.py")
INFERENCE_TOPIC, STATUS_TOPIC = "lensops/cam-01/door/inference", "lensops/cam-01/status"


class Child:
    """The publisher child process; reads its stdout line by line."""

    def __init__(self, url: str, state: Path, count: int = 0, every: float = 0.0):
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                "--url",
                url,
                "--state",
                str(state),
                "--count",
                str(count),
                "--every",
                str(every),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.last_seq = None

    def read_until(self, wanted: str) -> None:
        for line in self.process.stdout:
            if line.startswith("ENQUEUED"):
                self.last_seq = int(line.split()[1])
            if line.strip() == wanted:
                return
        pytest.fail(f"publisher child exited ({self.process.wait()}) before printing {wanted!r}")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process.stdout.close()


@pytest.fixture
def children():
    made = []

    def make(*args, **kwargs) -> Child:
        made.append(Child(*args, **kwargs))
        return made[-1]

    yield make
    for child in made:
        if child.process.poll() is None:
            child.kill()


def seqs(collector) -> list[int]:
    return [m.json()["seq"] for m in collector.on(INFERENCE_TOPIC)]


def test_killed_with_a_backlog_then_restarted_delivers_everything_and_seq_continues(
    mosquitto, collectors, children, tmp_path
):
    # given a broker that is down while the runner enqueues 40 results
    mosquitto.stop()
    first = children(mosquitto.url, tmp_path / "state", count=40)
    first.read_until("ENQUEUED 39")
    # when the runner is killed with SIGKILL, the broker comes back and a new runner enqueues 10 more
    first.kill()
    mosquitto.start()
    collector = collectors(mosquitto.port, [INFERENCE_TOPIC])
    second = children(mosquitto.url, tmp_path / "state", count=10)
    second.read_until("DRAINED")
    # then all 50 arrive, in order, numbered 0..49
    assert second.last_seq == 49, "seq continues after the kill"
    assert collector.wait_for(lambda ms: len(ms) >= 50, 10), seqs(collector)
    assert seqs(collector) == list(range(50))


def test_killed_mid_stream_then_restarted_leaves_no_gap(mosquitto, collectors, children, tmp_path):
    # given a runner streaming 400 results/s to a live broker
    collector = collectors(mosquitto.port, [INFERENCE_TOPIC])
    first = children(mosquitto.url, tmp_path / "state", count=100_000, every=0.0025)
    first.read_until("ENQUEUED 300")
    # when it is killed mid-stream and restarted
    first.kill()
    killed_after = first.last_seq
    second = children(mosquitto.url, tmp_path / "state", count=20)
    second.read_until("DRAINED")
    # then every seq up to the last one arrived (resent ones repeat their seq), first arrivals in order
    last = second.last_seq
    assert last >= killed_after + 20, (killed_after, last)
    assert collector.wait_for(lambda ms: len(set(seqs(collector))) >= last + 1, 10), len(set(seqs(collector)))
    assert first_occurrences(seqs(collector)) == list(range(last + 1))


def test_last_will_offline_is_retained_when_the_process_is_killed(mosquitto, collectors, children, tmp_path):
    # given a connected runner whose retained status says online
    child = children(mosquitto.url, tmp_path / "state")
    child.read_until("CONNECTED")
    watcher = collectors(mosquitto.port, [STATUS_TOPIC])
    assert watcher.wait_for(lambda ms: ms and ms[-1].json()["state"] == "online", 10), watcher.messages
    # when its process is killed with SIGKILL (no DISCONNECT is sent)
    child.kill()
    # then the broker publishes the will, and a late subscriber gets it as the retained status
    assert watcher.wait_for(lambda ms: ms[-1].json()["state"] == "offline", 10), watcher.messages
    late = collectors(mosquitto.port, [STATUS_TOPIC])
    assert late.wait_for(lambda ms: ms, 5)
    status = late.messages[0]
    assert status.retain and status.json() == {"schema": "lensops.status/1", "device": "cam-01", "state": "offline"}
