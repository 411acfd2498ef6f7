"""Ray tasks for selection. Only ids, labels, gains, sparse edges and a serialized candidate index
travel between them; embeddings are read from the shards by the task that needs them, and each
embedding shard is scattered once into per-partition files, so a partition task reads only its
own rows and no node ever holds every embedding.
"""
from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import ray
import scipy.sparse as sp

from dataio.rundir import embedding_table, read_embeddings, write_parquet, write_shard_log
from selection.knn import KnnParams, build_index, normalize_embeddings, search_index, to_graph
from selection.partition import nearest_centroid, splitmix64
from selection.shard import merge_select, order_shard


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
def scatter_shard(embed_file: str, partitions: np.ndarray, out_dir: str) -> int:
    """Write one embedding shard's rows into out_dir/p-XXXXX/<shard name>, one file per partition."""
    ids, emb = read_embeddings([Path(embed_file)])
    name = Path(embed_file).name
    for p in np.unique(partitions):
        rows = partitions == p
        write_parquet(embedding_table(ids[rows], emb[rows]), Path(out_dir) / f"p-{p:05d}" / name)
    (Path(out_dir) / f"_done-{name}").write_text("")  # written last: this shard is fully scattered
    return len(ids)


@ray.remote
def order_partition(
    partition: int, folder: str, knn_k: int, params: KnnParams, optimizer: str, epsilon: float, seed: int,
    out_path: str,
) -> dict:
    start = time.perf_counter()
    ids, emb = read_embeddings(sorted(Path(folder).glob("*.parquet")))
    try:
        result = order_shard(ids, emb, knn_k, params=params, optimizer=optimizer, epsilon=epsilon, seed=seed + partition)
    except ValueError as e:
        raise ValueError(f"selection partition {partition} ({folder}): {e}") from None
    write_parquet(pa.table({
        "sequence_id": pa.array(result.sequence_ids, pa.int64()),
        "shard": pa.array(np.full(len(ids), partition), pa.int32()),
        "rank": pa.array(np.arange(len(ids)), pa.int64()),
        "gain": pa.array(result.gains, pa.float64()),
    }), out_path)
    stats = {"partition": partition, "size": len(ids), "objective": result.objective, "knn_recall": result.knn_recall,
             "seconds": time.perf_counter() - start}
    write_shard_log(out_path, stats)
    return stats


@ray.remote
def candidate_index(embed_files: list[str], candidate_ids: np.ndarray, params: KnnParams) -> np.ndarray:
    """Build the merge candidates' index once (candidates in id order) and ship it serialized."""
    ids, emb = read_embeddings([Path(f) for f in embed_files], keep=candidate_ids)
    emb = normalize_embeddings(emb[np.argsort(ids, kind="stable")])
    return faiss.serialize_index(build_index(emb, params))


@ray.remote
def candidate_edges(embed_file: str, index_bytes: np.ndarray, knn_k: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """For every point of one shard, its k most similar merge candidates: (point ids, CSR rows)."""
    index = faiss.deserialize_index(index_bytes)
    ids, emb = read_embeddings([Path(embed_file)])
    sims, nbrs = search_index(index, normalize_embeddings(emb, embed_file), min(knn_k, index.ntotal))
    return ids, to_graph(sims, nbrs, index.ntotal).matrix


@ray.remote
def merge_round(budget: int, local: np.ndarray, *blocks: tuple[np.ndarray, sp.csr_matrix]) -> dict:
    start = time.perf_counter()
    order, gains, local_won = merge_select(list(blocks), budget, local)
    return {"order": order, "gains": gains, "objective": float(gains.sum()), "local_won": local_won,
            "points": sum(len(b[0]) for b in blocks), "seconds": time.perf_counter() - start}
