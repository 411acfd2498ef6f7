"""Sparse kNN similarity graphs for facility location.

Similarity is cosine, computed as an inner product on L2-normalised vectors and floored at 0
(facility location needs non-negative similarities). Each point keeps its k most similar points,
itself included, so a dense n x n kernel is never built.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp


def normalize_embeddings(x: np.ndarray, where: str = "embeddings") -> np.ndarray:
    """Return float32, L2-normalised rows; reject NaN/inf and zero vectors with a clear error."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{where}: expected a non-empty 2-D array, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} rows contain NaN or inf (first at row {int(np.argmax(bad))})")
    norms = np.linalg.norm(x, axis=1)
    zero = norms == 0
    if zero.any():
        raise ValueError(f"{where}: {int(zero.sum())} rows have zero norm (first at row {int(np.argmax(zero))})")
    return x / norms[:, None]


@dataclass(frozen=True)
class KnnGraph:
    """Row i holds the k neighbours j of point i with similarity s_ij >= 0 (CSR, n x n)."""

    matrix: sp.csr_matrix

    @property
    def n(self) -> int:
        return self.matrix.shape[0]

    def reverse(self) -> sp.csc_matrix:
        """Column j lists the points i that have j among their neighbours: what adding j can cover."""
        return self.matrix.tocsc()


def knn_graph(x: np.ndarray, k: int, *, query_block: int = 16384, threads: int | None = None) -> KnnGraph:
    """Exact kNN graph with FAISS (flat inner-product index), queries in blocks to bound memory."""
    n = x.shape[0]
    if k < 1:
        raise ValueError(f"knn k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"knn k={k} is larger than the shard ({n} points)")
    xn = normalize_embeddings(x)
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(xn.shape[1])
    index.add(xn)
    sims = np.empty((n, k), dtype=np.float32)
    nbrs = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, query_block):
        d, i = index.search(xn[start : start + query_block], k)
        sims[start : start + query_block] = d
        nbrs[start : start + query_block] = i
    # A point is always its own best facility (s_ii = 1); FAISS can miss it among exact duplicates.
    rows = np.arange(n)
    has_self = (nbrs == rows[:, None]).any(axis=1)
    nbrs[~has_self, -1] = rows[~has_self]
    sims[~has_self, -1] = 1.0
    sims = np.clip(sims, 0.0, 1.0)
    matrix = sp.csr_matrix((sims.ravel(), nbrs.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return KnnGraph(matrix)


def dense_graph(x: np.ndarray) -> KnnGraph:
    """Every pair (k = n): the reference kernel for small inputs and cross-checks."""
    xn = normalize_embeddings(x)
    return KnnGraph(sp.csr_matrix(np.clip(xn @ xn.T, 0.0, None)))
