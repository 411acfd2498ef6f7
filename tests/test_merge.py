"""The GreeDi merge round: edge floors, groups of partitions, and its quality against central greedy (no Ray)."""

import math

import numpy as np
import scipy.sparse as sp

from selection.facility_location import FacilityLocation
from selection.greedy import lazy_greedy
from selection.knn import KnnGraph, knn_graph, normalize_embeddings
from selection.merge import (
    candidate_count,
    candidate_graph,
    group_keep,
    kth_similarity,
    merge_by_gain,
    merge_group,
    merge_groups,
    merge_select,
)
from selection.partition import nearest_centroid, spherical_kmeans
from selection.shard import order_shard


def clustered(n: int, d: int = 16, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    return normalize_embeddings(centers[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, d)))


def test_kth_similarity_is_the_kth_largest_cosine():
    x = clustered(300, seed=1)
    k = 7
    floors = kth_similarity(knn_graph(x, k), k)
    brute = np.sort(x @ x.T, axis=1)[:, -k]  # the k-th largest similarity of each row, itself included
    np.testing.assert_allclose(floors, np.clip(brute, 0, None), atol=1e-6)
    assert (kth_similarity(knn_graph(x[:5], 5), k) == 0).all()  # fewer than k points: no floor


def test_floored_merge_over_every_point_equals_central_greedy():
    """Every point a candidate, floors from the pool's own graph: the merge objective is the kNN
    objective itself, so the merge must pick exactly what central greedy picks."""
    x = clustered(400, seed=2)
    k, budget = 10, 60
    graph = knn_graph(x, k)
    central, central_gains = lazy_greedy(FacilityLocation(graph), budget)
    floors = kth_similarity(graph, k)
    blocks = [
        (np.arange(s, s + 100), candidate_graph(x[s : s + 100], x, k, thresholds=floors[s : s + 100]))
        for s in range(0, 400, 100)
    ]
    order, gains, _ = merge_select(blocks[::-1], budget)
    assert order.tolist() == central.tolist()
    # Two FAISS searches over different query blocks round float32 similarities differently.
    np.testing.assert_allclose(gains, central_gains, rtol=1e-5)


def test_merge_groups_and_group_keep():
    counts = [30, 50, 20, 70, 10, 90]
    groups = merge_groups(counts, 100)
    assert groups == [[0, 1, 2], [3, 4], [5]]  # consecutive, at most 100 candidates each
    assert merge_groups([150, 10], 100) == [[0], [1]]  # an oversized partition is a group of its own
    total, budget, n = sum(counts), 120, 1000
    keep = [group_keep(sum(counts[i] for i in g), 400, total, 200, budget, n) for g in groups]
    assert keep == [100 * 200 // 270, 80 * 200 // 270, 90 * 200 // 270]
    assert group_keep(10, 500, 1000, 200, 120, 1000) == 10  # never more than the group has
    assert group_keep(100, 500, 1000, 100, 120, 1000) == 60  # never below its budget share
    assert candidate_count(1000, 250, 10_000, 2.0) == 50 and candidate_count(10, 250, 100, 2.0) == 10


def test_merge_group_is_the_merge_over_the_groups_own_points_in_any_row_order():
    x = clustered(300, seed=3)
    ids = np.random.default_rng(0).permutation(300).astype(np.int64) * 11 + 5
    floors = kth_similarity(knn_graph(x, 8), 8)
    candidates = ids[::3]
    chosen = merge_group(ids, x, floors, candidates, 40, 8)
    perm = np.random.default_rng(1).permutation(300)
    assert merge_group(ids[perm], x[perm], floors[perm], candidates[::-1], 40, 8).tolist() == chosen.tolist()
    # The reference: points in id order, candidates in id order, one merge round.
    by_id = np.argsort(ids)
    cand_sorted = np.sort(candidates)
    cand_rows = np.searchsorted(ids[by_id], cand_sorted)
    graph = candidate_graph(x[by_id], x[by_id][cand_rows], 8, thresholds=floors[by_id])
    order, _, _ = merge_select([(ids[by_id], graph)], 40)
    assert chosen.tolist() == cand_sorted[order].tolist()


def test_floored_merge_keeps_central_greedys_advantage_on_the_knn_objective():
    """The design's measurement in miniature: cluster shards, candidates from each shard's greedy
    prefix, the merge over every point. With edge floors it keeps (nearly) all of central greedy's
    advantage over random on the kNN objective; without them it gives much of it away."""
    x = clustered(3000, clusters=30, seed=4)
    k, budget, shards = 10, 300, 6
    graph = knn_graph(x, k)
    full = FacilityLocation(graph)
    central = full.evaluate(lazy_greedy(full, budget)[0])
    rng = np.random.default_rng(0)
    random_value = np.mean([full.evaluate(rng.choice(3000, budget, replace=False)) for _ in range(5)])
    parts = nearest_centroid(x, spherical_kmeans(x, shards, seed=0))
    candidates, floors = [], np.zeros(3000, dtype=np.float32)
    for p in np.unique(parts):
        members = np.flatnonzero(parts == p)
        result = order_shard(members, x[members], k)
        candidates.append(result.sequence_ids[: candidate_count(len(members), budget, 3000, 2.0)])
        floors[result.sequence_ids] = result.kth_similarity
    candidates = np.sort(np.concatenate(candidates))

    def kept(thresholds) -> float:
        order, _, _ = merge_select(
            [(np.arange(3000), candidate_graph(x, x[candidates], k, thresholds=thresholds))], budget
        )
        return (full.evaluate(candidates[order]) - random_value) / (central - random_value)

    floored, unfloored = kept(floors), kept(None)
    assert floored > 0.95
    assert floored > unfloored + 0.05
    assert math.isfinite(unfloored)


def test_merge_by_gain_is_greedy_on_the_union_of_the_partitions_objectives():
    """The fast path against the reference: lazy greedy on the block-diagonal union of the
    partitions' own graphs picks, in order, what the merge of their greedy orders by gain picks."""
    x = clustered(600, seed=5)
    parts = nearest_centroid(x, spherical_kmeans(x, 4, seed=0))
    graphs, ids, gains = [], [], []
    for p in np.unique(parts):
        members = np.flatnonzero(parts == p)
        graph = knn_graph(x[members], 8)
        order, g = lazy_greedy(FacilityLocation(graph), len(members))
        graphs.append(graph.matrix)
        ids.append(members[order])
        gains.append(g)
    members = np.concatenate([np.flatnonzero(parts == p) for p in np.unique(parts)])  # block order
    union = FacilityLocation(KnnGraph(sp.block_diag(graphs, format="csr")))
    reference, reference_gains = lazy_greedy(union, 150)
    rows = merge_by_gain(np.concatenate(ids), np.concatenate(gains), 150)
    assert np.concatenate(ids)[rows].tolist() == members[reference].tolist()
    np.testing.assert_array_equal(np.concatenate(gains)[rows], reference_gains)
