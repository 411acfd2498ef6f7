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


def test_cluster_requires_a_token_and_keeps_the_job_api_off_public_addresses():
    config = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head.split() and "0.0.0.0" not in CLUSTER.read_text()
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}  # the same token on every node
    assert "echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc" in " ".join(config["setup_commands"])


def test_a_typo_in_cluster_yaml_fails_validation():
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["min_worker"] = 1  # typo of min_workers
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        validate_config(prepare_config(config))
