"""Selection on one partition, and the GreeDi merge round over the partitions' candidates.

A partition's sequences are put in sequence-id order first so the greedy order (and its ties)
depend only on the data, never on how the rows arrived.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from selection.facility_location import FacilityLocation
from selection.greedy import lazy_greedy
from selection.knn import knn_graph


@dataclass(frozen=True)
class ShardSelection:
    """The full greedy order of one partition: ids in insertion order and their marginal gains."""

    sequence_ids: np.ndarray  # int64, greedy order
    gains: np.ndarray  # float64, gain at insertion (non-increasing)
    objective: float  # f(whole shard) over the shard's own graph


def order_shard(sequence_ids: np.ndarray, embeddings: np.ndarray, knn_k: int) -> ShardSelection:
    """Greedy-order every element of a partition on its exact kNN graph."""
    if len(sequence_ids) != len(embeddings):
        raise ValueError(f"{len(sequence_ids)} sequence ids but {len(embeddings)} embeddings")
    if len(np.unique(sequence_ids)) != len(sequence_ids):
        raise ValueError("duplicate sequence ids in a partition")
    by_id = np.argsort(sequence_ids, kind="stable")
    ids, emb = np.asarray(sequence_ids)[by_id], embeddings[by_id]
    objective = FacilityLocation(knn_graph(emb, min(knn_k, len(ids))))
    order, gains = lazy_greedy(objective, len(ids))
    return ShardSelection(ids[order], gains, float(gains.sum()))


def greedi_candidates(shard_size: int, budget: int, total: int, oversample: float) -> int:
    """How many of a partition's greedy prefix go to the merge: its share of the budget, oversampled."""
    return min(shard_size, math.ceil(oversample * budget * shard_size / total))


def greedi_merge(
    candidate_ids: np.ndarray, candidate_embeddings: np.ndarray, budget: int, knn_k: int
) -> ShardSelection:
    """The merge round: greedy to `budget` over the union of the partitions' candidates."""
    if budget > len(candidate_ids):
        raise ValueError(f"merge budget {budget} exceeds the {len(candidate_ids)} candidates")
    by_id = np.argsort(candidate_ids, kind="stable")
    ids, emb = np.asarray(candidate_ids)[by_id], candidate_embeddings[by_id]
    objective = FacilityLocation(knn_graph(emb, min(knn_k, len(ids))))
    order, gains = lazy_greedy(objective, budget)
    return ShardSelection(ids[order], gains, float(gains.sum()))
