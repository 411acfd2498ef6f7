"""Helpers shared by the benchmarks: synthetic embeddings, timing, peak memory."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from actors.monitor import PeakRss


def clustered_embeddings(n: int, *, d: int = 384, clusters: int = 100, seed: int = 0) -> np.ndarray:
    """Unit vectors around `clusters` centres with cluster-specific spread (like sentence embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    spread = rng.uniform(0.5, 1.5, size=clusters).astype(np.float32)
    labels = rng.integers(clusters, size=n)
    x = centres[labels] + spread[labels, None] * rng.normal(size=(n, d)).astype(np.float32) * 1.2
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure(fn: Callable[[], Any], repeats: int = 3, budget_s: float = 60.0) -> tuple[Any, float, float]:
    """(result of the last run, median seconds, peak extra memory in MB over the runs).

    Stops repeating once `budget_s` is spent, so a baseline that takes minutes runs once."""
    times, peak, result = [], 0, None
    for _ in range(repeats):
        if sum(times) > budget_s:
            break
        with PeakRss() as mem:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        peak = max(peak, mem.peak)
    return result, statistics.median(times), peak / 2**20
