"""Ray tasks for selection: greedy-order one partition, and the GreeDi merge round.

Only a partition's own embeddings are read by its task (filtered from the embedding shards), and
only ids, ranks and gains travel back, so no node ever holds every embedding.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from dataio.rundir import read_embeddings, write_parquet
from selection.shard import greedi_merge, order_shard


@ray.remote
def order_partition(partition: int, embed_files: list[str], member_ids: np.ndarray, knn_k: int, out_path: str) -> dict:
    start = time.perf_counter()
    ids, emb = read_embeddings([Path(f) for f in embed_files], keep=member_ids)
    if len(ids) != len(member_ids):
        raise ValueError(f"partition {partition}: {len(member_ids) - len(ids)} sequences have no embedding")
    result = order_shard(ids, emb, knn_k)
    write_parquet(pa.table({
        "sequence_id": pa.array(result.sequence_ids, pa.int64()),
        "shard": pa.array(np.full(len(ids), partition), pa.int32()),
        "rank": pa.array(np.arange(len(ids)), pa.int64()),
        "gain": pa.array(result.gains, pa.float64()),
    }), out_path)
    return {"partition": partition, "size": len(ids), "objective": result.objective,
            "seconds": time.perf_counter() - start}


@ray.remote
def merge_candidates(embed_files: list[str], candidate_ids: np.ndarray, budget: int, knn_k: int) -> dict:
    start = time.perf_counter()
    ids, emb = read_embeddings([Path(f) for f in embed_files], keep=candidate_ids)
    result = greedi_merge(ids, emb, budget, knn_k)
    return {"sequence_ids": result.sequence_ids, "gains": result.gains, "objective": result.objective,
            "candidates": len(ids), "seconds": time.perf_counter() - start}
