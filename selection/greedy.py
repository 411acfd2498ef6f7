"""Greedy maximisation of facility location: a naive reference and an exact lazy greedy.

Both return the greedy order and each element's marginal gain at insertion. Ties go to the
smallest index, so the two agree element for element (tests pin lazy to naive). Ordering a whole
shard (budget = n) is what the `ingenious` strategy needs: every element gets a gain.
"""
from __future__ import annotations

import numba
import numpy as np

from selection.facility_location import FacilityLocation, column_gain, column_update


def _check_budget(budget: int, n: int) -> None:
    if not 1 <= budget <= n:
        raise ValueError(f"greedy budget must be in [1, {n}] (the ground set size), got {budget}")


def naive_greedy(objective: FacilityLocation, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Every step evaluates every remaining candidate: O(budget * nnz). The reference."""
    _check_budget(budget, objective.n)
    cover = objective.empty_cover()
    remaining = np.ones(objective.n, dtype=bool)
    order, gains = [], []
    for _ in range(budget):
        best_j, best_g = -1, -1.0
        for j in np.flatnonzero(remaining):
            g = objective.gain(cover, int(j))
            if g > best_g:  # strict: the first (smallest) index wins ties
                best_j, best_g = int(j), g
        objective.add(cover, best_j)
        remaining[best_j] = False
        order.append(best_j)
        gains.append(best_g)
    return np.array(order, dtype=np.int64), np.array(gains, dtype=np.float64)


@numba.njit(cache=True, inline="always")
def _better(ga, ia, gb, ib):
    return ga > gb or (ga == gb and ia < ib)


@numba.njit(cache=True)
def _sift_down(keys, ids, size, pos):
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        best = left
        right = left + 1
        if right < size and _better(keys[right], ids[right], keys[left], ids[left]):
            best = right
        if _better(keys[best], ids[best], keys[pos], ids[pos]):
            keys[pos], keys[best] = keys[best], keys[pos]
            ids[pos], ids[best] = ids[best], ids[pos]
            pos = best
        else:
            return


@numba.njit(cache=True)
def _lazy_greedy(indptr, indices, data, n, budget):
    cover = np.zeros(n, dtype=np.float64)
    keys = np.empty(n, dtype=np.float64)
    ids = np.arange(n)
    for j in range(n):
        keys[j] = column_gain(indptr, indices, data, cover, j)
    size = n
    for pos in range(n // 2 - 1, -1, -1):
        _sift_down(keys, ids, size, pos)
    order = np.empty(budget, dtype=np.int64)
    gains = np.empty(budget, dtype=np.float64)
    taken = 0
    while taken < budget:
        j = ids[0]
        g = column_gain(indptr, indices, data, cover, j)
        # Gains only shrink (submodularity), so a fresh gain that still beats every stale
        # upper bound in the heap is the true maximum.
        second_better = False
        if size > 1:
            c = 1
            if size > 2 and _better(keys[2], ids[2], keys[1], ids[1]):
                c = 2
            second_better = _better(keys[c], ids[c], g, j)
        if second_better:
            keys[0] = g
            _sift_down(keys, ids, size, 0)
            continue
        order[taken] = j
        gains[taken] = g
        taken += 1
        column_update(indptr, indices, data, cover, j)
        size -= 1
        keys[0] = keys[size]
        ids[0] = ids[size]
        _sift_down(keys, ids, size, 0)
    return order, gains


def lazy_greedy(objective: FacilityLocation, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact lazy greedy (Minoux) with a binary heap of stale upper bounds, compiled with numba."""
    _check_budget(budget, objective.n)
    return _lazy_greedy(objective.indptr, objective.indices, objective.data, objective.n, budget)
