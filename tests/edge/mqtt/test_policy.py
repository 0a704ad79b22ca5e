import pytest

from edge.mqtt import PublishGate, PublishPolicy, RateLimiter
from edge.mqtt.connection import Backoff


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_every_frame_publishes_everything():
    gate = PublishGate(PublishPolicy.EVERY_FRAME)
    assert all(gate.should_publish("door", {"person": 1}) for _ in range(5))


def test_on_change_publishes_when_counts_change_per_source():
    gate = PublishGate(PublishPolicy.ON_CHANGE)
    decisions = [
        gate.should_publish("door", counts)
        for counts in [{"person": 1}, {"person": 1}, {"person": 2}, {"person": 2, "car": 0}, {}]
    ]
    assert decisions == [True, False, True, False, True], "zero counts equal absent labels"
    assert gate.should_publish("yard", {"person": 1}), "sources are independent"


def test_on_change_with_interval_is_a_heartbeat():
    clock = Clock()
    gate = PublishGate(PublishPolicy.ON_CHANGE, interval_s=5, clock=clock)
    assert gate.should_publish("door", {}) and not gate.should_publish("door", {})
    clock.now += 5
    assert gate.should_publish("door", {}), "unchanged counts are still published every interval_s"


def test_interval_publishes_at_most_once_per_interval():
    clock = Clock()
    gate = PublishGate(PublishPolicy.INTERVAL, interval_s=1.0, clock=clock)
    published = []
    for _ in range(30):  # 3 s of 10 fps
        published.append(gate.should_publish("door", {"person": 1}))
        clock.now += 0.1
    assert sum(published) == 3, published


def test_interval_policy_without_interval_is_an_error():
    with pytest.raises(ValueError, match="interval_s"):
        PublishGate(PublishPolicy.INTERVAL)


def test_rate_limiter_allows_at_most_n_in_any_one_second_window():
    clock = Clock()
    limiter = RateLimiter(100, clock=clock)
    times = []
    for _ in range(1000):  # try every millisecond for one second and a half
        if limiter.try_acquire():
            times.append(clock.now)
        clock.now += 0.0015
    assert len(times) == 200, len(times)
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst == 100, f"{worst} publishes in one second"


def test_backoff_is_jittered_exponential_and_capped_at_30_s():
    backoff = Backoff(cap_s=30.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0 and 1.0 <= delays[2] <= 2.0, delays
    assert all(15.0 <= d <= 30.0 for d in delays[7:]), delays
    assert len(set(delays)) == len(delays), "jitter: no two waits alike"
    backoff.reset()
    assert backoff.next_delay() <= 0.5
