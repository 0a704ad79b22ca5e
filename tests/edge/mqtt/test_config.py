"""The `mqtt:` section: the minimal form works as written; user errors name the key and value."""

import pytest
from pydantic import ValidationError

from edge.mqtt import MqttConfig, PublishPolicy


def parse(**mqtt):
    return MqttConfig.model_validate(mqtt)


def test_minimal_section_from_the_issue():
    config = parse(url="mqtt://127.0.0.1:1883", topic_prefix="lensops", qos=1)
    assert (config.host, config.port, config.use_tls, config.qos) == ("127.0.0.1", 1883, False, 1)
    assert config.publish_policy is PublishPolicy.EVERY_FRAME
    assert config.effective_client_id("cam-01") == "lensops-cam-01"
    assert config.payload_limit is None and config.publish_rate_limit is None


def test_mqtts_implies_tls_and_port_8883():
    config = parse(url="mqtts://broker.example.com")
    assert (config.use_tls, config.port) == (True, 8883)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://broker:1883", "'http'"),
        ("mqtt://", "no host"),
        ("mqtt://broker:99999", "invalid port"),
        ("mqtt://user:pw@broker", "scheme://host[:port] only"),
    ],
)
def test_bad_url_names_the_field_and_value(url, shown):
    with pytest.raises(ValueError) as error:
        parse(url=url)
    assert "url" in str(error.value) and shown in str(error.value), str(error.value)


def test_unknown_key_is_named():
    with pytest.raises(ValidationError) as error:
        parse(url="mqtt://127.0.0.1", qos_level=1)
    assert "qos_level" in str(error.value) and "Extra inputs are not permitted" in str(error.value)


def test_missing_certificate_file_is_named(tmp_path):
    missing = tmp_path / "nope" / "ca.pem"
    with pytest.raises(ValueError) as error:
        parse(url="mqtts://127.0.0.1", tls={"ca_file": str(missing)})
    assert "tls.ca_file" in str(error.value) and str(missing) in str(error.value), str(error.value)


def test_client_certificate_needs_its_key(tmp_path):
    cert = tmp_path / "client.crt"
    cert.write_text("x")
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        parse(url="mqtts://127.0.0.1", tls={"cert_file": str(cert)})


def test_tls_section_needs_an_mqtts_url(tmp_path):
    with pytest.raises(ValueError, match="not mqtts://"):
        parse(url="mqtt://127.0.0.1", tls={})


def test_password_never_comes_from_the_yaml():
    with pytest.raises(ValueError, match="password: secrets are not read from the YAML"):
        parse(url="mqtt://127.0.0.1", username="cam", password="hunter2")


def test_password_comes_from_the_named_environment_variable(monkeypatch):
    config = parse(url="mqtt://127.0.0.1", username="cam", password_env="LENSOPS_TEST_MQTT_PASSWORD")
    monkeypatch.delenv("LENSOPS_TEST_MQTT_PASSWORD", raising=False)
    with pytest.raises(ValueError, match="LENSOPS_TEST_MQTT_PASSWORD is not set"):
        config.password()
    monkeypatch.setenv("LENSOPS_TEST_MQTT_PASSWORD", "s3cret")
    assert config.password() == "s3cret"


def test_password_requires_username():
    with pytest.raises(ValueError, match="requires username"):
        parse(url="mqtt://127.0.0.1", password_env="X")


def test_interval_policy_needs_interval_s():
    with pytest.raises(ValueError, match="interval requires interval_s"):
        parse(url="mqtt://127.0.0.1", publish_policy="interval")
    with pytest.raises(ValueError, match="publish_policy"):
        parse(url="mqtt://127.0.0.1", publish_policy="sometimes")


def test_aws_iot_mode_rules(tmp_path):
    with pytest.raises(ValueError, match="AWS IoT Core needs TLS"):
        parse(url="mqtt://127.0.0.1", aws_iot=True)
    with pytest.raises(ValueError, match="max_publishes_per_s: 500"):
        parse(url="mqtts://iot.example.com", aws_iot=True, max_publishes_per_s=500)
    with pytest.raises(ValueError, match="deeplens_topic requires aws_iot"):
        parse(url="mqtts://iot.example.com", deeplens_topic=True)
    config = parse(url="mqtts://iot.example.com", aws_iot=True)
    assert (config.payload_limit, config.publish_rate_limit) == (128 * 1024, 100)
    assert parse(url="mqtts://iot.example.com", aws_iot=True, max_payload_bytes=4096).payload_limit == 4096
    with pytest.raises(ValueError, match="max_payload_bytes: 200000 is over AWS IoT Core's 131072"):
        parse(url="mqtts://iot.example.com", aws_iot=True, max_payload_bytes=200_000)
    assert parse(url="mqtt://127.0.0.1", max_payload_bytes=4000).payload_limit == 4000, "any broker may set one"
    assert config.effective_client_id("cam-01") == "cam-01", "the client id is the thing name"
    with pytest.raises(ValueError, match="must equal the device id"):
        parse(url="mqtts://iot.example.com", aws_iot=True, client_id="other").effective_client_id("cam-01")
