"""Ray tasks for selection. Only ids, labels, gains and sparse edges travel between them; a task
reads the embeddings it needs from the shards itself, so no node holds every embedding.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import scipy.sparse as sp

from dataio.rundir import read_embeddings, write_parquet
from selection.knn import KnnParams, normalize_embeddings
from selection.partition import nearest_centroid, splitmix64
from selection.shard import candidate_graph, merge_select, order_shard


@ray.remote
def sample_embeddings(embed_file: str, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A hash-chosen sample of one shard (the same rows whichever worker reads it)."""
    ids, emb = read_embeddings([Path(embed_file)])
    keep = np.ones(len(ids), dtype=bool)
    if rate < 1.0:
        with np.errstate(over="ignore"):
            keep = splitmix64(ids.astype(np.uint64) ^ splitmix64(np.uint64(seed))) < np.uint64(int(rate * 2**64))
    return ids[keep], normalize_embeddings(emb[keep], embed_file) if keep.any() else emb[:0]


@ray.remote
def assign_clusters(embed_file: str, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, emb = read_embeddings([Path(embed_file)])
    return ids, nearest_centroid(normalize_embeddings(emb, embed_file), centroids)


@ray.remote
def order_partition(
    partition: int, embed_files: list[str], member_ids: np.ndarray, knn_k: int, params: KnnParams,
    optimizer: str, epsilon: float, seed: int, out_path: str,
) -> dict:
    start = time.perf_counter()
    ids, emb = read_embeddings([Path(f) for f in embed_files], keep=member_ids)
    if len(ids) != len(member_ids):
        raise ValueError(f"partition {partition}: {len(member_ids) - len(ids)} sequences have no embedding")
    result = order_shard(ids, emb, knn_k, params=params, optimizer=optimizer, epsilon=epsilon, seed=seed + partition)
    write_parquet(pa.table({
        "sequence_id": pa.array(result.sequence_ids, pa.int64()),
        "shard": pa.array(np.full(len(ids), partition), pa.int32()),
        "rank": pa.array(np.arange(len(ids)), pa.int64()),
        "gain": pa.array(result.gains, pa.float64()),
    }), out_path)
    return {"partition": partition, "size": len(ids), "objective": result.objective,
            "seconds": time.perf_counter() - start}


@ray.remote
def candidate_edges(embed_file: str, candidates: np.ndarray, knn_k: int, params: KnnParams) -> tuple[np.ndarray, sp.csr_matrix]:
    """For every point of one shard, its k most similar merge candidates: (point ids, CSR rows)."""
    ids, emb = read_embeddings([Path(embed_file)])
    return ids, candidate_graph(emb, candidates, knn_k, params)


@ray.remote
def merge_round(budget: int, *blocks: tuple[np.ndarray, sp.csr_matrix]) -> dict:
    start = time.perf_counter()
    order, gains = merge_select(list(blocks), budget)
    return {"order": order, "gains": gains, "objective": float(gains.sum()),
            "points": sum(len(b[0]) for b in blocks), "seconds": time.perf_counter() - start}
