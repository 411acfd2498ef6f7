"""The pipeline on a Ray cluster whose worker nodes cannot see the driver's disk (tests/multinode.py),
with corpus and run directory on S3: it finishes, every sequence is embedded exactly once, the
subset is the single-node run's byte for byte, a lost node costs nothing, and a local run
directory stops with an error naming the node that cannot see it."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import load_config
from jobs.pipeline import run_pipeline
from tests.conftest import bucket_files, bucket_keys
from tests.multinode import Cluster, can_unshare, cluster_env
from tests.test_storage import put_corpus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not can_unshare(), reason="needs root and unshare (mount namespaces)"),
]
MODELS = {
    "bert": "{kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64}",
    "gpt2": "{kind: gpt2, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64}",
}
CONFIG = """
name: {name}
model: {model}
corpus: {{source: {corpus}}}
prepare: {{vocab_size: 600, documents_per_shard: {per_shard}, heldout_fraction: 0.1}}
warmstart: {{steps: {warm_steps}, global_batch_size: 8, warmup_steps: 1, checkpoint_every: 2}}
embed: {{layer: -1, batch_size: 8, num_actors: 2}}
select: {{fraction: 0.25, knn_k: 5, num_partitions: 2}}
train: {{steps: {train_steps}, global_batch_size: 8, warmup_steps: 1, redraw_every: 2, checkpoint_every: 2,
        num_workers: {train_workers}}}
