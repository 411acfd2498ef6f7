"""Diagnostics of an embedding space, each against a brute-force reference on the full n x n similarity."""

import numpy as np
import pytest

from selection.diagnostics import (
    auc,
    clean_similarity_auc,
    composition,
    knn_purity,
    near_duplicate_recall,
    nearest_similarity,
    neighbours,
)

CATS = np.array(["clean", "near_duplicate", "boilerplate", "garbage"])


def pool(seed: int = 0, n: int = 240, d: int = 12):
    """Clustered points by category, and copies of some clean points with noise (their groups)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CATS), d)) * 1.5
    cats = CATS[rng.choice(len(CATS), size=n, p=[0.45, 0.25, 0.15, 0.15])]
    x = centres[[list(CATS).index(c) for c in cats]] + rng.normal(size=(n, d))
    groups = np.full(n, -1)
    clean = np.flatnonzero(cats == "clean")
    for i, row in enumerate(np.flatnonzero(cats == "near_duplicate")):
        source = clean[i % 20]  # 20 sources, a few copies each
        noise = 0.05 if i % 3 else 2.0  # every third copy is hard to find
        x[row] = x[source] + rng.normal(size=d) * noise
        groups[row] = groups[source] = source
    return x.astype(np.float32), cats, groups


def dense(x: np.ndarray) -> np.ndarray:
    xn = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    return xn @ xn.T


def ref_neighbours(x: np.ndarray, k: int) -> list[list[int]]:
    s = dense(x)
    np.fill_diagonal(s, -np.inf)
    return [list(np.argsort(-row, kind="stable")[:k]) for row in s]


def test_neighbours_equal_the_dense_reference():
    x, _, _ = pool()
    for k in (1, 5, 10):
        assert neighbours(x, k).tolist() == ref_neighbours(x, k)
    twins = np.repeat(x[:5], 2, axis=0)  # exact duplicates: self may come second, never kept
    nb = neighbours(twins, 3)
    assert not (nb == np.arange(10)[:, None]).any()
    assert (nb[:, 0] == np.arange(10) ^ 1).all()


def test_near_duplicate_recall_equals_the_reference():
    x, cats, groups = pool()
    for k in (1, 3, 10):
        found = near_duplicate_recall(neighbours(x, k), groups, cats == "near_duplicate")
        nb = ref_neighbours(x, k)
        rows = [i for i in range(len(x)) if cats[i] == "near_duplicate" and groups[i] >= 0]
        hits = [any(groups[j] == groups[i] for j in nb[i]) for i in rows]
        assert found == {"recall": pytest.approx(np.mean(hits)), "queries": len(rows)}
        assert 0.5 < found["recall"] < 1.0  # the hard copies are missed
    alone = np.where(np.arange(len(x)) == 7, 99, -1)  # a group of one has nothing to find
    assert near_duplicate_recall(neighbours(x, 3), alone)["queries"] == 0
    everyone = near_duplicate_recall(neighbours(x, 3), groups)  # sources are queries too
    assert everyone["queries"] == int((groups >= 0).sum())


def test_knn_purity_equals_the_reference():
    x, cats, _ = pool(1)
    k = 7
    purity = knn_purity(neighbours(x, k), cats)
    nb = ref_neighbours(x, k)
    for c in CATS:
        rows = np.flatnonzero(cats == c)
        assert purity[c] == pytest.approx(np.mean([np.mean(cats[nb[i]] == c) for i in rows]))
    assert set(purity) == set(CATS)


def test_clean_similarity_auc_equals_the_reference():
    x, cats, _ = pool(2)
    s = dense(x)
    clean = np.flatnonzero(cats == "clean")
    ref_score = np.array([max(s[i, j] for j in clean if j != i) for i in range(len(x))])
    np.testing.assert_allclose(nearest_similarity(x, cats == "clean"), ref_score, atol=1e-5)
    found = clean_similarity_auc(x, cats)
    assert set(found) == {"near_duplicate", "boilerplate", "garbage"}
    for c, value in found.items():
        pairs = [(a > b) + 0.5 * (a == b) for a in ref_score[clean] for b in ref_score[cats == c]]
        assert value == pytest.approx(np.mean(pairs), abs=1e-6)
    assert found["near_duplicate"] < 0.5 < found["garbage"]  # copies sit nearer clean text; noise farther


def test_auc_counts_ties_half():
    assert auc(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == 1.0
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert auc(np.array([0.0, 2.0]), np.array([1.0, 1.0, 2.0])) == pytest.approx((0 + 0 + 0 + 1 + 1 + 0.5) / 6)


def test_composition_against_counting():
    ids = np.array([10, 11, 12, 13, 14, 15])
    cats = np.array(["clean", "clean", "junk", "junk", "junk", "dup"])
    found = composition(np.array([12, 10, 10, 15]), ids, cats)
    assert found == {
        "clean": {"subset": 0.5, "pool": 2 / 6},
        "dup": {"subset": 0.25, "pool": 1 / 6},
        "junk": {"subset": 0.25, "pool": 0.5},
    }


def test_bad_input_is_named():
    x, cats, groups = pool()
    with pytest.raises(ValueError, match=r"neighbours: k=240 must be in \[1, 239\]"):
        neighbours(x, 240)
    with pytest.raises(ValueError, match="knn_purity: categories: expected one label per item"):
        knn_purity(neighbours(x, 2), cats[:-1])
    with pytest.raises(ValueError, match="no item of category 'clean'"):
        clean_similarity_auc(x, np.where(cats == "clean", "other", cats))
    with pytest.raises(ValueError, match="composition: the pool's ids"):
        composition(np.array([999]), np.arange(len(x)), cats)
    with pytest.raises(ValueError, match="neighbours: embeddings: 1 rows have zero norm"):
        neighbours(np.vstack([x, np.zeros((1, x.shape[1]), np.float32)]), 2)
