"""The facility-location objective over a sparse similarity graph, separate from any optimizer.

f(A) = sum_i max_{j in A} s_ij. Adding j raises the coverage of every point i that lists j as a
neighbour to max(cover_i, s_ij), so its marginal gain is sum_i max(0, s_ij - cover_i) over the
column j of the graph. Gains are accumulated in float64, always in the column's storage order,
so every optimizer computes bit-identical gains.
"""

from __future__ import annotations

import numba
import numpy as np

from selection.knn import KnnGraph, KnnParams, knn_search


@numba.njit(cache=True)
def column_gain(indptr, indices, data, cover, j):
    g = 0.0
    for p in range(indptr[j], indptr[j + 1]):
        d = data[p] - cover[indices[p]]
        if d > 0.0:
            g += d
    return g


@numba.njit(cache=True)
def column_update(indptr, indices, data, cover, j):
    for p in range(indptr[j], indptr[j + 1]):
        i = indices[p]
        if data[p] > cover[i]:
            cover[i] = data[p]


class FacilityLocation:
    """Objective state: the graph's columns plus each point's current coverage.

    The ground set to cover is the graph's rows (`num_points`); the elements one may pick are its
    columns (`n`). They are the same set for a shard's own graph, and differ in a merge round,
    where every point of the data is covered by a pick among the candidates.
    """

    def __init__(self, graph: KnnGraph):
        csc = graph.reverse()
        self.num_points, self.n = graph.matrix.shape
        self.indptr = csc.indptr.astype(np.int64)
        self.indices = csc.indices.astype(np.int64)
        self.data = csc.data.astype(np.float64)

    def empty_cover(self) -> np.ndarray:
        return np.zeros(self.num_points, dtype=np.float64)

    def gain(self, cover: np.ndarray, j: int) -> float:
        return column_gain(self.indptr, self.indices, self.data, cover, j)

    def add(self, cover: np.ndarray, j: int) -> None:
        column_update(self.indptr, self.indices, self.data, cover, j)

    def evaluate(self, subset) -> float:
        cover = self.empty_cover()
        for j in np.asarray(subset, dtype=np.int64):
            self.add(cover, int(j))
        return float(cover.sum())


def coverage(pool: np.ndarray, subset: np.ndarray) -> float:
    """The dense objective per point, f(A) / n with s = cosine similarity: the mean over `pool` of the
    similarity to its nearest member of `subset` (both unit-normalised rows). Exact search."""
    if len(subset) == 0:
        return 0.0
    sims, _ = knn_search(pool, np.ascontiguousarray(subset), 1, KnnParams(method="exact"))
    return float(sims[:, 0].mean())
