"""Ray tasks for selection. Only ids, labels, gains, sparse edges and a serialized candidate index
travel between them; embeddings are read from the shards by the task that needs them, and each
embedding shard is copied once with its rows grouped by partition (a Parquet row group each), so
a partition task reads only its own rows and no node ever holds every embedding.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import ray
import scipy.sparse as sp

from actors.device import granted_device, on_granted_device
from dataio import uri as U
from dataio.contracts import shard_name
from dataio.rundir import embedding_table, read_embeddings, read_table, write_parquet, write_shard_log
from selection.dedup import score_cluster
from selection.ids import id_hash, rows_of
from selection.knn import KnnParams, build_index, index_on, index_to_cpu, normalize_embeddings, search_index
from selection.merge import candidate_edges as threshold_edges
from selection.merge import merge_group, merge_select
from selection.partition import group_bounds, nearest_centroid
from selection.shard import order_shard
from selection.space import Moments, Space, apply_space, moments

try:
    import faiss
except ModuleNotFoundError as e:  # the base install leaves the choice of build to the `cpu` / `gpu` extra
    raise ModuleNotFoundError(
        "faiss is not installed: pip install 'ingenious-ray[cpu]' (faiss-cpu), or '[gpu]' (faiss-gpu) on GPU nodes"
    ) from e


@ray.remote
def shard_moments(embed_file: str) -> Moments:
    """One shard's share of the pool's mean and covariance (the embedding space's map step)."""
    return moments(read_embeddings([embed_file])[1])


@ray.remote
def sample_embeddings(
    embed_file: str, rate: float, seed: int, space: Space | None = None, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A hash-chosen sample of one shard (of its ids in `keep`, if given), the same rows whichever
    worker reads it, normalised in the selection space."""
    ids, emb = read_embeddings([embed_file], keep=keep)
    emb = apply_space(space, emb)
    chosen = np.ones(len(ids), dtype=bool)
    if rate < 1.0:
        with np.errstate(over="ignore"):
            chosen = id_hash(ids, seed) < np.uint64(int(rate * 2**64))
    return ids[chosen], normalize_embeddings(emb[chosen], embed_file) if chosen.any() else emb[:0]


@ray.remote
def assign_clusters(
    embed_file: str, centroids: np.ndarray, space: Space | None = None
) -> tuple[np.ndarray, np.ndarray]:
    ids, emb = read_embeddings([embed_file])
    return ids, nearest_centroid(normalize_embeddings(apply_space(space, emb), embed_file), centroids)


@ray.remote
def centroid_similarity(
    embed_file: str, centroids: np.ndarray, space: Space | None, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, nearest centroid, similarity to it) of one shard's rows whose ids are in `keep` (D4's pruning)."""
    ids, emb = read_embeddings([embed_file], keep=keep)
    if not len(ids):
        return ids, np.empty(0, np.int64), np.empty(0, np.float32)
    sims = normalize_embeddings(apply_space(space, emb), embed_file) @ centroids.T
    nearest = np.argmax(sims, axis=1)
    return ids, nearest.astype(np.int64), sims[np.arange(len(ids)), nearest]


@ray.remote
def scatter_shard(
    embed_file: str, partitions: np.ndarray, out_dir: str, space: Space | None = None, keep: np.ndarray | None = None
) -> int:
    """Copy one embedding shard (its rows whose ids are in `keep`, if given) to out_dir/<shard name>
    with its rows grouped by partition, one Parquet row group per partition, so a partition task reads
    only its own row group of each shard (one file per shard and partition cost 25 ms a file: 1,280
    files at 1M points in 64 partitions). The copy holds the embeddings in the selection space (not yet
    normalised)."""
    ids, emb = read_embeddings([embed_file], keep=keep)
    emb = apply_space(space, emb)
    order = np.argsort(partitions, kind="stable")
    part = partitions[order].astype(np.int32)
    table = embedding_table(ids[order], emb[order]).append_column("partition", pa.array(part))
    # Atomic: a scattered shard is there whole or not at all. Float vectors do not compress.
    with U.parquet_writer(U.join(out_dir, U.name(embed_file)), table.schema, compression="none") as writer:
        for start, stop in zip(*group_bounds(part)):
            writer.write_table(table.slice(start, stop - start))
    return len(ids)


def read_partition(scatter_dir: str, partition: int) -> tuple[np.ndarray, np.ndarray]:
    """One partition's (ids, embeddings) from every scattered shard (its row group of each)."""
    return read_embeddings(U.list_files(scatter_dir, "*.parquet"), filters=[("partition", "==", partition)])


@ray.remote
def order_partition(
    partition: int,
    scatter_dir: str,
    knn_k: int,
    params: KnnParams,
    optimizer: str,
    epsilon: float,
    seed: int,
    out_path: str,
) -> dict:
    start = time.perf_counter()
    params = on_granted_device(params)
    ids, emb = read_partition(scatter_dir, partition)
    try:
        result = order_shard(
            ids, emb, knn_k, params=params, optimizer=optimizer, epsilon=epsilon, seed=seed + partition
        )
    except ValueError as e:
        raise ValueError(f"selection partition {partition} ({scatter_dir}): {e}") from e
    write_parquet(
        pa.table(
            {
                "sequence_id": pa.array(result.sequence_ids, pa.int64()),
                "shard": pa.array(np.full(len(ids), partition), pa.int32()),
                "rank": pa.array(np.arange(len(ids)), pa.int64()),
                "gain": pa.array(result.gains, pa.float64()),
                "kth_similarity": pa.array(result.kth_similarity, pa.float32()),
            }
        ),
        out_path,
    )
    stats = {
        "partition": partition,
        "size": len(ids),
        "objective": result.objective,
        "knn_recall": result.knn_recall,
        "knn_device": params.device,
        "seconds": time.perf_counter() - start,
    }
    write_shard_log(out_path, stats)
    return stats


@ray.remote
def candidate_index(
    embed_files: list[str], candidate_ids: np.ndarray, params: KnnParams, space: Space | None = None
) -> np.ndarray:
    """Build the merge candidates' index once (candidates in id order), on the granted device, and ship
    it serialized."""
    params = on_granted_device(params)
    ids, emb = read_embeddings(embed_files, keep=candidate_ids)
    emb = normalize_embeddings(apply_space(space, emb[np.argsort(ids, kind="stable")]))
    return faiss.serialize_index(index_to_cpu(build_index(emb, params)))  # a GPU index cannot be serialised


@ray.remote
def candidate_edges(
    embed_file: str,
    index_bytes: np.ndarray,
    knn_k: int,
    thresholds: tuple[np.ndarray, np.ndarray],
    space: Space | None = None,
) -> tuple[np.ndarray, sp.csr_matrix]:
    """For every point of one shard, its k most similar merge candidates above its own k-th
    neighbour's similarity: (point ids, CSR rows). `thresholds` is (every sequence id, sorted;
    its threshold)."""
    index = index_on(faiss.deserialize_index(index_bytes), granted_device().type)
    ids, emb = read_embeddings([embed_file])
    queries = normalize_embeddings(apply_space(space, emb), embed_file)
    sims, nbrs = search_index(index, queries, min(knn_k, index.ntotal))
    own = thresholds[1][rows_of(ids, thresholds[0], where=f"the selection results ({embed_file})")]
    return ids, threshold_edges(sims, nbrs, index.ntotal, own)


@ray.remote
def dedup_partition(partition: int, scatter_dir: str, out_path: str) -> dict:
    """SemDeDup scores of one cluster partition (its rows of the scattered shards), written to out_path."""
    start = time.perf_counter()
    ids, emb = read_partition(scatter_dir, partition)
    scores = score_cluster(ids, normalize_embeddings(emb, f"selection partition {partition}"))
    write_parquet(
        pa.table(
            {
                "sequence_id": pa.array(scores.sequence_ids, pa.int64()),
                "cluster": pa.array(np.full(len(ids), partition), pa.int32()),
                "centroid_similarity": pa.array(scores.centroid_similarity, pa.float32()),
                "duplicate_score": pa.array(scores.duplicate_score, pa.float32()),
            }
        ),
        out_path,
    )
    stats = {"partition": partition, "size": len(ids), "seconds": time.perf_counter() - start}
    write_shard_log(out_path, stats)
    return stats


@ray.remote
def group_merge(
    partitions: list[int],
    scatter_dir: str,
    partitions_dir: str,
    candidates: list[int],
    keep: int,
    knn_k: int,
    params: KnnParams,
) -> np.ndarray:
    """A round before the last: merge a group of partitions' candidates (each partition's greedy
    prefix of the given length) into `keep`, judged on the group's own points."""
    ids, emb, thresholds, candidate_ids = [], [], [], []
    for p, c in zip(partitions, candidates):
        part_ids, part_emb = read_partition(scatter_dir, p)
        ordered = read_table(U.join(partitions_dir, shard_name(p)), ["sequence_id", "kth_similarity"])
        ordered_ids = ordered.column("sequence_id").to_numpy()
        ids.append(part_ids)
        emb.append(part_emb)
        thresholds.append(
            ordered.column("kth_similarity").to_numpy()[
                rows_of(part_ids, ordered_ids, where=f"partition {p}'s selection results")
            ]
        )
        candidate_ids.append(ordered_ids[:c])
    return merge_group(
        np.concatenate(ids),
        np.concatenate(emb),
        np.concatenate(thresholds),
        np.concatenate(candidate_ids),
        keep,
        knn_k,
        on_granted_device(params),
    )


@ray.remote
def merge_round(budget: int, local: np.ndarray, *blocks: tuple[np.ndarray, sp.csr_matrix]) -> dict:
    start = time.perf_counter()
    order, gains, local_won = merge_select(list(blocks), budget, local)
    return {
        "order": order,
        "gains": gains,
        "objective": float(gains.sum()),
        "local_won": local_won,
        "points": sum(len(b[0]) for b in blocks),
        "seconds": time.perf_counter() - start,
    }
