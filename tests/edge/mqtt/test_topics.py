import paho.mqtt.client as mqtt
import pytest

from edge.mqtt.topics import (
    Topics,
    check_aws_topic,
    device_filter,
    device_publish_filters,
    fleet_deployment_topic,
    fleet_notice_filters,
)


def test_topics_of_a_device():
    topics = Topics("lensops", "cam-01")
    assert topics.inference("door") == "lensops/cam-01/door/inference"
    assert topics.status == "lensops/cam-01/status"
    assert topics.deployment == "lensops/cam-01/deployment"
    assert (
        topics.fleet_deployment("demo") == fleet_deployment_topic("lensops", "demo") == "lensops/fleets/demo/deployment"
    )
    assert topics.inference_targets("door") == ["lensops/cam-01/door/inference"]


def test_deeplens_topic_is_added_when_enabled():
    topics = Topics("lensops", "cam-01", deeplens=True)
    assert topics.inference_targets("door") == ["lensops/cam-01/door/inference", "$aws/things/cam-01/infer"]


@pytest.mark.parametrize("bad", ["", "a/b", "cam+", "#"])
def test_names_that_cannot_be_a_topic_level_are_refused(bad):
    with pytest.raises(ValueError, match="cannot be an MQTT topic level"):
        Topics("lensops", "cam-01").inference(bad)


def test_aws_topic_limits():
    assert check_aws_topic("$aws/things/cam-01/infer")
    with pytest.raises(ValueError, match="AWS IoT Core's limits"):
        check_aws_topic("/".join("abcdefghij"))


def test_the_filters_an_acl_is_made_of():
    topics = Topics("lensops", "cam-01")
    written = device_publish_filters("lensops", "cam-01")
    assert written == [
        "lensops/cam-01/status",
        "lensops/cam-01/deployment",
        "lensops/cam-01/+/inference",
        "lensops/cam-01/+/shadow",
    ]
    assert all(
        any(mqtt.topic_matches_sub(f, topic) for f in written)
        for topic in (topics.status, topics.deployment, topics.inference("door"), topics.shadow("door"))
    )
    assert device_filter("lensops", "cam-01") == "lensops/cam-01/#"
    assert fleet_notice_filters("lensops", "lobby") == [
        topics.fleet_deployment("lobby"),
        topics.ring_deployments("lobby"),
    ]
    with pytest.raises(ValueError, match="cannot be an MQTT topic level"):
        device_publish_filters("lensops", "cam/01")
