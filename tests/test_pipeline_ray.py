"""The whole INGENIOUS loop on a real local Ray cluster, on a tiny corpus and model."""

import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from itertools import islice
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from dataio.contracts import STAGE_NAMES
from dataio.corpus import BUILTIN_WIKI, read_documents
from dataio.rundir import RunDir, read_embeddings, read_sequences
from dataio.rundir import shard_files as shard_uris
from jobs.config import load_config
from jobs.pipeline import run_pipeline, stage_hashes
from jobs.stages.embed import embed_files
from selection.knn import normalize_embeddings
from selection.merge import candidate_count, candidate_graph, merge_by_gain, merge_select
from selection.partition import (
    nearest_centroid,
    random_partition,
    spherical_kmeans,
    split_oversized,
)
from selection.sampling import draw_subset, taylor_softmax
from selection.shard import order_shard
from tests.conftest import left_as_found, write_corpus, write_sst2
from training.packing import sequence_id
from training.tokenizer import load_tokenizer

pytestmark = pytest.mark.integration


def local_shards(folder) -> list[Path]:
    """A local run directory's shards as paths (the pipeline names them by URI strings)."""
    return [Path(f) for f in shard_uris(folder)]


TINY = """
name: tiny
model: {{kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64}}
corpus: {{source: {corpus}, text_field: text, id_field: id}}
prepare: {{vocab_size: 800, documents_per_shard: 80, heldout_fraction: 0.1}}
warmstart: {{steps: 6, global_batch_size: 8, warmup_steps: 1, checkpoint_every: 3, num_workers: 2}}
embed: {{layer: -1, batch_size: 16, num_actors: 2}}
select: {{fraction: 0.25, num_partitions: 3, knn_k: 5, seed: 11}}
train: {{steps: 6, global_batch_size: 8, warmup_steps: 1, subset: ingenious, redraw_every: 2, checkpoint_every: 3}}
evaluate: {{max_sequences: 40, external: ["{external}"],
           downstream: {{tasks: [sst2], data_dir: "{glue}", seeds: [0, 1], epochs: 1, max_train_examples: 48}}}}
"""


