"""Ray Train pretraining holds up: a killed worker restarts from the last checkpoint, a killed job
resumes when rerun, and both end with exactly the metrics of an uninterrupted in-process run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from itertools import islice
from pathlib import Path

import psutil
import pytest
import torch

from actors.prepare import write_local_sequences
from actors.trainer import build_trainer, launch_args, launch_training, train_in_task
from dataio.corpus import BUILTIN_WIKI, read_documents
from tests.conftest import left_as_found
from training.loop import TrainConfig
from training.model import ModelConfig

pytestmark = pytest.mark.integration

MODEL = ModelConfig(
    kind="bert", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, seq_len=64, whole_word_masking=True
)
TRAIN = TrainConfig(
    steps=40,
    global_batch_size=16,
    learning_rate=1e-3,
    warmup_steps=4,
    subset="random",
    redraw_every=10,
    checkpoint_every=4,
    num_workers=1,
    cpus_per_worker=1,
    seed=3,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    texts = [d.text for d in islice(read_documents(BUILTIN_WIKI), 150)]
    write_local_sequences(texts, root, kind="bert", seq_len=64, vocab_size=600)
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The same training in this process, no Ray, no interruption: losses per step."""
    args = launch_args(train=TRAIN, model=MODEL, data=data, out_dir=tmp_path_factory.mktemp("ref"), fraction=0.5)
    threads = torch.get_num_threads()
    trainer, _ = build_trainer(args, rank=0, world=1, device=torch.device("cpu"))
    losses = [trainer.train_step(step)["loss"] for step in range(TRAIN.steps)]
    torch.set_num_threads(threads)
    return losses


@pytest.fixture(autouse=True)
def shared_data_stays_untouched(request):
    """Every test trains on the module's one prepared pool: none may change it for the tests after it."""
    roots = [request.getfixturevalue("data")] if "data" in request.fixturenames else []
    with left_as_found(roots, request.node.name):
        yield


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def kill_when(out: Path, at_step: int, find: callable) -> tuple[threading.Thread, dict]:
    """SIGKILL the process `find()` returns once metrics.jsonl shows `at_step` steps done; the
    returned dict gets the number of steps done when it died."""
    state = {}

    def watch() -> None:
        path = out / "metrics.jsonl"
        while not (path.exists() and len(path.read_text().splitlines()) >= at_step):
            time.sleep(0.002)
        victim = find()
        victim.send_signal(signal.SIGSTOP)  # freeze it at once, then kill
        state["killed_at"] = len(path.read_text().splitlines())
        victim.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, state


def train_worker_process() -> psutil.Process:
    found = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
    assert len(found) == 1, found
    return found[0]


def test_killed_worker_restarts_from_the_last_checkpoint(ray_cluster, data, reference, tmp_path):
    args = launch_args(train=TRAIN, model=MODEL, data=data, out_dir=tmp_path, fraction=0.5)
    watcher, state = kill_when(tmp_path, 6, train_worker_process)
    launch_training(
        args, name="killed-worker", storage=tmp_path / "ray", num_workers=1, use_gpu=False, cpus_per_worker=1
    )
    watcher.join(timeout=5)
    assert 6 <= state["killed_at"] < TRAIN.steps  # the worker died mid-run
    lines = metrics(tmp_path)
    assert [m["step"] for m in lines] == list(range(1, TRAIN.steps + 1))  # each step once, none lost
    assert [m["loss"] for m in lines] == reference
    assert (tmp_path / "model" / "config.json").exists()
    starts = sorted(json.loads(p.read_text())["start_step"] for p in (tmp_path / "_logs").glob("attempt-*.json"))
    assert starts[0] == 0 and starts[-1] > 0  # the worker group started again from a checkpoint


