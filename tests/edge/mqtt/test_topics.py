import pytest

from edge.mqtt.topics import Topics, check_aws_topic, fleet_deployment_topic


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
