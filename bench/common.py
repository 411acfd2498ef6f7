"""Helpers shared by the benchmarks: synthetic embeddings, timing, peak memory."""
from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil


def clustered_embeddings(n: int, *, d: int = 384, clusters: int = 100, seed: int = 0) -> np.ndarray:
    """Unit vectors around `clusters` centres with cluster-specific spread (like sentence embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    spread = rng.uniform(0.5, 1.5, size=clusters).astype(np.float32)
    labels = rng.integers(clusters, size=n)
    x = centres[labels] + spread[labels, None] * rng.normal(size=(n, d)).astype(np.float32) * 1.2
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class PeakRss:
    """Peak resident memory of this process and its children above the starting level, sampled."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        proc = psutil.Process()
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self) -> "PeakRss":
        self.start = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.start)
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self.start)


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
