"""train.reselect on a real local Ray cluster: draws re-selected from snapshots of the model being
trained are the same bytes in two runs from scratch, a driver killed mid-re-selection resumes to those
bytes, and `when_late: continue` records the step each draw was switched to."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dataio.contracts import ExportOutputs
from jobs.config import load_config
from jobs.export import run_export
from jobs.pipeline import run_pipeline
from jobs.stages.export import ExportConfig
from tests.conftest import left_as_found, write_corpus
from training.reselect import ReselectConfig

pytestmark = pytest.mark.integration

CONFIG = """
name: reselect
model: {{kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64}}
corpus: {{source: {corpus}}}
prepare: {{vocab_size: 600, documents_per_shard: 60, heldout_fraction: 0.1}}
warmstart: {{steps: 4, global_batch_size: 8, warmup_steps: 1, checkpoint_every: 2}}
embed: {{layer: -1, batch_size: 16, num_actors: 1}}
select: {{fraction: 0.25, num_partitions: 2, knn_k: 5, seed: 5}}
train: {{steps: 6, global_batch_size: 8, warmup_steps: 1, redraw_every: 2, checkpoint_every: 1,
        reselect: {{lead: 1, num_actors: 1, cpus_per_actor: 1}}}}
"""
DRAWS = (1, 2)  # steps 6, a draw every 2: switches at steps 2 and 4


@pytest.fixture(scope="module")
def selected(ray_cluster, tmp_path_factory) -> tuple[Path, Path]:
    """(config file, a run directory done up to select), shared: each test trains in a copy."""
    root = tmp_path_factory.mktemp("reselect")
    config = root / "reselect.yaml"
    config.write_text(CONFIG.format(corpus=write_corpus(root / "corpus.jsonl", 120)))
    run_pipeline(load_config(config), root / "run", only=["prepare", "warmstart", "embed", "select"])
    return config, root / "run"


@pytest.fixture(autouse=True)
def shared_run_stays_untouched(request):
    roots = [request.getfixturevalue("selected")[1]] if "selected" in request.fixturenames else []
    with left_as_found(roots, request.node.name):
        yield


def copy_of(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def outputs(run: Path) -> dict[str, bytes]:
    """What re-selection and training leave that must be the same bytes in every run: the draws, the
    switch records, the losses and the final weights."""
    folder = run / "train"
    files = {p.name: p.read_bytes() for p in (folder / "reselect").glob("*") if p.is_file()}
    files["losses"] = json.dumps(
        [json.loads(x)["loss"] for x in (folder / "metrics.jsonl").read_text().splitlines()]
    ).encode()
    files["model.safetensors"] = (folder / "model" / "model.safetensors").read_bytes()
    return files


@pytest.fixture(scope="module")
def reference(selected, tmp_path_factory) -> dict[str, bytes]:
    config, run = selected
    copy = copy_of(run, tmp_path_factory.mktemp("first") / "run")
    assert [r["status"] for r in run_pipeline(load_config(config), copy, only=["train"])] == ["ran"]
    return outputs(copy)


def test_two_runs_from_scratch_give_the_same_draws(selected, reference, tmp_path):
    config, run = selected
    assert set(reference) >= {f"draw-{k}.parquet" for k in DRAWS} | {f"switch-{k}.json" for k in DRAWS}
    assert [json.loads(reference[f"switch-{k}.json"])["step"] for k in DRAWS] == [2, 4]  # wait: on schedule
    copy = copy_of(run, tmp_path / "run")
    run_pipeline(load_config(config), copy, only=["train"])
    assert outputs(copy) == reference
    metrics = [json.loads(x) for x in (copy / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["draw"] for m in metrics] == [0, 0, 1, 1, 2, 2]

    # `ingenious export` writes the re-selected draws the trainers switched to, not the warm start's redraws.
    summary = run_export(load_config(config), copy, ExportConfig())["summary"]
    assert summary["draws"] == 3
    for k in DRAWS:
        exported = pq.read_table(copy / "export" / "parquet" / ExportOutputs.draw(k)).column("sequence_id")
        drawn = pq.read_table(copy / "train" / "reselect" / f"draw-{k}.parquet").column("sequence_id")
        assert sorted(exported.to_pylist()) == sorted(drawn.to_pylist())


DRIVER = """
import sys
from dataio.lease import Lease
from jobs.config import load_config
from jobs.pipeline import run_pipeline
with Lease(sys.argv[2], ttl_s=2, renew_s=0.5) as lease:  # expires soon after a kill, for the rerun
    run_pipeline(load_config(sys.argv[1]), sys.argv[2], only=["train"], lease=lease)
"""


def test_a_driver_killed_during_reselection_resumes_to_the_same_bytes(ray_cluster, selected, reference, tmp_path):
    config, run = selected
    copy = copy_of(run, tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": ".", "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(config), str(copy)], cwd=Path(__file__).resolve().parents[1], env=env
    )
    embedded = copy / "train" / "reselect" / "1" / "embed"
    deadline = time.monotonic() + 300
    while not any(embedded.glob("part-*.parquet")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    driver.kill()  # re-selection 1 has embedded and is selecting
    driver.wait(timeout=30)
    assert any(embedded.glob("part-*.parquet")), "the driver ended before re-selection began"
    assert not (copy / "train" / "reselect" / "draw-1.parquet").exists()  # killed mid-re-selection
    time.sleep(3)  # the dead driver's lease expires; Ray reaps its trainers and actors
    assert [r["status"] for r in run_pipeline(load_config(config), copy, only=["train"])] == ["ran"]
    assert outputs(copy) == reference


def test_continue_records_the_step_it_switched_at(selected, tmp_path):
    config, run = selected
    cfg = load_config(config)
    late = dataclasses.replace(cfg.train, reselect=ReselectConfig(lead=1, when_late="continue"))
    copy = copy_of(run, tmp_path / "run")
    run_pipeline(dataclasses.replace(cfg, train=late), copy, only=["train"])
    metrics = [json.loads(x) for x in (copy / "train" / "metrics.jsonl").read_text().splitlines()]
    for k in DRAWS:
        switched = copy / "train" / "reselect" / f"switch-{k}.json"
        if not switched.exists():  # landed after the last step: never trained on, and no record
            assert all(m["draw"] < k for m in metrics)
            continue
        step = json.loads(switched.read_text())["step"]
        assert step >= 2 * k  # never before its scheduled step
        assert [m["draw"] >= k for m in metrics] == [m["step"] > step for m in metrics]