@pytest.fixture(scope="module")
def tiny(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    corpus = write_corpus(root / "corpus.jsonl", 240)
    external = root / "external.txt"  # stands in for WikiText-2 validation
    external.write_text("The history of Rome begins in the eighth century BC. " * 40)
    glue = write_sst2(root / "glue")
    config = root / "tiny.yaml"
    config.write_text(TINY.format(corpus=corpus, external=external, glue=glue))
    cfg = load_config(config)
    rows = run_pipeline(cfg, root / "run")
    return cfg, root / "run", rows


@pytest.fixture(autouse=True)
def shared_runs_stay_untouched(request):
    """The module's runs (tiny, and the GreeDi and dedup variants made from it) are shared by many tests;
    each test leaves them as it found them, so any test passes alone or in any order."""
    roots = []
    if "tiny" in request.fixturenames:
        roots.append(request.getfixturevalue("tiny")[1])
    for name in ("greedi_runs", "dedup_runs"):
        if name in request.fixturenames:
            roots += [copy for _, copy, _ in request.getfixturevalue(name).values()]
    with left_as_found(roots, request.node.name):
        yield


def _copy(run, tmp_path):
    """A test's own copy of a shared run, to change or to run stages on."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_every_stage_ran_and_left_a_marker(tiny):
    cfg, run, rows = tiny
    assert [r["stage"] for r in rows] == STAGE_NAMES
    assert all(r["status"] == "ran" for r in rows)
    for name in STAGE_NAMES:
        assert (run / name / "_SUCCESS").exists()
        manifest = json.loads((run / name / "manifest.json").read_text())
        assert len(manifest["config_hash"]) == 16
        assert manifest["seconds"] > 0 and 0.1 < manifest["peak_rss_gb"] < 20  # driver + local Ray processes
        assert manifest["peak_gpu_gb"] is None  # no GPU here
    assert "name: tiny" in (run / "config.yaml").read_text()
    for shards, logs in (
        ("prepare/sequences", "prepare/sequences/_logs"),
        ("embed", "embed/_logs"),
        ("select/partitions", "select/partitions/_logs"),
    ):  # one log per shard
        names = sorted(p.stem for p in local_shards(run / shards))
        assert names and sorted(p.stem for p in (run / logs).glob("*.json")) == names
        record = json.loads((run / logs / f"{names[0]}.json").read_text())
        assert record["seconds"] > 0 and record["host"] and record["pid"] > 0


def test_prepare_writes_sequences_with_content_ids(tiny):
    cfg, run, _ = tiny
    ids, seqs = read_sequences(run / "prepare" / "sequences")
    held_ids, held = read_sequences(run / "prepare" / "heldout")
    assert len(ids) > 200 and len(held_ids) > 5
    assert len(set(ids.tolist()) | set(held_ids.tolist())) == len(ids) + len(held_ids)  # unique, no leak
    assert all(sequence_id(s) == i for i, s in zip(ids[:50], seqs[:50]))
    assert max(len(s) for s in seqs) == cfg.model.seq_len
    assert all(s[0] == seqs[0][0] for s in seqs)  # every BERT sequence starts with [CLS]


def test_embeddings_cover_every_sequence(tiny):
    cfg, run, _ = tiny
    ids, _ = read_sequences(run / "prepare" / "sequences")
    emb_ids, emb = read_embeddings(local_shards(run / "embed"))
    assert sorted(emb_ids.tolist()) == sorted(ids.tolist())
    assert emb.shape == (len(ids), cfg.model.hidden_size) and np.isfinite(emb).all()


def kill_an_embedder_mid_shard(out) -> tuple[threading.Thread, dict]:
    """SIGKILL the first of this session's Embedder processes seen inside embed_shard (Ray titles a
    worker process `ray::Class.method` while the method runs); the dict gets what it saw."""
    state: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for proc in psutil.Process().children(recursive=True):  # this session's Ray only
                try:
                    if proc.cmdline()[:1] == ["ray::Embedder.embed_shard"]:
                        proc.send_signal(signal.SIGSTOP)  # freeze it, then make sure it is still mid-shard
                        state["title"] = proc.cmdline()[0]
                        state["written"] = len(local_shards(out))
                        proc.kill()
                        return
                except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                    continue
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, state


def test_killed_embedder_restarts_and_retries_its_shard(tiny, tmp_path):
    cfg, run, _ = tiny
    # Batches of one make a shard last long enough to be caught mid-way; both runs use them. One actor
    # and two shards keep the test short.
    slow = dataclasses.replace(cfg, embed=dataclasses.replace(cfg.embed, batch_size=1, num_actors=1))
    todo = local_shards(run / "prepare" / "sequences")[:2]
    inputs = {
        "encoder": str(run / "warmstart" / "model"),
        "from_warmstart": True,
        "tokenizer": run / "prepare" / "tokenizer",
        "todo": todo,
    }
    began = time.perf_counter()
    embed_files(slow, out=tmp_path / "straight", **inputs)
    took = time.perf_counter() - began
    for shard in map(Path, todo):  # each shard's log times the shard alone
        assert 0 < json.loads((tmp_path / "straight" / "_logs" / f"{shard.stem}.json").read_text())["seconds"] < took
    watcher, state = kill_an_embedder_mid_shard(tmp_path / "killed")
    results = embed_files(slow, out=tmp_path / "killed", **inputs)
    watcher.join(timeout=5)
    assert state["title"] == "ray::Embedder.embed_shard" and state["written"] < len(todo)  # killed mid-stage
    assert len(results) == len(todo)
    for shard in map(Path, todo):  # the same bytes as the uninterrupted run
        assert (tmp_path / "killed" / shard.name).read_bytes() == (tmp_path / "straight" / shard.name).read_bytes()


def test_an_empty_prepare_shard_embeds_to_an_empty_shard(tiny, tmp_path):
    """A shard whose documents were all held out or too short: embed writes an empty shard of the
    model's width, and the stage's check (one embedding shard per sequence shard, same ids) passes."""
    from actors.prepare import sequences_table
    from dataio.rundir import RunDir, write_parquet
    from jobs.stages import Context
    from jobs.stages.embed import Embed

    cfg, run, _ = tiny
    shutil.copytree(run / "prepare", tmp_path / "prepare")
    write_parquet(sequences_table([]), str(tmp_path / "prepare" / "sequences" / "part-09999.parquet"))
    todo = local_shards(tmp_path / "prepare" / "sequences")[-2:]
    results = embed_files(
        cfg,
        encoder=str(run / "warmstart" / "model"),
        from_warmstart=True,
        tokenizer=str(tmp_path / "prepare" / "tokenizer"),
        todo=todo,
        out=str(tmp_path / "embed"),
    )
    assert sorted(r["sequences"] for r in results)[0] == 0 and {r["dim"] for r in results} == {cfg.model.hidden_size}
    ids, emb = read_embeddings([str(tmp_path / "embed" / "part-09999.parquet")])
    assert len(ids) == 0 and emb.shape == (0, cfg.model.hidden_size)
    for shard in local_shards(tmp_path / "prepare" / "sequences")[:-2]:  # the rest, as the stage would have them
        shutil.copy(run / "embed" / Path(shard).name, tmp_path / "embed" / Path(shard).name)
    Embed().verify(Context(cfg, RunDir(tmp_path)), str(tmp_path / "embed"), {})
    (tmp_path / "embed" / Path(todo[0]).name).unlink()
    with pytest.raises(ValueError, match=f"embed/{Path(todo[0]).name} is missing"):
        Embed().verify(Context(cfg, RunDir(tmp_path)), str(tmp_path / "embed"), {})


def test_selection_files_and_sizes(tiny):
    cfg, run, _ = tiny
    ids, _ = read_sequences(run / "prepare" / "sequences")
    probs = pq.read_table(run / "select" / "probabilities.parquet").to_pandas()
    assert set(probs.columns) >= {"sequence_id", "shard", "gain", "probability", "rank"}
    assert sorted(probs.sequence_id) == sorted(ids.tolist())
    budget = round(cfg.select.fraction * len(ids))
    for _, part in probs.groupby("shard"):
        part = part.sort_values("rank")
        assert part.probability.sum() == pytest.approx(1.0)
        assert np.all(np.diff(part.gain.to_numpy()) <= 1e-12)  # greedy gains never increase
        np.testing.assert_allclose(part.probability, taylor_softmax(part.gain.to_numpy()))
    subset = pq.read_table(run / "select" / "subset.parquet").to_pandas()
    assert list(subset.columns) == ["sequence_id", "draw"]
    assert len(subset) == budget and subset.sequence_id.is_unique
    assert set(subset.sequence_id) <= set(ids.tolist()) and (subset.draw == 0).all()
    # Nothing here uses the GreeDi subset (strategy and train.subset are ingenious): no merge ran.
    assert not (run / "select" / "subset_greedi.parquet").exists()
    summary = json.loads((run / "select" / "manifest.json").read_text())["summary"]
    assert summary["phases_run"] == ["partition", "greedy"] and "greedi_candidates" not in summary


def in_process_selection(run, scfg) -> tuple[np.ndarray, np.ndarray, list]:
    """The select stage's result recomputed in one process, straight from the pure functions."""
    emb_ids, emb = read_embeddings(local_shards(run / "embed"))
    if scfg.partition == "random":
        parts = random_partition(emb_ids, scfg.partitions_for(len(emb_ids)), scfg.seed)
    else:  # the tiny corpus is below kmeans_sample: every point is in the k-means sample
        xn = normalize_embeddings(emb)
        centroids = spherical_kmeans(xn[np.argsort(emb_ids, kind="stable")], scfg.num_partitions, seed=scfg.seed)
        clusters = nearest_centroid(xn, centroids)
        max_size = math.ceil(scfg.max_partition_factor * len(emb_ids) / scfg.num_partitions)
        parts = split_oversized(emb_ids, clusters, np.bincount(clusters, minlength=len(centroids)), max_size, scfg.seed)
    ids, gains, partitions = [], [], []
    for p in np.unique(parts):
        result = order_shard(emb_ids[parts == p], emb[parts == p], scfg.knn_k)
        ids.append(result.sequence_ids)
        gains.append(result.gains)
        partitions.append((result.sequence_ids, taylor_softmax(result.gains), result.gains, result.kth_similarity))
    return np.concatenate(ids), np.concatenate(gains), partitions


