"""Project selection to the paper's pool from costs measured on this machine, one core per task.

    python -m bench.project            # about 5 minutes on 2 cores

Measures, single-threaded (a Ray task holds one CPU), at three sizes each so every cost's growth
law is fitted rather than guessed:
- a partition task (IVF kNN graph + recall sample + lazy greedy over the whole partition) at the
  paper's dimension 768 and partitions of 6.9k, 13.9k and 27.7k points (the paper's P = 1500 blocks);
- one embedding-shard pass (read, normalise, nearest centroid, scatter) per 50k rows at d = 768;
- the `all_points` GreeDi last round: candidate index, every point's nearest candidates
  (merge_nprobe cells), and the merge greedy, at n = 12.5k, 25k and 50k points with n / 2 candidates
  (the default `partitions` merge is a sort of the gains: nothing to project);
- BERT-base embedding (the embed stage's forward pass) in sequences per second per core.
Then prints the projection for 41.5M sequences of 768-d embeddings on 1, 8 and 64 nodes.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from bench.common import markdown_table, write_result
from dataio.rundir import embedding_table, read_embeddings, write_parquet
from selection.facility_location import FacilityLocation
from selection.greedy import lazy_greedy
from selection.knn import KnnGraph, KnnParams, build_index, normalize_embeddings, search_index
from selection.merge import candidate_edges
from selection.partition import nearest_centroid
from selection.shard import order_shard

PAPER_N, PAPER_D, PAPER_PARTITION, FRACTION = 41_500_000, 768, 27_700, 0.25
SHARD = 50_000
CORES_PER_NODE = 32  # assumed: a node = 16 of this machine's 2 cores, each as fast as these


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, d)).astype(np.float32)
    x = centres[rng.integers(100, size=n)] + 1.2 * rng.standard_normal((n, d), dtype=np.float32)
    return normalize_embeddings(x)


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def fit(sizes: list[float], seconds: list[float]) -> tuple[float, float]:
    """(a, b) of seconds = a * size^b, least squares in log-log."""
    b, log_a = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return math.exp(log_a), b


def partition_costs(knn_k: int) -> list[tuple[int, float]]:
    rows = []
    for size in (PAPER_PARTITION // 4, PAPER_PARTITION // 2, PAPER_PARTITION):
        x = clustered(size, PAPER_D, seed=size)
        _, secs = timed(lambda: order_shard(np.arange(size), x, knn_k, params=KnnParams(method="ivf", nprobe=8)))
        rows.append((size, secs))
        print(f"partition task: {size} points, d={PAPER_D}, k={knn_k}: {secs:.2f} s", flush=True)
    return rows


def shard_pass_seconds() -> float:
    """One embedding shard through the partition phase: it is read three times (k-means sample,
    centroid assignment, scatter), assigned to 1500 centroids and written once, by partition."""
    x = clustered(SHARD, PAPER_D, seed=1)
    ids = np.arange(SHARD, dtype=np.int64)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "part-00000.parquet"
        write_parquet(embedding_table(ids, x), path)
        (_, emb), read_s = timed(lambda: read_embeddings([path]))
        centroids = clustered(1500, PAPER_D, seed=2)
        labels, assign_s = timed(lambda: nearest_centroid(normalize_embeddings(emb), centroids))
        order = np.argsort(labels, kind="stable")
        cuts = np.flatnonzero(np.diff(labels[order])) + 1

        def scatter() -> None:
            for p, rows in enumerate(np.split(order, cuts)):
                write_parquet(embedding_table(ids[rows], emb[rows]), Path(folder) / f"p-{p:05d}" / path.name)

        _, write_s = timed(scatter)
    total = 3 * read_s + assign_s + write_s
    print(
        f"embedding shard pass: {SHARD} rows, d={PAPER_D}: read {read_s:.2f} s x 3, assign {assign_s:.2f} s, "
        f"scatter {write_s:.2f} s = {total:.2f} s",
        flush=True,
    )
    return total


def merge_costs(knn_k: int) -> list[dict]:
    rows = []
    for n in (12_500, 25_000, 50_000):
        x = clustered(n, PAPER_D, seed=n + 1)
        candidates = np.sort(np.random.default_rng(0).choice(n, n // 2, replace=False))
        index, index_s = timed(lambda: build_index(x[candidates], KnnParams(method="ivf", nprobe=4)))
        (sims, nbrs), search_s = timed(lambda: search_index(index, x, knn_k))
        graph = candidate_edges(sims, nbrs, len(candidates), None)  # floors only thin the edges: no cost
        _, greedy_s = timed(lambda: lazy_greedy(FacilityLocation(KnnGraph(graph)), round(FRACTION * n)))
        rows.append({"n": n, "index_s": index_s, "search_s": search_s, "greedy_s": greedy_s})
        print(
            f"merge round: {n} points, {len(candidates)} candidates: index {index_s:.2f} s, "
            f"search {search_s:.2f} s, greedy {greedy_s:.2f} s",
            flush=True,
        )
    return rows


def embed_rate() -> float:
    """BERT-base sequences (128 tokens) embedded per second on one core (random init: speed only)."""
    from training.embed import embed_batch
    from training.model import ModelConfig, build_model

    model = build_model(ModelConfig(kind="bert"), vocab_size=30522, pad_id=0).eval()
    ids = torch.randint(1000, 30522, (16, 128))
    mask = torch.ones_like(ids)
    embed_batch(model.bert, ids, mask, pooling="mean", layer=9)  # warm-up
    _, secs = timed(lambda: [embed_batch(model.bert, ids, mask, pooling="mean", layer=9) for _ in range(2)])
    rate = 32 / secs
    print(f"embedding: bert-base, 128 tokens, one core: {rate:.1f} sequences/s", flush=True)
    return rate


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def project(partition: list[tuple[int, float]], shard_s: float, merge: list[dict], embed_per_s: float) -> dict:
    a, b = fit([s for s, _ in partition], [t for _, t in partition])
    ns = [r["n"] for r in merge]
    search_a, search_b = fit(ns, [r["search_s"] for r in merge])
    index_a, index_b = fit([n / 2 for n in ns], [r["index_s"] for r in merge])
    greedy_a, greedy_b = fit(ns, [r["greedy_s"] for r in merge])
    n, budget = PAPER_N, FRACTION * PAPER_N
    partitions = math.ceil(n / PAPER_PARTITION)
    candidates = 2 * budget  # greedi_oversample 2
    print(
        f"\ngrowth laws (seconds on one core): partition task {a:.2e} * size^{b:.2f}; merge search "
        f"{search_a:.2e} * n^{search_b:.2f} (n/2 candidates); candidate index {index_a:.2e} * C^{index_b:.2f}; "
        f"merge greedy {greedy_a:.2e} * n^{greedy_b:.2f}"
    )
    title = (
        f"## Projection: {n / 1e6:.1f}M sequences, d={PAPER_D}, {partitions} partitions of {PAPER_PARTITION}, "
        f"25% budget, {CORES_PER_NODE} cores a node"
    )
    costs = {
        "embed (bert-base forward, CPU)": n / embed_per_s,
        "partition + scatter": n / SHARD * shard_s,
        "kNN graphs + greedy (all partitions)": partitions * a * PAPER_PARTITION**b,
        "greedi `all_points` merge: every point's nearest candidates": search_a * n**search_b,
    }
    serial = {
        "greedi `all_points` merge: candidate index + greedy (one task each)": index_a * candidates**index_b
        + greedy_a * n**greedy_b
    }
    rows = [
        [name, f"{core_s / 3600:,.1f}", *(hours(core_s / (CORES_PER_NODE * k)) for k in (1, 8, 64))]
        for name, core_s in costs.items()
    ] + [[name, f"{secs / 3600:,.1f}", *(hours(secs) for _ in range(3))] for name, secs in serial.items()]
    laws = {
        "partition_task": [a, b],
        "merge_search": [search_a, search_b],
        "candidate_index": [index_a, index_b],
        "merge_greedy": [greedy_a, greedy_b],
    }
    measured = (
        "Measured, one core: partition task "
        + " / ".join(f"{t:.1f} s" for _, t in partition)
        + " at "
        + " / ".join(f"{size:,}" for size, _ in partition)
        + f" points (fit size^{b:.2f}); embedding-shard pass {shard_s:.1f} s per {SHARD:,} rows; merge search "
        + " / ".join(f"{r['search_s']:.1f} s" for r in merge)
        + " at "
        + " / ".join(f"{r['n']:,}" for r in merge)
        + f" points (fit n^{search_b:.2f}); candidate index C^{index_b:.2f}; merge greedy n^{greedy_b:.2f}; "
        f"bert-base embedding {embed_per_s:.1f} sequences/s."
    )
    table = (
        title
        + "\n\n"
        + measured
        + "\n\n"
        + markdown_table(["stage", "core-hours", "1 node", "8 nodes", "64 nodes"], rows)
    )
    print("\n" + table, flush=True)
    return {
        "paper_sequences": n,
        "d": PAPER_D,
        "partition_size": PAPER_PARTITION,
        "cores_per_node": CORES_PER_NODE,
        "partition_costs": [{"size": size, "seconds": t} for size, t in partition],
        "shard_pass_s": shard_s,
        "merge_costs": merge,
        "embed_sequences_per_s": embed_per_s,
        "growth_laws": laws,
        "core_hours": {name: secs / 3600 for name, secs in {**costs, **serial}.items()},
        "table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knn-k", type=int, default=20)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    result = project(partition_costs(args.knn_k), shard_pass_seconds(), merge_costs(args.knn_k), embed_rate())
    table = result.pop("table")
    write_result("project", {"knn_k": args.knn_k, **result}, table)


if __name__ == "__main__":
    main()
