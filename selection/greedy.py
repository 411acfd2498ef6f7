"""Greedy maximisation of facility location: a naive reference, an exact lazy greedy, and
stochastic greedy.

Both return the greedy order and each element's marginal gain at insertion. Ties go to the
smallest index, so the two agree element for element (tests pin lazy to naive). Ordering a whole
shard (budget = n) is what the `ingenious` strategy needs: every element gets a gain.
"""

from __future__ import annotations

import math

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
def _lazy_greedy(indptr, indices, data, num_points, n, budget):
    cover = np.zeros(num_points, dtype=np.float64)
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
    return _lazy_greedy(objective.indptr, objective.indices, objective.data, objective.num_points, objective.n, budget)


@numba.njit(cache=True)
def _stochastic_greedy(indptr, indices, data, num_points, n, budget, sample_size, seed):
    np.random.seed(seed)
    cover = np.zeros(num_points, dtype=np.float64)
    remaining = np.arange(n)
    size = n
    order = np.empty(budget, dtype=np.int64)
    gains = np.empty(budget, dtype=np.float64)
    for t in range(budget):
        s = min(sample_size, size)
        # Partial Fisher-Yates: the first s slots of `remaining` become a uniform sample.
        best_slot, best_g = -1, -1.0
        for a in range(s):
            b = a + np.random.randint(0, size - a)
            remaining[a], remaining[b] = remaining[b], remaining[a]
            g = column_gain(indptr, indices, data, cover, remaining[a])
            if g > best_g or (g == best_g and remaining[a] < remaining[best_slot]):
                best_slot, best_g = a, g
        j = remaining[best_slot]
        order[t] = j
        gains[t] = best_g
        column_update(indptr, indices, data, cover, j)
        size -= 1
        remaining[best_slot] = remaining[size]
    return order, gains


def stochastic_greedy(
    objective: FacilityLocation, budget: int, *, epsilon: float = 0.01, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic greedy (Mirzasoleiman et al. 2015): each step scans a random sample of
    (n / budget) * ln(1 / epsilon) candidates; (1 - 1/e - epsilon)-approximate in expectation."""
    _check_budget(budget, objective.n)
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"stochastic greedy epsilon must be in (0, 1), got {epsilon}")
    sample = max(1, math.ceil(objective.n / budget * math.log(1.0 / epsilon)))
    return _stochastic_greedy(
        objective.indptr, objective.indices, objective.data, objective.num_points, objective.n, budget, sample, seed
    )