def in_process_merge(run, scfg) -> np.ndarray:
    """The one-round GreeDi merge recomputed in one process: candidates, floors, the local solution."""
    emb_ids, emb = read_embeddings(local_shards(run / "embed"))
    _, _, partitions = in_process_selection(run, scfg)
    n = len(emb_ids)
    budget = round(scfg.fraction * n)
    local = max(partitions, key=lambda p: p[2][:budget].sum())[0][:budget]
    candidates = np.unique(
        np.concatenate(
            [ids[: candidate_count(len(ids), budget, n, scfg.greedi_oversample)] for ids, *_ in partitions] + [local]
        )
    )
    floor_ids = np.concatenate([p[0] for p in partitions])
    floors = np.concatenate([p[3] for p in partitions])[np.argsort(floor_ids)]
    by_id = np.argsort(emb_ids)
    xn = normalize_embeddings(emb[by_id])
    base = xn[np.searchsorted(emb_ids[by_id], candidates)]
    blocks = []  # one block per embedding shard, as the stage searches them (FAISS rounds per query block)
    for f in local_shards(run / "embed"):
        ids_f, emb_f = read_embeddings([f])
        rows = np.searchsorted(emb_ids[by_id], ids_f)
        blocks.append(
            (ids_f, candidate_graph(emb_f, base, scfg.knn_k, scfg.merge_knn_params(), thresholds=floors[rows]))
        )
    order, _, _ = merge_select(blocks, budget, np.searchsorted(candidates, local))
    return candidates[order]


def assert_select_matches_in_process(run, scfg):
    probs = pq.read_table(run / "select" / "probabilities.parquet").sort_by(
        [("shard", "ascending"), ("rank", "ascending")]
    )
    ids, gains, partitions = in_process_selection(run, scfg)
    assert probs.column("sequence_id").to_numpy().tobytes() == ids.tobytes()
    assert probs.column("gain").to_numpy().tobytes() == gains.tobytes()
    budget = round(scfg.fraction * len(ids))
    subset = pq.read_table(run / "select" / "subset_ingenious.parquet").column("sequence_id").to_numpy()
    assert subset.tolist() == draw_subset([p[:2] for p in partitions], budget, seed=scfg.seed, draw=0).tolist()


def test_ray_selection_equals_in_process_selection(tiny):
    cfg, run, _ = tiny
    assert cfg.select.partition == "cluster"
    assert_select_matches_in_process(run, cfg.select)


@pytest.mark.parametrize(
    "change",
    [{"partition": "random"}, {"cpus_per_task": 2.0}, {"cpus_per_task": 0.5}],
    ids=["random", "one-worker", "four-workers"],
)
def test_select_variants_on_a_copy_of_the_run(tiny, tmp_path, change):
    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    variant = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, **change))
    rows = run_pipeline(variant, copy, only=["select"], force=["select"])  # a CPU count alone reruns nothing
    assert rows[0]["status"] == "ran"
    assert_select_matches_in_process(copy, variant.select)
    if "cpus_per_task" in change:  # 1 or 4 concurrent workers instead of 2: the same bytes
        for f in ("probabilities.parquet", "subset.parquet"):
            assert (copy / "select" / f).read_bytes() == (run / "select" / f).read_bytes()


@pytest.fixture(scope="module")
def greedi_runs(tiny, tmp_path_factory):
    """The tiny run's selection again with the GreeDi merge: by gain (the partitions' objectives), and
    over all points in one round, and in two rounds (groups of partitions first) with 2 and with 4
    concurrent workers."""
    cfg, run, _ = tiny
    budget = round(cfg.select.fraction * len(read_sequences(run / "prepare" / "sequences")[0]))
    cap = budget + budget // 4  # below the ~2 x budget candidates, above any two partitions' share
    runs = {}
    every = {"merge_objective": "all_points"}
    for name, change in (
        ("by-gain", {}),
        ("one-round", every),
        ("two-rounds", {**every, "merge_max_candidates": cap}),
        ("two-rounds-four-workers", {**every, "merge_max_candidates": cap, "cpus_per_task": 0.5}),
    ):
        copy = tmp_path_factory.mktemp("greedi") / "run"
        shutil.copytree(run, copy)
        variant = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, greedi_merge=True, **change))
        assert run_pipeline(variant, copy, only=["select"])[0]["status"] == "ran"
        runs[name] = (variant, copy, json.loads((copy / "select" / "manifest.json").read_text())["summary"])
    return runs


def test_greedi_merge_by_gain_equals_the_in_process_merge(greedi_runs):
    variant, copy, summary = greedi_runs["by-gain"]
    ids, gains, _ = in_process_selection(copy, variant.select)
    merged = pq.read_table(copy / "select" / "subset_greedi.parquet")
    rows = merge_by_gain(ids, gains, summary["budget"])
    assert merged.column("sequence_id").to_numpy().tolist() == ids[rows].tolist()
    assert merged.column("gain").to_numpy().tobytes() == gains[rows].tobytes()
    assert summary["phases_run"] == ["partition", "greedy", "merge"]


