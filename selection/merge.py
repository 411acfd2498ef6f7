"""The GreeDi merge round (Mirzasoleiman et al. 2013; RandGreeDi, Barbosa et al. 2015), made to
judge candidates on every point and to scale past what one task can hold.

Two objectives. `merge_by_gain`: the sum of the partitions' own kNN objectives. Greedy on a sum of
functions over disjoint ground sets takes, at every step, the best next element of some partition,
and each partition's sequence is its own greedy order with its own gains: so the exact greedy is a
merge of the partitions' orders by gain, and needs nothing but the gains the partition tasks wrote.
The other, below, covers every point through candidates from any partition.

Candidates: each partition sends the prefix of its greedy order, its budget share times an
oversampling factor. The merge objective covers every point, through each point's nearest
candidates, but only through those at least as similar as the point's own k-th nearest neighbour
(its `threshold`, from its partition's kNN graph): an edge the kNN graph of the whole pool would
not hold is dropped, so the merge maximises (nearly) the objective central greedy maximises.
Without that floor, a point far from every candidate still counts its best candidate, and the
merge trades the kNN objective for the dense one (bench/selection.py measured 0.79 of central
greedy's kNN advantage without it, 0.99 with it, at n = 100k).

When the candidates exceed what one task should hold (`max_candidates`), partitions are merged in
groups first (each group keeps its proportional part of `max_candidates`, judged on the group's own
points), and the last round takes the union of the groups' choices.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from selection.facility_location import FacilityLocation
from selection.greedy import lazy_greedy
from selection.knn import KnnGraph, KnnParams, knn_search, normalize_embeddings, to_graph

# Similarities of one pair computed by two different searches (the partition's graph, the
# candidates' index) can differ in the last float32 bits; an edge within this of the threshold stays.
THRESHOLD_SLACK = 1e-6


def merge_by_gain(ids: np.ndarray, gains: np.ndarray, budget: int) -> np.ndarray:
    """Rows of the `budget` elements greedy on the union of the partitions' objectives picks, in
    pick order. `ids`/`gains` are the partitions' greedy orders concatenated (partition by partition,
    each in rank order, gains non-increasing); ties go to the earlier row."""
    if not 1 <= budget <= len(ids):
        raise ValueError(f"merge budget must be in [1, {len(ids)}], got {budget}")
    return np.argsort(-np.asarray(gains), kind="stable")[:budget]


def candidate_count(partition_size: int, budget: int, total: int, oversample: float) -> int:
    """How many of a partition's greedy prefix go to the merge: its share of the budget, oversampled."""
    return min(partition_size, math.ceil(oversample * budget * partition_size / total))


def kth_similarity(graph: KnnGraph, k: int) -> np.ndarray:
    """Per row of a partition's own kNN graph, the similarity of its k-th neighbour: the floor for
    the merge's edges. 0 where the row holds fewer than k positive similarities (the pool's k-th
    neighbour is then unknown, or not similar at all)."""
    m = graph.matrix
    counts = np.diff(m.indptr)
    mins = np.zeros(m.shape[0], dtype=np.float32)
    nonempty = counts > 0
    if nonempty.any():  # reduceat over the non-empty rows only: each segment ends where the next starts
        mins[nonempty] = np.minimum.reduceat(m.data, m.indptr[:-1][nonempty])
    return np.where(counts >= k, mins, np.float32(0.0))


def candidate_edges(
    sims: np.ndarray, nbrs: np.ndarray, num_candidates: int, thresholds: np.ndarray | None
) -> sp.csr_matrix:
    """Points-to-candidates graph from a search, each point's edges below its threshold dropped."""
    if thresholds is not None:
        sims = np.where(sims >= thresholds[:, None].astype(np.float32) - THRESHOLD_SLACK, sims, 0.0)
    return to_graph(sims, nbrs, num_candidates).matrix


def candidate_graph(
    embeddings: np.ndarray,
    candidates: np.ndarray,
    knn_k: int,
    params: KnnParams = KnnParams(),
    thresholds: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Rows: the given points; columns: merge candidates (normalised); each row keeps its k best
    (above its threshold, when given)."""
    sims, nbrs = knn_search(normalize_embeddings(embeddings), candidates, min(knn_k, len(candidates)), params)
    return candidate_edges(sims, nbrs, len(candidates), thresholds)


def merge_select(
    blocks: list[tuple[np.ndarray, sp.csr_matrix]], budget: int, local: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """A merge round with an objective over every point: blocks of (point ids, rows of the
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


def merge_groups(candidates: list[int], max_candidates: int) -> list[list[int]]:
    """Consecutive partitions packed into groups of at most `max_candidates` candidates each (a
    partition with more than that is a group of its own)."""
    groups: list[list[int]] = []
    held = 0
    for p, c in enumerate(candidates):
        if not groups or held + c > max_candidates:
            groups.append([])
            held = 0
        groups[-1].append(p)
        held += c
    return groups


def group_keep(
    candidates: int, points: int, total_candidates: int, max_candidates: int, budget: int, total: int
) -> int:
    """How many of its candidates a group passes to the last round: its proportional part of
    `max_candidates`, never below its share of the budget, never above what it has."""
    share = math.ceil(budget * points / total)
    return min(candidates, max(share, candidates * max_candidates // total_candidates))


def merge_group(
    ids: np.ndarray,
    embeddings: np.ndarray,
    thresholds: np.ndarray,
    candidate_ids: np.ndarray,
    keep: int,
    knn_k: int,
    params: KnnParams = KnnParams(),
) -> np.ndarray:
    """One group's merge in a round before the last: greedy over the group's candidates, judged on
    the group's own points (each through its nearest candidates above its threshold). Returns the
    `keep` chosen candidate ids in greedy order; the result depends only on the group's data."""
    by_id = np.argsort(ids, kind="stable")
    ids, emb, thresholds = ids[by_id], normalize_embeddings(embeddings[by_id]), thresholds[by_id]
    candidate_ids = np.sort(candidate_ids)
    rows = np.searchsorted(ids, candidate_ids)
    if len(candidate_ids) and (rows.max() >= len(ids) or not np.array_equal(ids[rows], candidate_ids)):
        raise ValueError("merge group: some candidates are not among the group's points")
    sims, nbrs = knn_search(emb, np.ascontiguousarray(emb[rows]), min(knn_k, len(rows)), params)
    order, _, _ = merge_select([(ids, candidate_edges(sims, nbrs, len(rows), thresholds))], keep)
    return candidate_ids[order]
