"""Selection math against brute-force references and submodlib (no Ray)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from selection.facility_location import FacilityLocation
from selection.greedy import lazy_greedy, naive_greedy
from selection.knn import KnnGraph, dense_graph, knn_graph, normalize_embeddings
from selection.merge import candidate_graph, merge_select
from selection.partition import random_partition
from selection.sampling import draw_subset, partition_budgets, taylor_softmax
from selection.shard import order_shard


def clustered(n: int, d: int = 16, clusters: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    return (centers[rng.integers(clusters, size=n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def brute_force_objective(x: np.ndarray, subset, k: int) -> float:
    """f(A) = sum_i max_{j in A, j in kNN(i)} max(0, cos(i, j)), straight from the definition."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    total = 0.0
    for i in range(len(x)):
        nbrs = set(np.argsort(-sims[i], kind="stable")[:k].tolist()) | {i}
        best = max([max(0.0, float(sims[i, j])) for j in subset if j in nbrs], default=0.0)
        total += best
    return total


def test_objective_matches_brute_force_dense_and_sparse():
    x = clustered(40, seed=1)
    dense = FacilityLocation(dense_graph(x))
    for subset in ([0], [3, 7, 11], list(range(0, 40, 3))):
        assert dense.evaluate(subset) == pytest.approx(brute_force_objective(x, subset, 40), rel=1e-5)
    sparse = FacilityLocation(knn_graph(x, 6))
    for subset in ([0], [3, 7, 11], list(range(0, 40, 3))):
        assert sparse.evaluate(subset) == pytest.approx(brute_force_objective(x, subset, 6), rel=1e-5)


def test_gain_is_difference_of_objective():
    x = clustered(30, seed=2)
    f = FacilityLocation(knn_graph(x, 5))
    cover = f.empty_cover()
    chosen = [4, 17]
    for j in chosen:
        f.add(cover, j)
    for j in range(30):
        assert f.gain(cover, j) == pytest.approx(f.evaluate(chosen + [j]) - f.evaluate(chosen), abs=1e-9)