def test_killed_job_resumes_when_run_again_despite_a_torn_metrics_line(ray_cluster, data, reference, tmp_path):
    args = launch_args(train=TRAIN, model=MODEL, data=data, out_dir=tmp_path, fraction=0.5)
    (tmp_path / "args.json").write_text(json.dumps(args))
    script = (
        "import json, sys, ray; from pathlib import Path; from actors.trainer import launch_training; "
        "ray.init(address=sys.argv[1], log_to_driver=False); "
        "launch_training(json.loads(Path(sys.argv[2]).read_text()), name='killed-job', storage=Path(sys.argv[3]), "
        "num_workers=1, use_gpu=False, cpus_per_worker=1)"
    )
    address = ray_cluster.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-c", script, address, str(tmp_path / "args.json"), str(tmp_path / "ray")],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": "."},
    )
    watcher, state = kill_when(tmp_path, 10, lambda: psutil.Process(driver.pid))
    driver.wait(timeout=300)
    watcher.join(timeout=5)
    assert 10 <= state["killed_at"] < TRAIN.steps
    time.sleep(2)  # let Ray reap the dead job's workers
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99, "lo')  # and a torn last line, as a disk filling up mid-write leaves
    launch_training(args, name="killed-job", storage=tmp_path / "ray", num_workers=1, use_gpu=False, cpus_per_worker=1)
    lines = metrics(tmp_path)
    assert [m["step"] for m in lines] == list(range(1, TRAIN.steps + 1))
    assert [m["loss"] for m in lines] == reference


def test_single_task_run_equals_in_process(ray_cluster, data, reference, tmp_path):
    """The experiment's one-task runs (no Ray Train controller) train exactly what a worker would."""
    args = launch_args(train=TRAIN, model=MODEL, data=data, out_dir=tmp_path / "task", fraction=0.5)
    result = ray_cluster.get(train_in_task.remote(args, snapshots=(20,)))
    assert [m["loss"] for m in metrics(tmp_path / "task")] == reference
    assert result["steps"] == TRAIN.steps and result["seconds"] > 0
    assert (tmp_path / "task" / "model-step20" / "config.json").exists() and (
        tmp_path / "task" / "model" / "config.json"
    ).exists()


ON_S3 = """
import json, sys, ray
from actors.trainer import launch_args, launch_training, train_in_task
from tests.test_train_ray import MODEL, TRAIN
ray.init(address=sys.argv[1], log_to_driver=False, runtime_env={"env_vars": json.loads(sys.argv[2])})
args = launch_args(train=TRAIN, model=MODEL, data="s3://runs/prepare", out_dir="s3://runs/train", fraction=0.5)
launch_training(args, name="on-s3", storage="s3://runs/train/ray", num_workers=1, use_gpu=False, cpus_per_worker=1)
task_args = launch_args(train=TRAIN, model=MODEL, data="s3://runs/prepare", out_dir="s3://runs/task", fraction=0.5,
                        init_from="s3://runs/train/model")
ray.get(train_in_task.remote(task_args, snapshots=(20,)))
"""


def test_training_reads_and_writes_only_object_storage(ray_cluster, data, reference):
    """Sequences, tokenizer and init_from on S3 (a local S3 server), outputs and Ray Train's
    checkpoints written there by the workers: the same losses as the in-process run on a local disk."""
    boto3 = pytest.importorskip("boto3")
    server = pytest.importorskip("moto.server").ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        client.create_bucket(Bucket="runs")
        for name in ("tokenizer", "sequences"):
            for file in sorted(p for p in (data / name).rglob("*") if p.is_file()):
                client.upload_file(str(file), "runs", f"prepare/{name}/{file.relative_to(data / name).as_posix()}")
        address = ray_cluster.get_runtime_context().gcs_address
        subprocess.run(
            [sys.executable, "-c", ON_S3, address, json.dumps(env)],
            check=True,
            timeout=600,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, **env, "PYTHONPATH": "."},
        )
        keys = {
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="runs")
            for o in page.get("Contents", [])
        }
        for run in ("train", "task"):
            lines = [
                json.loads(x)
                for x in client.get_object(Bucket="runs", Key=f"{run}/metrics.jsonl")["Body"].read().splitlines()
            ]
            assert [m["step"] for m in lines] == list(range(1, TRAIN.steps + 1))
            assert {"model/config.json", "model/model.safetensors", "model/tokenizer.json"} <= {
                k[len(run) + 1 :] for k in keys if k.startswith(f"{run}/model/")
            }
        assert [
            m["loss"]
            for m in (
                json.loads(x)
                for x in client.get_object(Bucket="runs", Key="train/metrics.jsonl")["Body"].read().splitlines()
            )
        ] == reference
        assert any(k.startswith("train/ray/on-s3/") and k.endswith("/state.pt") for k in keys)  # uploaded by the worker
        assert "task/model-step20/config.json" in keys
    finally:
        server.stop()
