"""INGENIOUS importance sampling from greedy gains (second-order Taylor softmax).

Per partition, p_i = (1 + g_i + g_i^2 / 2) / sum_j (1 + g_j + g_j^2 / 2), and each draw takes
ceil(|partition| * budget / N) elements without replacement. Draws are seeded by
(seed, draw index, partition), so any worker can recompute any draw and the result does not
depend on how many workers there are.
"""
from __future__ import annotations

import math

import numpy as np


def taylor_softmax(gains: np.ndarray) -> np.ndarray:
    g = np.asarray(gains, dtype=np.float64)
    if g.size == 0:
        raise ValueError("taylor_softmax: empty gain vector")
    w = 1.0 + g + 0.5 * g * g  # > 0 for every real g, so every element keeps some probability
    return w / w.sum()


def per_partition_budget(partition_size: int, budget: int, total: int) -> int:
    return min(partition_size, math.ceil(partition_size * budget / total))


def draw_subset(
    partitions: list[tuple[np.ndarray, np.ndarray]], budget: int, *, seed: int, draw: int
) -> np.ndarray:
    """Draw one subset. `partitions` is a list of (sequence_ids, probabilities), in partition order.

    Returns the drawn sequence ids (int64), partition by partition, in draw order.
    """
    total = sum(len(ids) for ids, _ in partitions)
    if not 1 <= budget <= total:
        raise ValueError(f"subset budget must be in [1, {total}] (the corpus size), got {budget}")
    out = []
    for part, (ids, probs) in enumerate(partitions):
        if len(ids) == 0:
            continue
        k = per_partition_budget(len(ids), budget, total)
        rng = np.random.default_rng([seed, draw, part])
        out.append(np.asarray(ids)[rng.choice(len(ids), size=k, replace=False, p=probs)])
    return np.concatenate(out).astype(np.int64)