def test_objective_equals_submodlib():
    submodlib = pytest.importorskip("submodlib")
    x = clustered(60, seed=3)
    graph = dense_graph(x)
    ours = FacilityLocation(graph)
    theirs = submodlib.FacilityLocationFunction(
        n=60, mode="dense", separate_rep=False, sijs=graph.matrix.toarray().astype(np.float64)
    )
    rng = np.random.default_rng(0)
    for size in (1, 5, 20, 60):
        subset = rng.choice(60, size=size, replace=False).tolist()
        assert ours.evaluate(subset) == pytest.approx(theirs.evaluate(set(subset)), rel=1e-5)
    # Greedy orders agree with submodlib's naive greedy on the same kernel.
    picked = theirs.maximize(budget=10, optimizer="NaiveGreedy", show_progress=False)
    order, gains = naive_greedy(FacilityLocation(graph), 10)
    assert [p[0] for p in picked] == order.tolist()
    np.testing.assert_allclose([p[1] for p in picked], gains, rtol=1e-4)
    # Sparse mode: submodlib symmetrises a given kernel (s_ij := max(s_ij, s_ji)), so both sides
    # get the symmetrised kNN graph.
    knn = knn_graph(x, 7).matrix
    symmetric = knn.maximum(knn.T).tocsr()
    ours_sparse = FacilityLocation(KnnGraph(symmetric))
    theirs_sparse = submodlib.FacilityLocationFunction(n=60, mode="sparse", sijs=symmetric, num_neighbors=7)
    for size in (1, 5, 20, 60):
        subset = rng.choice(60, size=size, replace=False).tolist()
        assert ours_sparse.evaluate(subset) == pytest.approx(theirs_sparse.evaluate(set(subset)), rel=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_lazy_greedy_equals_naive_greedy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    k = int(rng.integers(1, 12))
    f = FacilityLocation(knn_graph(clustered(n, seed=seed), min(k, n)))
    budget = n if seed % 2 == 0 else max(1, n // 3)
    naive_order, naive_gains = naive_greedy(f, budget)
    lazy_order, lazy_gains = lazy_greedy(f, budget)
    assert lazy_order.tolist() == naive_order.tolist()
    assert np.array_equal(lazy_gains, naive_gains)


def test_lazy_greedy_breaks_ties_by_smallest_index():
    # Four identical columns: every gain ties, so the order must be 0, 1, 2, 3.
    m = sp.csr_matrix(np.eye(4))
    order, gains = lazy_greedy(FacilityLocation(KnnGraph(m)), 4)
    assert order.tolist() == [0, 1, 2, 3]
    assert gains.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_greedy_gains_sum_to_objective_and_do_not_increase():
    x = clustered(200, seed=5)
    f = FacilityLocation(knn_graph(x, 10))
    order, gains = lazy_greedy(f, 200)
    assert sorted(order.tolist()) == list(range(200))
    assert np.all(np.diff(gains) <= 1e-12)
    assert gains.sum() == pytest.approx(f.evaluate(order), rel=1e-9)
    # Greedy's first 20 beat any random 20 on this clustered data.
    rng = np.random.default_rng(0)
    assert f.evaluate(order[:20]) > max(f.evaluate(rng.choice(200, 20, replace=False)) for _ in range(20))


def test_bad_embeddings_and_budgets_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        normalize_embeddings(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="zero norm"):
        normalize_embeddings(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="larger than the shard"):
        knn_graph(clustered(5), 6)
    f = FacilityLocation(knn_graph(clustered(5), 2))
    with pytest.raises(ValueError, match="budget"):
        lazy_greedy(f, 6)


def test_taylor_softmax_matches_paper_formula():
    g = np.array([0.0, 0.5, 2.0])
    w = 1 + g + g**2 / 2
    np.testing.assert_allclose(taylor_softmax(g), w / w.sum())


def test_draw_is_reproducible_and_sized_per_partition():
    rng = np.random.default_rng(0)
    sizes = [37, 50, 13]
    partitions, start = [], 0
    for s in sizes:
        ids = np.arange(start, start + s, dtype=np.int64)
        partitions.append((ids, taylor_softmax(rng.random(s) * 3)))
        start += s
    budget = 25
    a = draw_subset(partitions, budget, seed=7, draw=0)
    b = draw_subset(partitions, budget, seed=7, draw=0)
    c = draw_subset(partitions, budget, seed=7, draw=1)
    assert a.tobytes() == b.tobytes()
    assert a.tolist() != c.tolist()
    assert len(set(a.tolist())) == len(a)
    expected = [9, 13, 3]  # quotas 9.25, 12.5, 3.25: the one left over goes to the largest remainder
    assert partition_budgets(sizes, budget) == expected and len(a) == budget
    for (ids, _), k in zip(partitions, expected):
        assert np.isin(a, ids).sum() == k
    with pytest.raises(ValueError, match="budget"):
        draw_subset(partitions, 101, seed=0, draw=0)


def test_every_draw_has_exactly_the_budget_with_many_partitions():
    # The case: 837 sequences in 60 partitions at 25%; a per-partition round-up drew 238.
    sizes = [14] * 57 + [13, 13, 13]
    assert sum(sizes) == 837
    budget = round(0.25 * 837)
    shares = partition_budgets(sizes, budget)
    assert sum(shares) == budget == 209 and all(0 <= k <= s for k, s in zip(shares, sizes))
    assert shares == partition_budgets(sizes, budget)  # deterministic
    # Equal remainders: the lower partition index wins.
    assert partition_budgets([3, 3, 3], 2) == [1, 1, 0]
    assert partition_budgets([1, 5, 1], 6) == [1, 4, 1] and partition_budgets([2, 2], 4) == [2, 2]
    rng = np.random.default_rng(1)
    for _ in range(200):
        sizes = rng.integers(0, 40, size=rng.integers(1, 70)).tolist()
        if sum(sizes) == 0:
            continue
        budget = int(rng.integers(0, sum(sizes) + 1))
        shares = partition_budgets(sizes, budget)
        assert sum(shares) == budget and all(0 <= k <= s for k, s in zip(shares, sizes))
        assert all(abs(k - s * budget / sum(sizes)) < 1 for k, s in zip(shares, sizes))
    partitions, start = [], 0
    for s in [14] * 57 + [13, 13, 13]:
        partitions.append((np.arange(start, start + s, dtype=np.int64), np.full(s, 1 / s)))
        start += s
    for d in range(3):
        drawn = draw_subset(partitions, 209, seed=4, draw=d)
        assert len(drawn) == 209 and len(set(drawn.tolist())) == 209


def test_nan_or_infinite_gains_are_rejected():
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="1 of 3 gains are NaN or infinite"):
            taylor_softmax(np.array([0.1, bad, 0.2]))


def test_draw_prefers_high_gain_elements():
    ids = np.arange(100, dtype=np.int64)
    probs = taylor_softmax(np.where(ids < 10, 5.0, 0.0))
    counts = np.zeros(100)
    for d in range(200):
        counts[draw_subset([(ids, probs)], 10, seed=1, draw=d)] += 1
    assert counts[:10].mean() > 3 * counts[10:].mean()


def test_random_partition_is_stable_and_balanced():
    ids = np.random.default_rng(0).integers(-(2**62), 2**62, size=20000)
    p = random_partition(ids, 8, seed=3)
    assert p.min() == 0 and p.max() == 7
    assert np.bincount(p).min() > 20000 / 8 * 0.9
    # An id's partition does not depend on which other ids exist or their order.
    assert np.array_equal(random_partition(ids[::-1], 8, 3), p[::-1])
    assert np.array_equal(random_partition(ids[:100], 8, 3), p[:100])
    assert not np.array_equal(random_partition(ids, 8, 4), p)


def test_order_shard_is_independent_of_row_order():
    x = clustered(150, seed=9)
    ids = np.random.default_rng(1).integers(0, 2**60, size=150)
    a = order_shard(ids, x, 8)
    perm = np.random.default_rng(2).permutation(150)
    b = order_shard(ids[perm], x[perm], 8)
    assert a.sequence_ids.tobytes() == b.sequence_ids.tobytes()
    assert a.gains.tobytes() == b.gains.tobytes()


def test_merge_over_all_points_equals_central_greedy_when_every_point_is_a_candidate():
    x = clustered(300, seed=4)
    ids = np.random.default_rng(3).permutation(300).astype(np.int64) * 7  # any ids, any order
    by_id = np.argsort(ids)
    candidates = normalize_embeddings(x[by_id])  # candidates in id order, like the select stage
    blocks = [
        (ids[:120], candidate_graph(x[:120], candidates, 10)),
        (ids[120:], candidate_graph(x[120:], candidates, 10)),
    ]
    order, gains, local_won = merge_select(blocks[::-1], 40)  # block order does not matter
    assert not local_won
    central_order, central_gains = lazy_greedy(FacilityLocation(knn_graph(x[by_id], 10)), 40)
    assert order.tolist() == central_order.tolist()
    np.testing.assert_allclose(gains, central_gains, rtol=1e-9)


def test_stochastic_greedy_reaches_its_guarantee_on_average():
    from selection.greedy import stochastic_greedy

    x = clustered(400, d=24, clusters=20, seed=6)
    f = FacilityLocation(knn_graph(x, 10))
    budget = 40
    greedy_value = f.evaluate(lazy_greedy(f, budget)[0])
    values = []
    for seed in range(10):
        order, gains = stochastic_greedy(f, budget, epsilon=0.1, seed=seed)
        assert len(set(order.tolist())) == budget
        assert gains.sum() == pytest.approx(f.evaluate(order), rel=1e-9)
        values.append(f.evaluate(order))
    # (1 - 1/e - eps) of the optimum in expectation; greedy's value is at most the optimum.
    assert np.mean(values) >= (1 - 1 / math.e - 0.1) * greedy_value
    assert np.mean(values) <= greedy_value * 1.01
    again, _ = stochastic_greedy(f, budget, epsilon=0.1, seed=3)
    assert again.tolist() == stochastic_greedy(f, budget, epsilon=0.1, seed=3)[0].tolist()


def test_knn_methods_against_exact():
    from selection.knn import KnnParams, knn_recall

    x = clustered(3000, d=32, clusters=30, seed=8)
    exact = knn_graph(x, 10)
    torch_graph = knn_graph(x, 10, KnnParams(method="torch", query_block=700, device="cpu"))
    np.testing.assert_allclose(exact.matrix.toarray(), torch_graph.matrix.toarray(), atol=1e-5)
    assert knn_recall(x, exact, 10) == 1.0
    for method in ("ivf", "hnsw"):
        approx = knn_graph(x, 10, KnnParams(method=method, nprobe=8))
        assert knn_recall(x, approx, 10, sample=500) > 0.9
    with pytest.raises(ValueError, match="knn method"):
        KnnParams(method="annoy")


def test_cluster_partition_keeps_clusters_together_and_splits_oversized():
    from selection.partition import nearest_centroid, spherical_kmeans, split_oversized

    x = normalize_embeddings(clustered(2000, d=16, clusters=4, seed=10))
    ids = np.arange(2000, dtype=np.int64) * 13
    centroids = spherical_kmeans(x, 4, seed=0)
    np.testing.assert_array_equal(centroids, spherical_kmeans(x, 4, seed=0))
    labels = nearest_centroid(x, centroids)
    sizes = np.bincount(labels, minlength=4)
    parts = split_oversized(ids, labels, sizes, max_size=400, seed=0)
    assert np.bincount(parts).max() <= 400 * 1.3  # hash split: near the cap, never a whole big cluster
    assert len(np.unique(parts)) == sum(-(-s // 400) for s in sizes)
    for p in np.unique(parts):  # each partition lies inside one cluster
        assert len(np.unique(labels[parts == p])) == 1


def test_cluster_shards_keep_more_of_greedys_advantage_than_random_shards():
    """The design's measurement in miniature: per-shard greedy with cluster shards beats random shards."""
    from selection.partition import nearest_centroid, spherical_kmeans

    x = clustered(4000, d=16, clusters=40, seed=12)
    xn = normalize_embeddings(x)
    full = FacilityLocation(knn_graph(x, 10))
    budget, shards = 400, 8
    central = full.evaluate(lazy_greedy(full, budget)[0])
    rng = np.random.default_rng(0)
    random_value = np.mean([full.evaluate(rng.choice(4000, budget, replace=False)) for _ in range(5)])

    def kept(parts: np.ndarray) -> float:
        chosen = []
        for p in np.unique(parts):
            members = np.flatnonzero(parts == p)
            order = order_shard(members, x[members], 10).sequence_ids
            chosen += order[: math.ceil(len(members) * budget / 4000)].tolist()
        return (full.evaluate(chosen[:budget]) - random_value) / (central - random_value)

    by_cluster = kept(nearest_centroid(xn, spherical_kmeans(xn, shards, seed=0)))
    by_random = kept(random_partition(np.arange(4000), shards, seed=0))
    assert by_cluster > by_random
    assert by_cluster > 0.8


def test_embedding_shards_with_different_dimensions_are_rejected(tmp_path):
    from dataio.rundir import embedding_table, read_embeddings, write_parquet

    write_parquet(embedding_table(np.array([1, 2]), np.ones((2, 4), np.float32)), tmp_path / "part-00000.parquet")
    write_parquet(embedding_table(np.array([3]), np.ones((1, 5), np.float32)), tmp_path / "part-00001.parquet")
    with pytest.raises(ValueError, match=r"part-00001\.parquet: embedding dimension 5 differs from 4"):
        read_embeddings(sorted(tmp_path.glob("*.parquet")))


def test_merge_keeps_a_better_local_solution():
    x = clustered(200, seed=5)
    candidates = normalize_embeddings(x)
    blocks = [(np.arange(200), candidate_graph(x, candidates, 8))]
    merged, gains, _ = merge_select(blocks, 20)
    worse = np.arange(20)  # an arbitrary "local" solution: greedy beats it, so it is not kept
    assert merge_select(blocks, 20, worse)[2] is False
    # Give the local side greedy's own answer with the merge crippled to a budget of 19 plus one:
    order, local_gains, won = merge_select(blocks, 20, merged)
    assert not won and order.tolist() == merged.tolist()
    better_local = np.concatenate([merged, [int(np.setdiff1d(np.arange(200), merged)[0])]])
    order, local_gains, won = merge_select(blocks, 20, better_local)  # 21 elements beat 20
    assert won and order.tolist() == better_local.tolist()
    assert local_gains.sum() == pytest.approx(FacilityLocation(KnnGraph(blocks[0][1])).evaluate(better_local))