def test_greedi_merge_over_all_points_equals_the_in_process_merge(greedi_runs):
    variant, copy, summary = greedi_runs["one-round"]
    assert summary["phases_run"] == ["partition", "greedy", "merge"] and summary["greedi_rounds"] == 1
    merged = pq.read_table(copy / "select" / "subset_greedi.parquet").column("sequence_id").to_numpy()
    assert merged.tolist() == in_process_merge(copy, variant.select).tolist()
    assert summary["greedi_subset"] == len(merged) == summary["budget"]
    # The ingenious files do not change with the merge.
    assert_select_matches_in_process(copy, variant.select)


def test_greedi_tree_merge_has_the_budget_and_does_not_depend_on_workers(greedi_runs):
    _, one, one_summary = greedi_runs["one-round"]
    _, two, summary = greedi_runs["two-rounds"]
    _, four, _ = greedi_runs["two-rounds-four-workers"]
    assert summary["greedi_rounds"] == 2 and summary["greedi_candidates"] < one_summary["greedi_candidates"]
    merged = pq.read_table(two / "select" / "subset_greedi.parquet").to_pandas()
    ids, _ = read_sequences(two / "prepare" / "sequences")
    assert len(merged) == summary["budget"] and merged.sequence_id.is_unique
    assert set(merged.sequence_id) <= set(ids.tolist())
    assert (four / "select" / "subset_greedi.parquet").read_bytes() == (
        two / "select" / "subset_greedi.parquet"
    ).read_bytes()


