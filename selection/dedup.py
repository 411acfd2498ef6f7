"""SemDeDup (Abbas et al. 2023) and D4 (Tirumala et al. 2023) on L2-normalised embeddings.

SemDeDup, within one k-means cluster: order the points by cosine similarity to the cluster centroid,
LEAST similar first (the paper's `keep_hard`: of a group of near-duplicates it keeps the one farthest
from the centroid), and drop a point if any point ordered before it has cosine similarity above the
threshold (the reference code's M_j = max over i < j of sim(i, j), removed when M_j > 1 - eps). The
rule looks at every earlier point, dropped or not, so each point's `duplicate_score` M_j is computed once
and any threshold (SemDeDup) or target ratio (D4's dedup step) is a cut on it.

D4: SemDeDup to a target ratio of the pool (the threshold chosen so that ratio remains, as the paper
sets R_dedup), re-cluster what remains with k-means, and keep the points farthest from their new
centroid (prune the most prototypical: SSL Prototypes), ranked over the whole pool.

Ties (equal similarities) are broken by sequence id everywhere, so the result depends on the data only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rows searched at once when scoring a cluster: a block's own similarities are BLOCK x BLOCK floats.
BLOCK = 2048


@dataclass(frozen=True)
class ClusterScores:
    """One cluster in SemDeDup order (least similar to the centroid first)."""

    sequence_ids: np.ndarray  # int64
    centroid_similarity: np.ndarray  # float32, non-decreasing
    duplicate_score: np.ndarray  # float32: max similarity to an earlier point; -inf for the first


def centroid_order(sequence_ids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, similarity to the centroid) of a cluster's normalised rows; the centroid is the
    normalised mean, as spherical k-means' own."""
    mean = x.astype(np.float64).sum(axis=0)
    centroid = (mean / max(np.linalg.norm(mean), np.finfo(np.float64).tiny)).astype(np.float32)
    sims = x @ centroid
    return np.lexsort((sequence_ids, sims)), sims


def earlier_max_similarity(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """For each row, the largest inner product with any row before it (-inf for row 0): an exact FAISS
    inner-product search of each block against the rows before it, plus the block's own lower
    triangle. Memory: the index (n x d) and one block x block matrix, never n x n."""
    import faiss  # imported where used, as selection.knn does

    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    out = np.full(n, -np.inf, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    for start in range(0, n, block):
        q = x[start : start + block]
        if index.ntotal:
            sims, _ = index.search(q, 1)
            out[start : start + len(q)] = sims[:, 0]
        own = q @ q.T
        own[np.triu_indices(len(q))] = -np.inf  # only rows before, not itself
        out[start : start + len(q)] = np.maximum(out[start : start + len(q)], own.max(axis=1))
        index.add(q)
    return out


def score_cluster(sequence_ids: np.ndarray, x: np.ndarray) -> ClusterScores:
    """A cluster's points in SemDeDup order with their duplicate scores (`x`: normalised rows)."""
    if len(sequence_ids) != len(x) or len(x) == 0:
        raise ValueError(f"a cluster needs as many ids as rows, at least one: {len(sequence_ids)} ids, {len(x)} rows")
    order, sims = centroid_order(sequence_ids, x)
    return ClusterScores(np.asarray(sequence_ids, dtype=np.int64)[order], sims[order], earlier_max_similarity(x[order]))


def semdedup_keep(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the points SemDeDup keeps: no earlier point in the cluster more similar than `threshold`."""
    check_threshold(threshold)
    return scores <= threshold


def check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"select.dedup_threshold must be in (0, 1], got {threshold}")


def semdedup_subset(kept_ids: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """The SemDeDup subset for a budget: every kept point if they are no more than the budget (a
    shortfall: deduplication is not padded back with duplicates), else `budget` of them drawn
    uniformly (seeded, from the kept ids in id order). Sorted ids."""
    kept = np.sort(np.asarray(kept_ids, dtype=np.int64))
    if len(kept) <= budget:
        return kept
    return np.sort(np.random.default_rng(seed).choice(kept, budget, replace=False))


def dedup_to_ratio(sequence_ids: np.ndarray, scores: np.ndarray, keep: int) -> tuple[np.ndarray, float]:
    """(the `keep` points with the lowest duplicate scores, the threshold that keeps them): SemDeDup with
    the threshold set so that `keep` points remain (ties at the threshold by sequence id)."""
    if not 1 <= keep <= len(sequence_ids):
        raise ValueError(f"cannot keep {keep} of {len(sequence_ids)} points")
    order = np.lexsort((sequence_ids, scores))[:keep]
    return np.asarray(sequence_ids, dtype=np.int64)[order], float(scores[order[-1]])


def prune_prototypical(sequence_ids: np.ndarray, centroid_similarity: np.ndarray, budget: int) -> np.ndarray:
    """Rows of the `budget` points least similar to their cluster's centroid, least similar first."""
    if not 1 <= budget <= len(sequence_ids):
        raise ValueError(f"cannot keep {budget} of {len(sequence_ids)} points")
    return np.lexsort((sequence_ids, centroid_similarity))[:budget]