evaluate: {{max_sequences: 20}}
"""
SELECT_FILES = ("subset.parquet", "subset_ingenious.parquet", "probabilities.parquet")


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    if s3_server is None:
        pytest.skip("moto is not installed")
    env = cluster_env(s3_server)
    c = Cluster(env=env, hidden=[str(tmp_path_factory.getbasetemp())])
    c.start_head(Path("/tmp") / f"ray-mn-{time.monotonic_ns() % 10**8}")  # short: Ray's socket paths
    try:
        for cpus in (1, 2):  # one at a time: two nodes starting at once on one machine race for their ports
            c.add_node()
            c.wait_for_cpus(cpus)
        yield c
    finally:
        c.stop()


def config(
    tmp_path: Path,
    *,
    kind: str,
    corpus: str,
    per_shard: int = 40,
    warm_steps: int = 2,
    train_steps: int = 4,
    train_workers: int = 1,
) -> Path:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(
        CONFIG.format(
            name=kind,
            model=MODELS[kind],
            corpus=corpus,
            per_shard=per_shard,
            warm_steps=warm_steps,
            train_steps=train_steps,
            train_workers=train_workers,
        )
    )
    return path


def run_driver(cluster: Cluster, cfg: Path, run_dir: str, *, timeout: float = 600) -> str:
    driver = cluster.driver("-m", "jobs.pipeline", "--config", str(cfg), "--run-dir", run_dir)
    out, _ = driver.communicate(timeout=timeout)
    assert driver.returncode == 0, out[-4000:]
    return out


def ids_of(files: dict[str, bytes], prefix: str) -> np.ndarray:
    return np.concatenate(
        [
            pq.read_table(pa.BufferReader(b)).column("sequence_id").to_numpy()
            for k, b in sorted(files.items())
            if k.startswith(prefix) and k.endswith(".parquet")
        ]
    )


def test_pipeline_with_reselection_on_nodes_that_share_no_disk(cluster, ray_cluster, s3, tmp_path):
    """The whole pipeline with train.reselect, the run directory on S3: the head runs nothing and each worker
    node has one CPU, so the trainer and the re-selection's Embedder run on different nodes, sharing no disk;
    every snapshot becomes its draw there, through the bucket, and the trainer switches to each on schedule.
    (One model kind: what differs across nodes is where the bytes go, which BERT and GPT-2 share.)"""
    cfg = config(tmp_path, kind="gpt2", corpus=put_corpus(s3, 160), train_steps=6)
    cfg.write_text(cfg.read_text().replace("redraw_every: 2,", "redraw_every: 2, reselect: {lead: 1},"))
    out = run_driver(cluster, cfg, "s3://runs/cluster")
    assert "evaluate   ran" in out
    files = bucket_files(s3, "runs", "cluster/")
    for stage in ("prepare", "warmstart", "embed", "select", "train", "evaluate"):
        assert f"{stage}/_SUCCESS" in files, stage
    sequences, embedded = ids_of(files, "prepare/sequences/"), ids_of(files, "embed/part-")
    assert len(embedded) == len(np.unique(embedded)) and np.array_equal(np.sort(embedded), np.sort(sequences))
    assert "train/model/_COMPLETE" in files and json.loads(files["evaluate/metrics.json"])["train/heldout"]["loss"] > 0
    lines = [json.loads(line) for line in files["train/metrics.jsonl"].decode().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4, 5, 6] and [m["draw"] for m in lines] == [0, 0, 1, 1, 2, 2]
    for k in (1, 2):
        assert f"train/reselect/{k}/model/_COMPLETE" in files and f"train/reselect/draw-{k}.parquet" in files
        assert json.loads(files[f"train/reselect/switch-{k}.json"])["step"] == 2 * k
        assert np.array_equal(np.sort(ids_of(files, f"train/reselect/{k}/embed/part-")), np.sort(sequences))

    # The same config on one node (this process's local Ray) selects the same subset, byte for byte.
    run_pipeline(load_config(cfg), "s3://runs/single", only=["prepare", "warmstart", "embed", "select"])
    single = bucket_files(s3, "runs", "single/")
    for name in SELECT_FILES:
        assert single[f"select/{name}"] == files[f"select/{name}"], name


def test_a_local_run_directory_the_nodes_cannot_see_is_refused(cluster, s3, tmp_path):
    cfg = config(tmp_path, kind="bert", corpus=put_corpus(s3, 40))
    driver = cluster.driver("-m", "jobs.pipeline", "--config", str(cfg), "--run-dir", str(tmp_path / "run"))
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode != 0
    both_nodes = r"which node\(s\) [\d.]+ \([^)]+\), [\d.]+ \([^)]+\) cannot see"
    assert f"run directory {tmp_path / 'run'} is on this machine's disk" in out and re.search(both_nodes, out)
    assert "object storage" in out
    assert not (tmp_path / "run" / "prepare").exists()  # stopped before any work


def wait_for(predicate, what: str, driver: subprocess.Popen, log: Path, timeout: float = 300):
    """`predicate()`'s first truthy value, polled while `driver` runs; its output (in `log`) is shown if
    it stops or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if driver.poll() is not None or time.monotonic() > deadline:
            state = "timed out" if driver.returncode is None else f"the driver exited ({driver.returncode})"
            raise AssertionError(f"{state} waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.25)
    return value


def a_log(s3, prefix: str) -> dict | None:
    """One JSON object under `prefix` in the runs bucket (a shard or attempt log), if any is there yet."""
    keys = bucket_keys(s3, "runs", prefix)
    return json.loads(s3.get_object(Bucket="runs", Key=keys[0])["Body"].read()) if keys else None


def test_a_node_lost_mid_embed_and_mid_train(cluster, s3, tmp_path):
    """A worker node dies mid-embed, one whose Embedder had written a shard, and another mid-train, the
    one running rank 0 after Ray Train recorded a checkpoint; a replacement joins each time, as an
    autoscaler would bring one. The lost work is redone on the replacements and the run finishes with
    every sequence embedded once and every step logged once."""
    steps = 32  # a checkpoint every 2 steps: training goes on for seconds after the first, time to lose a node
    cfg = config(
        tmp_path, kind="bert", corpus=put_corpus(s3, 160), per_shard=4, warm_steps=2, train_steps=steps, train_workers=2
    )
    nodes = {cluster.node_id(n): n for n in cluster.nodes}
    log = tmp_path / "driver.log"
    driver = cluster.driver("-m", "jobs.pipeline", "--config", str(cfg), "--run-dir", "s3://runs/lost", log=log)
    try:
        shard = wait_for(lambda: a_log(s3, "lost/embed/_logs/"), "a first embedding shard", driver, log)
        assert shard["node"] in nodes, (shard, nodes)  # a worker node we started embedded it
        cluster.kill(nodes.pop(shard["node"]))
        joined = cluster.add_node()
        joined_in_embed = cluster.node_id(joined)
        nodes[joined_in_embed] = joined

        # Rank 0 logs where its worker group started; the checkpoint manager's snapshot appears once
        # Ray Train has recorded a checkpoint, so the restart after the loss resumes from a later step.
        attempt = wait_for(lambda: a_log(s3, "lost/train/_logs/attempt-"), "training to start", driver, log)
        wait_for(
            lambda: any(
                k.endswith("checkpoint_manager_snapshot.json") for k in bucket_keys(s3, "runs", "lost/train/ray/")
            ),
            "a first training checkpoint",
            driver,
            log,
        )
        assert attempt["node"] in nodes, (attempt, nodes)
        cluster.kill(nodes.pop(attempt["node"]))
        cluster.add_node()
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, log.read_text()[-4000:]
    files = bucket_files(s3, "runs", "lost/")

    # The faults took effect: the lost Embedder was restarted on the node that joined after the loss and
    # finished shards there (only a restart puts an Embedder there: the pool's actors are made once),
    # and the worker group lost with rank 0 was restarted elsewhere from a checkpoint, not from step 0.
    shard_nodes = [json.loads(v)["node"] for k, v in files.items() if k.startswith("embed/_logs/")]
    assert joined_in_embed in shard_nodes, shard_nodes
    starts = [json.loads(v) for k, v in files.items() if k.startswith("train/_logs/attempt-")]
    resumed = [s for s in starts if s["start_step"] > 0]
    assert resumed and all(s["node"] != attempt["node"] for s in resumed), starts

    sequences, embedded = ids_of(files, "prepare/sequences/"), ids_of(files, "embed/part-")
    assert len(embedded) == len(np.unique(embedded)) and np.array_equal(np.sort(embedded), np.sort(sequences))
    logged = [json.loads(line)["step"] for line in files["train/metrics.jsonl"].decode().splitlines()]
    assert logged == list(range(1, steps + 1))
