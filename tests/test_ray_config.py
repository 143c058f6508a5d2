"""ray_config.yaml is a real cluster launcher config: Ray's own preparation and validation accept it."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "ray_config.yaml"


def test_ray_config_is_valid():
    config = yaml.safe_load(CONFIG.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` does before launching
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any("Instance" in str(t["node_config"]) and t.get("max_workers", 0) > 0 for t in types.values())
    assert any("samstream" in cmd for cmd in config["setup_commands"])


def test_validation_catches_mistakes():
    config = yaml.safe_load(CONFIG.read_text())
    config["available_node_types"]["gpu_worker"]["min_wokers"] = 1  # a typo
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))
