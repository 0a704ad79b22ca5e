"""The device config: the issue's minimal YAML as written, paths from the config's folder, errors naming keys."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = """\
device_id: cam-01
fleet: demo
registry: {type: mlflow, uri: "sqlite:///mlflow.db", model: shapes-detector, alias: production}
sources:
  - {id: door, uri: data/demo/video.mp4}
mqtt: {url: "mqtt://127.0.0.1:1883", topic_prefix: lensops, qos: 1}
stream: {port: 8080}
"""


def write_video(path: Path, frames: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    """A folder laid out like the project after `make demo`: the video and the registry file."""
    write_video(tmp_path / "data/demo/video.mp4")
    (tmp_path / "mlflow.db").touch()
    (tmp_path / "device.yaml").write_text(MINIMAL)
    return tmp_path


def load_text(folder: Path, text: str):
    (folder / "device.yaml").write_text(text)
    return load_config(folder / "device.yaml")


def test_the_minimal_config_works_as_written_from_any_folder(project, tmp_path_factory, monkeypatch):
    # given the working folder is somewhere else
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    # when the minimal config is read
    config = load_config(project / "device.yaml")
    # then relative paths are taken from the config's folder and defaults fill the rest
    assert config.device_id == "cam-01" and config.fleet == "demo"
    assert config.registry.type == "mlflow" and config.registry.uri == f"sqlite:///{project / 'mlflow.db'}"
    assert (config.registry.model, config.registry.alias, config.registry.poll_s) == (
        "shapes-detector",
        "production",
        30,
    )
    assert config.sources[0].uri == str(project / "data/demo/video.mp4") and config.sources[0].kind == "file"
    assert config.mqtt.port == 1883 and config.mqtt.qos == 1 and config.stream.port == 8080
    assert config.state_path == project / ".lensops/cam-01" and config.cache_path == project / ".lensops/cam-01/models"
    assert config.models == ["shapes-detector"] and config.exit_when_done is False


def test_each_source_may_name_its_own_model(project):
    (project / "shelf").mkdir()
    cv2.imwrite(str(project / "shelf/a.png"), np.zeros((8, 8, 3), np.uint8))
    text = MINIMAL.replace(
        "  - {id: door, uri: data/demo/video.mp4}\n",
        "  - {id: door, uri: data/demo/video.mp4}\n"
        "  - {id: shelf, uri: shelf, model: shapes-classifier}\n"
        "  - {id: back, uri: 'rtsp://10.0.0.2/s', model: shapes-detector}\n",
    )
    config = load_text(project, text)
    assert config.models == ["shapes-detector", "shapes-classifier"], "one model manager per distinct model"
    assert [config.model_for(s) for s in config.sources] == ["shapes-detector", "shapes-classifier", "shapes-detector"]


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("fleet: demo", "fleet: demo\ncolour: red", "device.yaml: colour: unknown key; expected one of: device_id, "),
        ("qos: 1}", "qos: 1, qoss: 1}", "mqtt.qoss: unknown key (did you mean 'qos'?)"),
        (
            "uri: data/demo/video.mp4}",
            "uri: data/demo/video.mp4, lop: true}",
            "sources[0].lop: unknown key (did you mean 'loop'?)",
        ),
        ("alias: production}", "alias: production, polls: 5}", "registry.polls: unknown key (did you mean 'poll_s'?)"),
        (
            "port: 8080",
            "port: eighty",
            "stream.port: Input should be a valid integer, unable to parse string as an integer (got 'eighty')",
        ),
        ("qos: 1}", "qos: 2}", "mqtt.qos: Input should be 0 or 1 (got 2)"),
        ("data/demo/video.mp4", "data/demo/missing.mp4", "sources[0].uri: video file or image folder not found:"),
        ("alias: production}", "alias: production, public_key: keys/x.pub}", "registry.public_key: file"),
        (
            "mqtt://127.0.0.1:1883",
            "htp://127.0.0.1:1883",
            "mqtt.url: scheme 'htp' of 'htp://127.0.0.1:1883' is not one of mqtt, mqtts",
        ),
        ("mqtt://127.0.0.1:1883", "mqtt://:1883", "mqtt.url: 'mqtt://:1883' has no host"),
        (
            "sqlite:///mlflow.db",
            "ftp://registry",
            "registry.uri: scheme ftp:// in 'ftp://registry' is not one of sqlite://",
        ),
        ("sqlite:///mlflow.db", "http://:5000", "registry.uri: 'http://:5000' needs a host"),
        ("sqlite:///mlflow.db", "sqlite:///nope.db", "registry.uri: sqlite database"),
        (
            "type: mlflow",
            "type: mlfow",
            "registry: Input tag 'mlfow' found using 'type' does not match any of the expected tags: "
            "'mlflow', 'sagemaker'",
        ),
        ("device_id: cam-01\n", "", "device_id: Field required"),
        ("device_id: cam-01", "device_id: cam/01", "device_id: String should match pattern"),
        ("qos: 1}", "qos: 1, password: hunter2}", "mqtt: password: secrets are not read from the YAML"),
    ],
)
def test_errors_name_the_key_path_and_the_value(project, old, new, expected):
    assert old in MINIMAL
    with pytest.raises(ConfigError) as error:
        load_text(project, MINIMAL.replace(old, new))
    message = str(error.value)
    assert expected in message, message
    assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("device_id: [unclosed", "not valid YAML: line 1"),
        ("- just\n- a list\n", "expected a mapping of keys"),
    ],
)
def test_unreadable_files_are_named(tmp_path, text, expected):
    with pytest.raises(ConfigError, match="device.yaml: " + expected.split(":")[0]):
        load_text(tmp_path, text)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_source_ids_are_refused(project):
    text = MINIMAL.replace("sources:\n", "sources:\n  - {id: door, uri: data/demo/video.mp4}\n")
    with pytest.raises(ConfigError, match="sources: id 'door' is used more than once"):
        load_text(project, text)


def test_environment_references_are_replaced_and_unset_ones_named(project, monkeypatch):
    monkeypatch.setenv("THING", "cam-07")
    assert load_text(project, MINIMAL.replace("cam-01", "${THING}")).device_id == "cam-07"
    monkeypatch.delenv("THING")
    with pytest.raises(ConfigError, match=r"device_id: environment variable THING is not set"):
        load_text(project, MINIMAL.replace("cam-01", "${THING}"))


def test_the_example_configs_parse(tmp_path, monkeypatch):
    # the system-wide example, with its folder source pointed at a real folder
    example = yaml.safe_load((ROOT / "deploy/device.example.yaml").read_text())
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    cv2.imwrite(str(shelf / "a.png"), np.zeros((8, 8, 3), np.uint8))
    write_video(tmp_path / "data/demo/video.mp4")
    example["sources"] = [dict(s, uri=str(shelf)) if s["id"] == "shelf" else s for s in example["sources"]]
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy/device.yaml").write_text(yaml.safe_dump(example))
    config = load_config(tmp_path / "deploy/device.yaml")
    assert [s.kind for s in config.sources] == ["camera", "stream", "file", "folder"]
    assert config.models == ["shapes-detector", "shapes-classifier"]
    # the Greengrass one, with what the recipe and the nucleus put in the environment
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("PEM")
    for name, value in {
        "LENSOPS_DEVICE_ID": "core-1-lensops",
        "AWS_REGION": "eu-west-1",
        "LENSOPS_IOT_ENDPOINT": "abc-ats.iot.eu-west-1.amazonaws.com",
        "GG_ROOT_CA_PATH": str(tmp_path / "ca.pem"),
        "LENSOPS_CERT_FILE": str(tmp_path / "cert.pem"),
        "LENSOPS_KEY_FILE": str(tmp_path / "key.pem"),
    }.items():
        monkeypatch.setenv(name, value)
    gg = load_config(ROOT / "deploy/greengrass/device.yaml")
    assert (
        gg.device_id == "core-1-lensops"
        and gg.mqtt.aws_iot
        and gg.mqtt.effective_client_id(gg.device_id) == "core-1-lensops"
    )
    assert gg.registry.type == "sagemaker" and gg.registry.client_options()["region"] == "eu-west-1"


def test_shadow_section_defaults_bounds_and_unknown_keys(project):
    assert load_text(project, MINIMAL).shadow is None  # absent: off
    config = load_text(project, MINIMAL + "shadow: {}\n")
    assert (config.shadow.alias, config.shadow.rate, config.shadow.report_s) == ("candidate", 0.1, 30.0)
    config = load_text(project, MINIMAL + "shadow: {rate: 1, cache_dir: shadow-cache}\n")
    assert config.shadow.rate == 1 and config.shadow.cache_dir == project / "shadow-cache"
    with pytest.raises(ConfigError, match=r"shadow\.rate"):
        load_text(project, MINIMAL + "shadow: {rate: 0}\n")
    with pytest.raises(ConfigError, match=r"shadow\.rate"):
        load_text(project, MINIMAL + "shadow: {rate: 1.5}\n")
    with pytest.raises(ConfigError, match=r"shadow\.sample_rate"):
        load_text(project, MINIMAL + "shadow: {sample_rate: 0.5}\n")
    text = MINIMAL.replace("alias: production}", "alias: production, cache_dir: cache}")
    with pytest.raises(ConfigError, match=r"shadow\.cache_dir: .* the candidate needs a folder of its own"):
        load_text(project, text + "shadow: {cache_dir: cache}\n")
