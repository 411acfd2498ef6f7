"""INGENIOUS importance sampling from greedy gains (second-order Taylor softmax).

Per partition, p_i = (1 + g_i + g_i^2 / 2) / sum_j (1 + g_j + g_j^2 / 2) (gains divided by
`select.temperature` first, 1 being the paper's), and each draw takes
that partition's share of the budget without replacement. Shares are a largest-remainder
allocation of the budget, so every draw has exactly the budget (a per-partition round-up
overshoots it: 60 partitions of 837 sequences at 25% drew 238 for 209). Draws are seeded by
(seed, draw index, partition), so any worker can recompute any draw and the result does not
depend on how many workers there are.
"""

from __future__ import annotations

import math

import numpy as np


def taylor_softmax(gains: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """p_i proportional to 1 + g_i / T + (g_i / T)^2 / 2 (T = 1: the paper's). A high T flattens the
    distribution towards uniform; a low T concentrates it on the largest gains, but only up to
    p_i = g_i^2 / sum_j g_j^2 as T -> 0 (the second-order weight has no argmax limit)."""
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and 0.0 < temperature < math.inf):
        raise ValueError(f"select.temperature must be a number > 0, got {temperature!r}")
    g = np.asarray(gains, dtype=np.float64) / temperature
    if g.size == 0:
        raise ValueError("taylor_softmax: empty gain vector")
    if not np.isfinite(g).all():  # a NaN or inf gain would turn every probability into NaN
        raise ValueError(
            f"taylor_softmax: {int((~np.isfinite(g)).sum())} of {g.size} gains are NaN or infinite"
            + ("" if temperature == 1.0 else f" after dividing by select.temperature={temperature}")
        )
    w = 1.0 + g + 0.5 * g * g  # > 0 for every real g, so every element keeps some probability
    return w / w.sum()


def partition_budgets(sizes: list[int], budget: int) -> list[int]:
    """Largest-remainder split of `budget` over partitions in proportion to their sizes.

    Each partition gets floor(size * budget / total), and the leftover goes one each to the largest
    remainders, ties to the lower partition index. Integer arithmetic, so exact and deterministic;
    the shares sum to `budget` and none exceeds its partition (a remainder is never 0 for a
    partition whose floor is below its size, and budget <= total).
    """
    total = sum(sizes)
    if not 0 <= budget <= total:
        raise ValueError(f"subset budget must be in [0, {total}] (the corpus size), got {budget}")
    if total == 0:
        return [0] * len(sizes)
    shares = [s * budget // total for s in sizes]
    remainders = [s * budget % total for s in sizes]
    for p in sorted(range(len(sizes)), key=lambda p: (-remainders[p], p))[: budget - sum(shares)]:
        shares[p] += 1
    return shares


def draw_subset(partitions: list[tuple[np.ndarray, np.ndarray]], budget: int, *, seed: int, draw: int) -> np.ndarray:
    """Draw one subset of exactly `budget` ids. `partitions` is a list of (sequence_ids, probabilities),
    in partition order.

    Returns the drawn sequence ids (int64), partition by partition, in draw order.
    """
    total = sum(len(ids) for ids, _ in partitions)
    if not 1 <= budget <= total:
        raise ValueError(f"subset budget must be in [1, {total}] (the corpus size), got {budget}")
    out = []
    for part, ((ids, probs), k) in enumerate(
        zip(partitions, partition_budgets([len(ids) for ids, _ in partitions], budget))
    ):
        if k == 0:
            continue
        rng = np.random.default_rng([seed, draw, part])
        out.append(np.asarray(ids)[rng.choice(len(ids), size=k, replace=False, p=probs)])
    return np.concatenate(out).astype(np.int64)
