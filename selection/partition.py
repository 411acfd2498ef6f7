"""Assigning sequences to selection partitions.

`random` is the paper's: every sequence id is hashed with the seed (splitmix64) and taken modulo
P. The assignment depends only on (id, seed, P): not on file order, worker count or on which other
sequences exist, so a corpus refresh keeps every surviving sequence in its partition.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x).astype(np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def random_partition(sequence_ids: np.ndarray, num_partitions: int, seed: int) -> np.ndarray:
    """Partition index in [0, P) for every sequence id."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    with np.errstate(over="ignore"):
        salted = np.asarray(sequence_ids).astype(np.uint64) ^ splitmix64(np.uint64(seed))
    return (splitmix64(salted) % np.uint64(num_partitions)).astype(np.int64)
