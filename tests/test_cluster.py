"""cluster.yaml passes the validation `ray up` runs (defaults filled in, then Ray's JSON schema), pins
what every node runs, and sends each stage to the right nodes."""

import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def cluster() -> dict:
    config = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    validate_config(config)
    return config


def test_cluster_yaml_validates_like_ray_up():
    config = cluster()
    nodes = config["available_node_types"]
    assert config["head_node_type"] == "head" and nodes["head"]["max_workers"] == 0
    assert "g5" in nodes["gpu_worker"]["node_config"]["InstanceType"] and nodes["gpu_worker"]["max_workers"] >= 1
    assert any("ingenious-ray[gpu]" in c for c in config["setup_commands"])  # the project, GPU extra, on every node


def test_ray_python_and_cuda_are_pinned_to_the_local_ray():
    config = cluster()
    image = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(3\d+)-cu(12\d)", config["docker"]["image"])
    assert image, config["docker"]["image"]
    assert image[1] == ray.__version__  # the head, every worker and the tests run the same Ray
    assert image[2] == "311" and image[3] == "128"
    assert all(k not in config["docker"] for k in ("head_image", "worker_image"))  # one image everywhere
    setup = " ".join(config["setup_commands"])
    assert f'"ray[default,train,data]=={ray.__version__}"' in setup  # nothing the project pulls in moves Ray
    assert re.search(r"pip install -q torch==[\d.]+ --index-url https://download.pytorch.org/whl/cu128", setup)
    # FAISS comes with the `gpu` extra (faiss-gpu, which runs on CPU where no GPU is visible), so no node
    # swaps faiss-cpu for it afterwards (uninstalling one of two wheels that share files breaks the other).
    assert all(
        "faiss" not in c for n in config["available_node_types"].values() for c in n.get("worker_setup_commands", [])
    )


def test_run_directory_on_s3_with_an_instance_profile_on_every_node():
    config = cluster()
    env = dict(
        o.removeprefix("--env=").split("=", 1) for o in config["docker"]["run_options"] if o.startswith("--env=")
    )
    assert env["INGENIOUS_RUN_ROOT"].startswith("s3://") and env["AWS_DEFAULT_REGION"] == config["provider"]["region"]
    assert not re.search(r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)", CLUSTER.read_text())  # no keys
    profiles = {
        name: node["node_config"]["IamInstanceProfile"]["Arn"] for name, node in config["available_node_types"].items()
    }
    assert set(profiles) == {"head", "cpu_worker", "gpu_worker"}
    assert all(re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+", arn) for arn in profiles.values())
    assert profiles["cpu_worker"] == profiles["gpu_worker"] != profiles["head"]  # only the head may launch nodes


def test_disks_hold_the_embeddings_and_stages_land_by_resources():
    config = cluster()
    nodes = config["available_node_types"]
    disk = {name: node["node_config"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] for name, node in nodes.items()}
    paper_embeddings_gb = 41_500_000 * 768 * 4 / 1e9  # 127 GB
    assert disk["cpu_worker"] > 2 * paper_embeddings_gb and disk["gpu_worker"] >= 200 and disk["head"] >= 100
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--num-cpus=0" in head_start.split() and nodes["head"]["resources"] == {"CPU": 0}  # no task on the head
    assert nodes["cpu_worker"]["min_workers"] >= 1 and not nodes["cpu_worker"]["node_config"][
        "InstanceType"
    ].startswith(("g", "p"))
    assert nodes["gpu_worker"]["min_workers"] >= 1  # `use_gpu: auto` sees a GPU from the start


def test_cluster_requires_a_token_and_keeps_the_job_api_off_public_addresses():
    config = cluster()
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head.split() and "0.0.0.0" not in CLUSTER.read_text()
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}  # the same token on every node
    assert "echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc" in " ".join(config["setup_commands"])
    assert "--env=RAY_AUTH_MODE=token" in config["docker"]["run_options"]  # every process in the containers


def test_a_typo_in_cluster_yaml_fails_validation():
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["min_worker"] = 1  # typo of min_workers
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        validate_config(prepare_config(config))
