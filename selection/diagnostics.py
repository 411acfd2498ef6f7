"""Judging an embedding space before training on it: does it see redundancy, and where is the junk?

Pure NumPy/FAISS. Similarity is cosine (inner product of L2-normalised rows); "neighbours" are an item's
k most similar other items (itself excluded), by an exact FAISS search.

- `near_duplicate_recall`: the share of grouped items (a near-duplicate and its source passage share a
  group) that have another member of their group among their k nearest neighbours;
- `knn_purity`: per category, the mean share of an item's k nearest neighbours in its own category;
- `clean_similarity_auc`: per category, the AUC of telling it from clean items by the similarity to the
  nearest clean item (other than itself): P(clean item's score > the category's item's score), ties
  half. 1: the category sits farther from clean text than any clean item does; 0.5: indistinguishable;
  below 0.5: nearer to clean text than clean text is to itself (copies of clean passages);
- `composition`: the share of each category in a subset and in the pool.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy.stats import rankdata

from selection.ids import rows_of
from selection.knn import knn_search, normalize_embeddings


def neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """int64 (n, k): each row's k most similar other rows (cosine), most similar first."""
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"neighbours: k={k} must be in [1, {n - 1}] (the items other than one)")
    xn = normalize_embeddings(x, "neighbours: embeddings")
    _, found = knn_search(xn, xn, k + 1)
    is_self = found == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True  # self not returned (exact duplicates): drop the last instead
    return found[~is_self].reshape(n, k)


def near_duplicate_recall(nbrs: np.ndarray, groups: np.ndarray, queries: np.ndarray | None = None) -> dict:
    """{"recall", "queries"}: the share of query items whose neighbours `nbrs` include another member of
    their group. Queries: the items of `queries` (a boolean mask; default all) with a group (>= 0) that has
    another member. Recall is NaN without any query."""
    groups = _labels(groups, len(nbrs), "near_duplicate_recall: groups")
    mask = np.ones(len(nbrs), bool) if queries is None else _labels(queries, len(nbrs), "queries").astype(bool)
    sizes = Counter(groups[groups >= 0].tolist())
    rows = np.flatnonzero(mask & (groups >= 0) & (np.array([sizes.get(g, 0) for g in groups.tolist()]) > 1))
    if not len(rows):
        return {"recall": float("nan"), "queries": 0}
    hit = (groups[nbrs[rows]] == groups[rows, None]).any(axis=1)
    return {"recall": float(hit.mean()), "queries": int(len(rows))}


def knn_purity(nbrs: np.ndarray, categories: np.ndarray) -> dict[str, float]:
    """Category -> the mean, over its items, of the share of their neighbours in the same category."""
    cats = _labels(categories, len(nbrs), "knn_purity: categories")
    same = (cats[nbrs] == cats[:, None]).mean(axis=1)
    return {str(c): float(same[cats == c].mean()) for c in sorted(set(cats.tolist()))}


def nearest_similarity(x: np.ndarray, among: np.ndarray) -> np.ndarray:
    """float64 (n,): each row's cosine similarity to its most similar row of `among` (a boolean mask),
    itself excluded."""
    among = _labels(among, len(x), "nearest_similarity: among").astype(bool)
    base_rows = np.flatnonzero(among)
    if len(base_rows) < 2:
        raise ValueError(f"nearest_similarity: needs at least 2 reference rows, got {len(base_rows)}")
    xn = normalize_embeddings(x, "nearest_similarity: embeddings")
    sims, found = knn_search(xn, xn[base_rows], 2)
    first_is_self = base_rows[found[:, 0]] == np.arange(len(x))
    return np.where(first_is_self, sims[:, 1], sims[:, 0]).astype(np.float64)


def auc(higher: np.ndarray, lower: np.ndarray) -> float:
    """P(a random item of `higher` scores above a random item of `lower`), ties counted half
    (the Mann-Whitney U over the product of the sizes)."""
    if not len(higher) or not len(lower):
        raise ValueError(f"auc: both score sets must be non-empty, got {len(higher)} and {len(lower)}")
    ranks = rankdata(np.concatenate([higher, lower]))  # ties get their average rank
    u = ranks[: len(higher)].sum() - len(higher) * (len(higher) + 1) / 2
    return float(u / (len(higher) * len(lower)))


def clean_similarity_auc(x: np.ndarray, categories: np.ndarray, clean: str = "clean") -> dict[str, float]:
    """Category other than `clean` -> the AUC of its items' similarity to their nearest clean item
    against the clean items' similarity to their nearest other clean item (see the module docstring)."""
    cats = _labels(categories, len(x), "clean_similarity_auc: categories")
    if not (cats == clean).any():
        raise ValueError(f"clean_similarity_auc: no item of category {clean!r} (has: {sorted(set(cats.tolist()))})")
    score = nearest_similarity(x, cats == clean)
    base = score[cats == clean]
    return {str(c): auc(base, score[cats == c]) for c in sorted(set(cats.tolist()) - {clean})}


def composition(subset_ids: np.ndarray, pool_ids: np.ndarray, categories: np.ndarray) -> dict[str, dict[str, float]]:
    """Category -> {"subset": its share of `subset_ids` (repeats count), "pool": its share of the pool}."""
    cats = _labels(categories, len(pool_ids), "composition: categories")
    if not len(subset_ids):
        raise ValueError("composition: the subset is empty")
    rows = rows_of(subset_ids, pool_ids, where="composition: the pool's ids")
    inside, everywhere = Counter(cats[rows].tolist()), Counter(cats.tolist())
    return {
        str(c): {"subset": inside.get(c, 0) / len(rows), "pool": everywhere[c] / len(cats)} for c in sorted(everywhere)
    }


def _labels(values: np.ndarray, n: int, where: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,):
        raise ValueError(f"{where}: expected one label per item ({n}), got shape {values.shape}")
    return values
