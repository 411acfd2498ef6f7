"""Assigning sequences to selection partitions.

`random` is the paper's: every sequence id is hashed with the seed (splitmix64) and taken modulo
P. The assignment depends only on (id, seed, P): not on file order, worker count or on which other
sequences exist, so a corpus refresh keeps every surviving sequence in its partition.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from selection.ids import id_hash


def random_partition(sequence_ids: np.ndarray, num_partitions: int, seed: int) -> np.ndarray:
    """Partition index in [0, P) for every sequence id."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    return (id_hash(sequence_ids, seed) % np.uint64(num_partitions)).astype(np.int64)


def spherical_kmeans(sample: np.ndarray, num_clusters: int, *, seed: int, iterations: int = 20) -> np.ndarray:
    """Centroids (unit vectors) of cosine k-means on L2-normalised rows, k-means++-style seeding.

    Plain NumPy on a sample: small, deterministic for a given sample and seed."""
    if not 1 <= num_clusters <= len(sample):
        raise ValueError(f"cannot make {num_clusters} clusters from {len(sample)} sampled points")
    rng = np.random.default_rng(seed)
    centroids = [sample[rng.integers(len(sample))]]
    closest = sample @ centroids[0]
    for _ in range(1, num_clusters):
        # Next seed: far from every chosen centroid (weight 1 - best similarity).
        weight = np.clip(1.0 - closest, 0.0, None).astype(np.float64) + 1e-12
        pick = rng.choice(len(sample), p=weight / weight.sum())
        centroids.append(sample[pick])
        closest = np.maximum(closest, sample @ sample[pick])
    c = np.stack(centroids).astype(np.float32)
    rows = np.arange(len(sample))
    for _ in range(iterations):
        labels = np.argmax(sample @ c.T, axis=1)
        # Cluster sums as a one-hot sparse product: np.add.at took 95% of the time (11 s at 100k x 384).
        one_hot = sp.csr_matrix((np.ones(len(sample), np.float32), (labels, rows)), shape=(len(c), len(sample)))
        sums = np.asarray(one_hot @ sample, dtype=np.float32)
        norms = np.linalg.norm(sums, axis=1)
        empty = norms == 0
        c = np.where(empty[:, None], c, sums / np.where(empty, 1.0, norms)[:, None]).astype(np.float32)
    return c


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.argmax(x @ centroids.T, axis=1).astype(np.int64)


def split_oversized(
    sequence_ids: np.ndarray, clusters: np.ndarray, cluster_sizes: np.ndarray, max_size: int, seed: int
) -> np.ndarray:
    """Partition index per sequence: cluster c becomes ceil(size_c / max_size) partitions (by id
    hash), so no partition outgrows a worker however unbalanced the clusters are."""
    pieces = np.maximum(1, -(-cluster_sizes // max_size))
    first = np.concatenate([[0], np.cumsum(pieces)[:-1]])
    with np.errstate(over="ignore"):
        hashed = id_hash(sequence_ids, seed + 1)
    within = (hashed % pieces[clusters].astype(np.uint64)).astype(np.int64)
    return first[clusters] + within


def group_bounds(sorted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the runs of equal values in a sorted array (e.g. the partition column of a
    table sorted by partition): np.split(x, starts[1:]) splits `x` the same way."""
    cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
    return np.concatenate([[0], cuts]).astype(np.int64), np.concatenate([cuts, [len(sorted_labels)]]).astype(np.int64)
