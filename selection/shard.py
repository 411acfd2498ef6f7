"""Selection on one partition, and the GreeDi merge round over the partitions' candidates.

A partition's sequences are put in sequence-id order first so the greedy order (and its ties)
depend only on the data, never on how the rows arrived.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from selection.facility_location import FacilityLocation
from selection.greedy import lazy_greedy, stochastic_greedy
from selection.knn import (
    KnnGraph,
    KnnParams,
    knn_graph,
    knn_recall,
    knn_search,
    normalize_embeddings,
    to_graph,
)

OPTIMIZERS = ("lazy", "stochastic")


@dataclass(frozen=True)
class ShardSelection:
    """The full greedy order of one partition: ids in insertion order and their marginal gains."""

    sequence_ids: np.ndarray  # int64, greedy order
    gains: np.ndarray  # float64, gain at insertion (non-increasing)
    objective: float  # f(whole shard) over the shard's own graph
    knn_recall: float | None = None  # approximate graphs only: share of exact neighbours found


def order_shard(
    sequence_ids: np.ndarray, embeddings: np.ndarray, knn_k: int, *, params: KnnParams = KnnParams(),
    optimizer: str = "lazy", epsilon: float = 0.01, seed: int = 0,
) -> ShardSelection:
    """Greedy-order every element of a partition on its kNN graph."""
    if len(sequence_ids) != len(embeddings):
        raise ValueError(f"{len(sequence_ids)} sequence ids but {len(embeddings)} embeddings")
    if len(np.unique(sequence_ids)) != len(sequence_ids):
        raise ValueError("duplicate sequence ids in a partition")
    by_id = np.argsort(sequence_ids, kind="stable")
    ids, emb = np.asarray(sequence_ids)[by_id], embeddings[by_id]
    k = min(knn_k, len(ids))  # a partition smaller than k simply keeps every pair
    graph = knn_graph(emb, k, params)
    recall = knn_recall(emb, graph, k, sample=200) if params.method in ("ivf", "hnsw") else None
    objective = FacilityLocation(graph)
    if optimizer == "lazy":
        order, gains = lazy_greedy(objective, len(ids))
    elif optimizer == "stochastic":
        order, gains = stochastic_greedy(objective, len(ids), epsilon=epsilon, seed=seed)
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    return ShardSelection(ids[order], gains, float(gains.sum()), recall)


def greedi_candidates(shard_size: int, budget: int, total: int, oversample: float) -> int:
    """How many of a partition's greedy prefix go to the merge: its share of the budget, oversampled."""
    return min(shard_size, math.ceil(oversample * budget * shard_size / total))


def candidate_graph(embeddings: np.ndarray, candidates: np.ndarray, knn_k: int, params: KnnParams = KnnParams()) -> sp.csr_matrix:
    """Rows: the given points; columns: merge candidates (normalised); each row keeps its k best."""
    sims, nbrs = knn_search(normalize_embeddings(embeddings), candidates, min(knn_k, len(candidates)), params)
    return to_graph(sims, nbrs, len(candidates)).matrix


def merge_select(
    blocks: list[tuple[np.ndarray, sp.csr_matrix]], budget: int, local: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """GreeDi's merge round with an objective over every point: blocks of (point ids, rows of the
    points-to-candidates graph), from any number of shards in any order.

    `local` (candidate indices) is the best partition's own greedy solution; as in RandGreeDi the
    round keeps it when it beats the merged one under the same objective. Returns (candidate
    indices in greedy order, their gains, whether the local solution won)."""
    ids = np.concatenate([b[0] for b in blocks])
    graph = sp.vstack([b[1] for b in blocks]).tocsr()[np.argsort(ids, kind="stable")]  # rows in id order
    objective = FacilityLocation(KnnGraph(graph))
    order, gains = lazy_greedy(objective, budget)
    if local is not None and len(local) and objective.evaluate(local) > gains.sum():
        cover = objective.empty_cover()
        local_gains = []
        for j in local:
            local_gains.append(objective.gain(cover, int(j)))
            objective.add(cover, int(j))
        return np.asarray(local, dtype=np.int64), np.array(local_gains), True
    return order, gains, False