def test_training_and_evaluation_numbers(tiny):
    cfg, run, _ = tiny
    for stage, steps in (("warmstart", cfg.warmstart.steps), ("train", cfg.train.steps)):
        lines = [json.loads(x) for x in (run / stage / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in lines] == list(range(1, steps + 1))
        assert all(np.isfinite(m["loss"]) and m["tokens"] > 0 and m["tokens_per_s"] > 0 for m in lines)
        assert (run / stage / "model" / "config.json").exists()
    draws = [json.loads(x)["draw"] for x in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert draws == [0, 0, 1, 1, 2, 2]  # a new subset every redraw_every=2 steps
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"warmstart/heldout", "train/heldout", "warmstart/external", "train/external"}
    for result in metrics.values():
        assert result["tokens"] > 0 and 0 < result["loss"] < 20 and result["sequences"] <= cfg.evaluate.max_sequences
    rows = [json.loads(x) for x in (run / "evaluate" / "downstream.jsonl").read_text().splitlines()]
    assert [(r["model"], r["task"], r["seed"]) for r in rows] == [
        ("warmstart", "sst2", 0),
        ("warmstart", "sst2", 1),
        ("train", "sst2", 0),
        ("train", "sst2", 1),
    ]
    assert all(r["train_examples"] == 48 and r["eval_examples"] == 20 and 0 <= r["accuracy"] <= 1 for r in rows)
    table = (run / "evaluate" / "downstream.md").read_text().splitlines()
    assert table[0] == "| model (mean ± t 95% CI over seeds) | sst2 | average |" and table[2].startswith(
        "| warmstart | "
    )


def test_second_run_skips_every_stage(tiny, tmp_path):
    cfg, shared, _ = tiny
    run = _copy(shared, tmp_path)
    before = (run / "select" / "subset.parquet").stat().st_mtime_ns
    rows = run_pipeline(cfg, run)
    assert [r["status"] for r in rows] == ["skipped"] * len(STAGE_NAMES)
    assert (run / "select" / "subset.parquet").stat().st_mtime_ns == before


def test_a_resource_only_change_reruns_nothing(tiny, tmp_path):
    cfg, shared, _ = tiny
    run = _copy(shared, tmp_path)
    before = {name: (run / name / "_SUCCESS").stat().st_mtime_ns for name in STAGE_NAMES}
    r = dataclasses.replace
    variant = r(
        cfg,
        prepare=r(cfg.prepare, num_cpus_per_task=2),
        warmstart=r(cfg.warmstart, checkpoint_every=1, use_gpu=True, cpus_per_worker=2),
        embed=r(cfg.embed, num_actors=1, use_gpu=True, cpus_per_actor=2.0),
        select=r(cfg.select, cpus_per_task=0.5, gpus_per_task=1.0, memory_per_task_gb=64.0),
        train=r(cfg.train, checkpoint_every=2, use_gpu=False, cpus_per_worker=2),
        evaluate=r(cfg.evaluate, downstream=r(cfg.evaluate.downstream, cpus_per_task=2)),
    )
    rows = run_pipeline(variant, run)
    assert [r["status"] for r in rows] == ["skipped"] * len(STAGE_NAMES)
    assert {name: (run / name / "_SUCCESS").stat().st_mtime_ns for name in STAGE_NAMES} == before


def test_forced_select_reproduces_the_subset_byte_for_byte_and_reruns_downstream(tiny, tmp_path):
    cfg, shared, _ = tiny
    run = _copy(shared, tmp_path)
    files = ["subset.parquet", "subset_ingenious.parquet", "probabilities.parquet"]
    before = {f: (run / "select" / f).read_bytes() for f in files}
    rows = run_pipeline(cfg, run, force=["select"])
    assert {r["stage"]: r["status"] for r in rows} == {
        "prepare": "skipped",
        "warmstart": "skipped",
        "embed": "skipped",
        "select": "ran",
        "train": "ran",
        "evaluate": "ran",
    }
    assert {f: (run / "select" / f).read_bytes() for f in files} == before


def test_interrupted_select_resumes_only_missing_partitions(tiny, tmp_path):
    cfg, shared, _ = tiny
    run = _copy(shared, tmp_path)
    select = run / "select"
    parts = local_shards(select / "partitions")
    kept = {p: p.stat().st_mtime_ns for p in parts[1:]}
    subset = (select / "subset.parquet").read_bytes()
    (select / "_SUCCESS").unlink()  # as if the stage died after its first partition
    parts[0].unlink()
    (select / "subset.parquet").unlink()
    rows = run_pipeline(cfg, run, only=["select"])
    assert rows == [
        {
            "stage": "select",
            "status": "ran",
            "seconds": rows[0]["seconds"],
            "peak_gb": rows[0]["peak_gb"],
            "written": rows[0]["written"],
        }
    ]
    assert {p: p.stat().st_mtime_ns for p in parts[1:]} == kept
    assert parts[0].exists() and (select / "subset.parquet").read_bytes() == subset


def test_a_stage_alone_needs_its_inputs(tiny, tmp_path):
    cfg, _, _ = tiny
    with pytest.raises(ValueError, match="stage 'embed' needs 'warmstart' finished"):
        run_pipeline(cfg, tmp_path / "empty", only=["embed"])
    with pytest.raises(ValueError, match="unknown stage 'embedd'"):
        run_pipeline(cfg, tmp_path / "empty", force=["embedd"])


def test_cli_reports_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {stpes: 3}\n")
    done = subprocess.run([sys.executable, "-m", "jobs.pipeline", "--config", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "unknown key 'train.stpes' (did you mean 'steps'?)" in done.stderr


def test_gpt2_pipeline_end_to_end(tiny, tmp_path):
    cfg, run, _ = tiny
    gpt2 = dataclasses.replace(
        cfg,
        name="tiny-gpt2",
        model=dataclasses.replace(cfg.model, kind="gpt2"),
        select=dataclasses.replace(cfg.select, strategy="greedi"),
        train=dataclasses.replace(cfg.train, subset="greedi", steps=3, checkpoint_every=3),
    )
    rows = run_pipeline(gpt2, tmp_path / "run")
    assert all(r["status"] == "ran" for r in rows)
    out = tmp_path / "run"
    assert json.loads((out / "embed" / "manifest.json").read_text())["summary"]["pooling"] == "last"
    ids, seqs = read_sequences(out / "prepare" / "sequences")
    eos = load_tokenizer(str(out / "prepare" / "tokenizer"), kind="gpt2").eos_token_id
    assert all(s[-1] == eos for s in seqs if len(s) < cfg.model.seq_len)  # a document's last chunk ends with EOS
    table = pq.read_table(out / "prepare" / "sequences").to_pandas()
    table["ends_with_eos"] = [row[-1] == eos for row in table.input_ids]
    last_chunk = table.groupby("doc_id").chunk.transform("max") == table.chunk
    assert table.ends_with_eos.any() and not (table.ends_with_eos & ~last_chunk).any()  # EOS only closes a document
    for stage in ("warmstart", "train"):  # the saved models name this vocabulary's <|endoftext|>, not GPT-2's 50256
        for name in ("config.json", "generation_config.json"):
            saved = json.loads((out / stage / "model" / name).read_text())
            assert saved["bos_token_id"] == saved["eos_token_id"] == eos, (stage, name)
    subset = pq.read_table(out / "select" / "subset.parquet").to_pandas()
    assert list(subset.columns) == ["sequence_id", "rank", "gain"]
    assert len(subset) == round(cfg.select.fraction * len(ids))
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert all(1 < m["perplexity"] < 10_000 for m in metrics.values())


def test_progress_lines_and_gather_order(ray_cluster, capsys):
    from jobs.executor import Executor, track

    assert Executor().gather([ray_cluster.put(i * i) for i in range(5)], "squares", "tasks") == [0, 1, 4, 9, 16]
    assert list(track(iter("abc"), 3, "letters", "items")) == ["a", "b", "c"]
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[ingenious] squares: 5/5 tasks (100%)") for line in lines)
    assert lines[-1].startswith("[ingenious] letters: 3/3 items (100%)")


def test_refresh_embeds_exactly_the_new_sequences(tiny, tmp_path):
    from jobs.refresh import refresh

    cfg, run, _ = tiny
    docs = list(islice(read_documents(BUILTIN_WIKI), 264))
    old, extra = docs[:240], docs[240:]  # the tiny corpus, then 24 documents it never had (10%)
    rng = np.random.default_rng(0)
    deleted = set(rng.choice(len(old), 12, replace=False).tolist())  # 5% of the documents go away
    snapshot = tmp_path / "snapshot.jsonl"
    with snapshot.open("w") as f:
        for doc in [d for i, d in enumerate(old) if i not in deleted] + extra:
            f.write(json.dumps({"id": doc.doc_id, "text": doc.text}) + "\n")
    diff = refresh(run, str(snapshot), out=tmp_path / "versions")
    version = tmp_path / "versions" / diff["snapshot"]

    old_ids, _ = read_sequences(run / "prepare" / "sequences")
    new_ids, _ = read_sequences(version / "prepare" / "sequences")
    added = np.setdiff1d(new_ids, old_ids)
    assert len(added) > 0 and len(np.setdiff1d(old_ids, new_ids)) > 0
    assert diff["embedding"] == {
        "reused": len(new_ids) - len(added),
        "embedded_now": len(added),
        "written": "part-*.parquet (sequence_id, embedding)",
    }
    assert diff["pool"] == {
        "before": len(old_ids),
        "after": len(new_ids),
        "kept": len(new_ids) - len(added),
        "added": len(added),
        "dropped": len(old_ids) - (len(new_ids) - len(added)),
    }
    old_vec = dict(zip(*read_embeddings(local_shards(run / "embed"))))
    new_emb_ids, new_emb = read_embeddings(local_shards(version / "embed"))
    assert sorted(new_emb_ids.tolist()) == sorted(new_ids.tolist())  # deleted ones dropped, every new one there
    for sid, vec in zip(new_emb_ids, new_emb):
        if sid in old_vec:
            assert np.array_equal(vec, old_vec[sid])  # reused byte for byte
    assert (version / "select" / "_SUCCESS").exists() and (version / "diff.md").exists()
    assert 0 < diff["coverage"]["new_subset_on_new_pool"] <= 1.0001

    files = {p: p.stat().st_mtime_ns for p in version.rglob("*") if p.is_file()}
    assert refresh(run, str(snapshot), out=tmp_path / "versions") == json.loads((version / "diff.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in version.rglob("*") if p.is_file()} == files  # idempotent

    # Other embedding settings (the first layer instead of the last): nothing can be reused.
    other = tmp_path / "other.yaml"
    other.write_text((run / "config.yaml").read_text().replace("layer: -1", "layer: 1"))
    diff = refresh(run, str(snapshot), out=tmp_path / "versions", config=other)
    assert diff["embedding"]["reused"] == 0 and diff["embedding"]["embedded_now"] == len(new_ids)


def test_the_reports_draw_0_row_is_the_ingenious_subset_whatever_the_strategy(tiny, tmp_path):
    """The row once read subset.parquet, the configured strategy's copy: with strategy greedi it
    compared GreeDi with itself. Here subset.parquet is made a different (smaller) set."""
    from dataio.rundir import RunDir
    from reporting.report import subset_quality

    _, run, _ = tiny
    for name in ("embed", "select"):
        shutil.copytree(run / name, tmp_path / "run" / name)
    subset = pq.read_table(tmp_path / "run" / "select" / "subset.parquet")
    pq.write_table(subset.slice(0, len(subset) // 2), tmp_path / "run" / "select" / "subset.parquet")
    ingenious = len(pq.read_table(run / "select" / "subset_ingenious.parquet"))
    _, scores = subset_quality(RunDir(tmp_path / "run"), tmp_path)
    assert scores["ingenious (draw 0)"]["size"] == ingenious == len(subset)


def test_report_renders_in_headless_chromium(tiny, tmp_path):
    from PIL import Image

    from reporting.report import build_report

    _, run, _ = tiny
    page = Path(build_report(run, tmp_path / "report"))
    text = page.read_text()
    for png in ("gains.png", "projection.png", "partition_seconds.png", "training.png"):
        assert f'src="{png}"' in text and (tmp_path / "report" / png).stat().st_size > 5000
    for heading in ("Subset", "Coverage against random subsets", "Time and memory", "Evaluation", "Config"):
        assert f"<h2>{heading}" in text
    assert "| model (mean ± t 95% CI over seeds) | sst2 | average |" in text  # the downstream table
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium on this machine: the report was built but not rendered")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,2600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert image.shape[:2] == (2600, 1100)
    assert image.std() > 20  # text, tables and plots, not a blank or error page
    reds = (image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert reds.sum() > 50  # the selected points of the projection plot were drawn


def test_select_refuses_more_partitions_than_sequences_and_mixed_dimensions(tiny, tmp_path):
    from dataio.rundir import embedding_table, write_parquet

    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    too_many = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, num_partitions=100_000))
    with pytest.raises(ValueError, match=r"select.num_partitions=100000 is larger than the pool \(\d+ sequences"):
        run_pipeline(too_many, copy, only=["select"])
    assert (copy / "embed" / "_SUCCESS").exists()  # nothing upstream was touched
    # Embedding shards from two encoders (one shard rewritten wider): the partition step names the file.
    from jobs.stages.selection_pool import partition

    files = local_shards(copy / "embed")
    ids, emb = read_embeddings(files[-1:])
    write_parquet(embedding_table(ids, np.ones((len(ids), emb.shape[1] + 3), np.float32)), files[-1])
    with pytest.raises(
        ValueError,
        match=rf"{files[-1].name}: embedding dimension {emb.shape[1] + 3} differs from "
        rf"{emb.shape[1]}",
    ):
        partition([str(f) for f in files], cfg.select)


def test_a_budget_that_rounds_to_nothing_stops_right_after_prepare(tiny, tmp_path):
    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    for stage in ("warmstart", "embed", "select", "train", "evaluate"):
        shutil.rmtree(copy / stage)
    tiny_fraction = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, fraction=0.0001))
    with pytest.raises(ValueError, match=r"select.fraction=0.0001 of \d+ sequences selects nothing"):
        run_pipeline(tiny_fraction, copy)
    assert (copy / "prepare" / "_SUCCESS").exists()
    assert not (copy / "warmstart").exists()  # found before the warm start and the embedding pass were paid for


# The run directory keeps its promises: reproducible from scratch, nothing stale counts as done,
# torn files do not block resume, one run per run directory, nothing the run did not write is deleted.


def test_from_scratch_twice_gives_the_same_bytes(tiny, tmp_path):
    """A second run of the same config and seed in an empty run directory (another tokenizer
    training, warm start, embedding and selection): the same tokenizer, pool and subsets."""
    cfg, run, _ = tiny
    rows = run_pipeline(cfg, tmp_path / "again", only=["prepare", "warmstart", "embed", "select"])
    assert [r["status"] for r in rows] == ["ran"] * 4
    again = tmp_path / "again"
    same = [
        "prepare/tokenizer/tokenizer.json",
        *(f"select/{f}" for f in ("subset.parquet", "subset_ingenious.parquet", "probabilities.parquet")),
    ]  # (no merge: ingenious)
    same += [str(p.relative_to(run)) for p in local_shards(run / "prepare" / "sequences")]
    for name in same:
        assert (again / name).read_bytes() == (run / name).read_bytes(), name


def test_a_corpus_rewritten_in_place_reruns_prepare(tiny, tmp_path):
    cfg, _, _ = tiny
    corpus = write_corpus(tmp_path / "corpus.jsonl", 60)
    small = dataclasses.replace(cfg, corpus=dataclasses.replace(cfg.corpus, source=str(corpus)))
    run_pipeline(small, tmp_path / "run", only=["prepare"])
    before = read_sequences(tmp_path / "run" / "prepare" / "sequences")[0]
    text = corpus.read_text()
    corpus.write_text(text.replace("a", "e", 1))  # the same name and size, one letter changed
    assert [r["status"] for r in run_pipeline(small, tmp_path / "run", only=["prepare"])] == ["ran"]
    assert not np.array_equal(read_sequences(tmp_path / "run" / "prepare" / "sequences")[0], before)


def test_a_forced_prepare_makes_everything_after_it_stale(tiny, tmp_path):
    """`ingenious prepare --force` alone: the next invocation does not take warmstart, embed or
    select as done over a pool they were not made from."""
    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    assert [r["status"] for r in run_pipeline(cfg, copy, only=["prepare"], force=["prepare"])] == ["ran"]
    with pytest.raises(ValueError, match="needs 'warmstart' finished .*its input 'prepare' changed since it ran"):
        run_pipeline(cfg, copy, only=["embed"])


def test_a_truncated_output_makes_its_stage_run_again(tiny, tmp_path, capsys):
    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    subset = copy / "select" / "subset.parquet"
    subset.write_bytes(subset.read_bytes()[:-100])
    rows = run_pipeline(cfg, copy, only=["select"])
    assert rows[0]["status"] == "ran"
    assert f"{subset} changed since the stage finished" in capsys.readouterr().out
    assert subset.read_bytes() == (run / "select" / "subset.parquet").read_bytes()


@pytest.mark.parametrize("torn", ["", '{"stage": "sel'], ids=["empty", "torn"])
def test_an_empty_or_torn_manifest_is_unfinished_work(tiny, tmp_path, torn):
    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    (copy / "select" / "manifest.json").write_text(torn)
    assert RunDir(copy).why_not_done("select", stage_hashes(cfg)["select"]).endswith("is missing, empty or torn")
    assert [r["status"] for r in run_pipeline(cfg, copy, only=["select"])] == ["ran"]  # no --force needed
    assert (copy / "select" / "subset.parquet").read_bytes() == (run / "select" / "subset.parquet").read_bytes()


def test_a_manifest_that_cannot_be_read_is_an_error_never_a_missing_one(tiny, tmp_path):
    """A storage error reading a manifest (here: the path is a folder; a permission error or a 5xx reads
    the same) stops the run, naming the file: taking it for a missing manifest would clear a finished stage."""
    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    (copy / "select" / "manifest.json").unlink()
    (copy / "select" / "manifest.json").mkdir()
    with pytest.raises(ValueError, match=r"manifest.json: cannot be read \(.*is a directory"):
        run_pipeline(cfg, copy, only=["select"])
    assert (copy / "select" / "subset.parquet").read_bytes() == (run / "select" / "subset.parquet").read_bytes()


def test_a_folder_the_run_did_not_write_is_never_deleted(tiny, tmp_path):
    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    shutil.rmtree(copy / "train")
    (copy / "train").mkdir()
    (copy / "train" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=f"{copy / 'train'} was not written by a pipeline run"):
        run_pipeline(cfg, copy, only=["train"])
    assert (copy / "train" / "notes.txt").read_text() == "mine"


HOLD_LEASE = (
    "import sys, time; from dataio.lease import Lease; Lease(sys.argv[1], ttl_s=2, renew_s=0.5).acquire(); "
    "print('held', flush=True); time.sleep(600)"
)


def test_one_run_per_run_directory(tiny, tmp_path):
    """A second run on a run directory in use stops at once, naming the holder; the lease of a
    holder that died is taken over once it expires (the holder's own expiry, not its PID, decides)."""
    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LEASE, str(copy)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"in use by another run: host {socket.gethostname()}, pid {holder.pid}"):
            run_pipeline(cfg, copy)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(2.5)  # the dead holder's lease expires unrenewed
    assert [r["status"] for r in run_pipeline(cfg, copy, only=["prepare"])] == ["skipped"]  # a dead holder's lease
    assert not (copy / "lease.json").exists()


# SemDeDup and D4 in the centred embedding space (selection/dedup.py, selection/space.py).


@pytest.fixture(scope="module")
def dedup_runs(tiny, tmp_path_factory):
    """The tiny run's selection with strategy semdedup, also d4, center: true, once with one concurrent
    task (then training on the d4 subset) and once with four."""
    cfg, run, _ = tiny
    r = dataclasses.replace
    runs = {}
    for name, cpus in (("one", 2.0), ("four", 0.5)):
        copy = tmp_path_factory.mktemp("dedup") / "run"
        shutil.copytree(run, copy)
        variant = r(
            cfg,
            select=r(cfg.select, strategy="semdedup", also=["d4"], center=True, cpus_per_task=cpus),
            train=r(cfg.train, subset="d4"),
        )
        stages = ["select", "train"] if name == "one" else ["select"]
        rows = run_pipeline(variant, copy, only=stages)
        assert [row["status"] for row in rows] == ["ran"] * len(stages)
        runs[name] = (variant, copy, json.loads((copy / "select" / "manifest.json").read_text())["summary"])
    return runs


def in_process_dedup(run, scfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(SemDeDup kept ids, SemDeDup subset, D4 subset) recomputed in one process from the pure functions,
    in the centred space fitted from the shards' moments in shard order."""
    from selection.dedup import dedup_to_ratio, prune_prototypical, score_cluster, semdedup_keep, semdedup_subset
    from selection.space import fit_space, moments

    files = local_shards(run / "embed")
    total = moments(read_embeddings(files[:1])[1])
    for f in files[1:]:
        total = total + moments(read_embeddings([f])[1])
    space = fit_space(total, whiten=scfg.whiten, eps=scfg.whiten_eps)
    emb_ids, emb = read_embeddings(files)
    xn = normalize_embeddings(space.apply(emb))
    centroids = spherical_kmeans(xn[np.argsort(emb_ids, kind="stable")], scfg.num_partitions, seed=scfg.seed)
    clusters = nearest_centroid(xn, centroids)
    max_size = math.ceil(scfg.max_partition_factor * len(emb_ids) / scfg.num_partitions)
    parts = split_oversized(emb_ids, clusters, np.bincount(clusters, minlength=len(centroids)), max_size, scfg.seed)
    scored = [score_cluster(emb_ids[parts == p], xn[parts == p]) for p in np.unique(parts)]
    ids = np.concatenate([s.sequence_ids for s in scored])
    scores = np.concatenate([s.duplicate_score for s in scored])
    budget = round(scfg.fraction * len(ids))
    kept = ids[semdedup_keep(scores, scfg.dedup_threshold)]
    d4_kept, _ = dedup_to_ratio(ids, scores, round(scfg.d4_dedup_keep * len(ids)))
    d4_kept = np.sort(d4_kept)
    kx = xn[rows_of_ids(d4_kept, emb_ids)]
    d4_centroids = spherical_kmeans(kx, scfg.d4_clusters or scfg.num_partitions, seed=scfg.seed)
    sims = (kx @ d4_centroids.T)[np.arange(len(kx)), nearest_centroid(kx, d4_centroids)]
    return kept, semdedup_subset(kept, budget, scfg.seed), d4_kept[prune_prototypical(d4_kept, sims, budget)]


def rows_of_ids(ids, among):
    from selection.ids import rows_of

    return rows_of(ids, among, where="the embeddings")


def test_semdedup_and_d4_files_sizes_and_in_process_equality(dedup_runs):
    variant, copy, summary = dedup_runs["one"]
    select = copy / "select"
    budget = summary["budget"]
    semdedup = pq.read_table(select / "subset_semdedup.parquet")
    d4 = pq.read_table(select / "subset_d4.parquet")
    assert semdedup.column_names == ["sequence_id", "cluster", "centroid_similarity", "duplicate_score"]
    assert d4.column_names == ["sequence_id", "rank", "cluster", "centroid_similarity"]
    assert (select / "subset.parquet").read_bytes() == (select / "subset_semdedup.parquet").read_bytes()
    kept, semdedup_ids, d4_ids = in_process_dedup(copy, variant.select)
    assert summary["semdedup_kept"] == len(kept) and summary["semdedup_subset"] == min(len(kept), budget)
    assert summary["semdedup_shortfall"] == budget - min(len(kept), budget)
    assert semdedup.column("sequence_id").to_numpy().tolist() == semdedup_ids.tolist()
    assert (semdedup.column("duplicate_score").to_numpy() <= variant.select.dedup_threshold).all()
    assert len(d4) == budget == summary["d4_subset"] and d4.column("sequence_id").to_numpy().tolist() == d4_ids.tolist()
    assert np.all(np.diff(d4.column("centroid_similarity").to_numpy()) >= 0)  # least prototypical first
    assert summary["space"]["center"] and not summary["space"]["whiten"] and summary["space"]["mean_norm"] > 0
    assert summary["phases_run"] == ["partition", "greedy", "dedup"]
    assert len(local_shards(select / "dedup")) == summary["partitions"] and not (select / "scatter").exists()


def test_semdedup_and_d4_do_not_depend_on_the_number_of_tasks(dedup_runs):
    _, one, _ = dedup_runs["one"]
    _, four, _ = dedup_runs["four"]
    for f in ("subset.parquet", "subset_semdedup.parquet", "subset_d4.parquet", "probabilities.parquet"):
        assert (one / "select" / f).read_bytes() == (four / "select" / f).read_bytes(), f


def test_training_on_the_d4_subset(dedup_runs):
    variant, copy, _ = dedup_runs["one"]
    lines = [json.loads(x) for x in (copy / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, variant.train.steps + 1))
    assert all(np.isfinite(m["loss"]) for m in lines)
    assert json.loads((copy / "train" / "manifest.json").read_text())["summary"]["subset"] == "d4"


def test_interrupted_dedup_resumes_only_missing_clusters(dedup_runs, tmp_path):
    variant, shared, _ = dedup_runs["four"]
    copy = _copy(shared, tmp_path)
    select = copy / "select"
    parts = local_shards(select / "dedup")
    kept = {p: p.stat().st_mtime_ns for p in parts[1:]}
    before = {f: (select / f).read_bytes() for f in ("subset_semdedup.parquet", "subset_d4.parquet")}
    (select / "_SUCCESS").unlink()  # as if the stage died after its first cluster
    parts[0].unlink()
    assert run_pipeline(variant, copy, only=["select"])[0]["status"] == "ran"
    assert {p: p.stat().st_mtime_ns for p in parts[1:]} == kept and parts[0].exists()
    assert {f: (select / f).read_bytes() for f in before} == before


def test_the_embedding_space_refuses_mixed_dimensions(tiny, tmp_path):
    from dataio.rundir import embedding_table, write_parquet
    from jobs.stages.selection_pool import embedding_space

    cfg, run, _ = tiny
    copy = _copy(run, tmp_path)
    files = local_shards(copy / "embed")
    scfg = dataclasses.replace(cfg.select, center=True)
    space, info = embedding_space([str(f) for f in files], scfg)
    _, emb = read_embeddings(files)
    np.testing.assert_allclose(space.mean, emb.astype(np.float64).mean(axis=0), rtol=1e-9, atol=1e-12)
    assert info["center"] and not info["whiten"]
    ids, emb = read_embeddings(files[-1:])
    write_parquet(embedding_table(ids, np.ones((len(ids), emb.shape[1] + 3), np.float32)), files[-1])
    with pytest.raises(ValueError, match=rf"{files[-1].name}: embedding dimension {emb.shape[1] + 3} differs from"):
        embedding_space([str(f) for f in files], scfg)
