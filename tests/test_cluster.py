"""cluster.yaml passes the validation `ray up` runs: defaults filled in, then Ray's JSON schema."""
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_validates_like_ray_up():
    config = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    validate_config(config)
    nodes = config["available_node_types"]
    assert config["head_node_type"] == "head" and nodes["head"]["max_workers"] == 0
    assert "g5" in nodes["gpu_worker"]["node_config"]["InstanceType"] and nodes["gpu_worker"]["max_workers"] >= 1
    assert any("ingenious-ray[gpu]" in c for c in config["setup_commands"])  # the project, GPU extra, on every node


def test_a_typo_in_cluster_yaml_fails_validation():
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["min_worker"] = 1  # typo of min_workers
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        validate_config(prepare_config(config))
