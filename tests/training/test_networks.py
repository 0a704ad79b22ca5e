import pytest

from training import networks
from training.errors import ConfigError, PretrainedWeightsMissing


def test_unknown_network_lists_valid_names():
    with pytest.raises(ConfigError, match="mobilenet0.25") as err:
        networks.parse_network("mobilenet9", "classification")
    assert "'mobilenet9' is not among" in str(err.value)
    with pytest.raises(ConfigError, match="ssd_<size>_mobilenet0.25"):
        networks.parse_network("yolo_tiny", "detection")


def test_ssd_profile_parses_size():
    spec = networks.parse_network("ssd_160_mobilenet0.25", "detection")
    assert (spec.base, spec.input_size) == ("mobilenet0.25", 160)
    layout = networks.ssd_layout(160)
    assert len(layout["sizes"]) == len(layout["steps"]) + 1


def test_missing_pretrained_cache_names_folder(tmp_path):
    with pytest.raises(PretrainedWeightsMissing) as err:
        networks.pretrained_file("mobilenet0.25", tmp_path)
    assert str(tmp_path) in str(err.value) and "mobilenet0.25-" in str(err.value)
