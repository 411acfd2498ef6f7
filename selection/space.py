"""The embedding space selection measures cosine similarity in: raw, centred, or whitened.

The warm-started model's embeddings are nearly collinear (nearest-neighbour cosine 0.985 under random
selection), so facility-location gains, Taylor-softmax weights and SemDeDup's similarities are nearly
flat. Subtracting the pool mean (`center`) removes the shared direction; whitening (`whiten`, ZCA with
the pool covariance) also evens out the variance of the remaining directions. Both are applied before
the L2 normalisation, so cosine similarity is taken in the transformed space.

The transform is fitted from per-shard moments (count, sum, sum of outer products, float64) added in
shard order, so it is the same whatever the number of workers, and a pass over the shards never holds
more than one shard and a d x d matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of a set of embeddings for their mean and covariance."""

    count: int
    total: np.ndarray  # float64 (d,): sum of rows
    outer: np.ndarray  # float64 (d, d): sum of x x^T

    def __add__(self, other: Moments) -> Moments:
        if self.total.shape != other.total.shape:
            raise ValueError(f"embedding dimension {other.total.shape[0]} differs from {self.total.shape[0]}")
        return Moments(self.count + other.count, self.total + other.total, self.outer + other.outer)


def moments(x: np.ndarray) -> Moments:
    x = np.asarray(x, dtype=np.float64)
    return Moments(len(x), x.sum(axis=0), x.T @ x)


@dataclass(frozen=True)
class Space:
    """x -> (x - mean) @ matrix, as float32 (matrix None: centring only)."""

    mean: np.ndarray  # float64 (d,)
    matrix: np.ndarray | None  # float64 (d, d), symmetric (ZCA), or None

    def apply(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1:] != self.mean.shape:
            raise ValueError(f"embedding dimension {x.shape[1:]} differs from the fitted space's {self.mean.shape}")
        y = np.asarray(x, dtype=np.float64) - self.mean
        return (y if self.matrix is None else y @ self.matrix).astype(np.float32)


def fit_space(m: Moments, *, whiten: bool, eps: float) -> Space:
    """Centring (the pool mean), or ZCA whitening: W = U diag(1 / sqrt(lambda + eps * mean(lambda))) U^T
    from the pool covariance (sample covariance, as np.cov). `eps` is relative to the mean eigenvalue, so
    directions with almost no variance (the collinear embeddings have many) are not blown up into noise."""
    if m.count < 2:
        raise ValueError(f"fitting the embedding space needs at least 2 embeddings, got {m.count}")
    mean = m.total / m.count
    if not whiten:
        return Space(mean, None)
    cov = (m.outer - m.count * np.outer(mean, mean)) / (m.count - 1)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    values = np.clip(values, 0.0, None)  # rounding can leave tiny negative eigenvalues
    scale = 1.0 / np.sqrt(values + eps * max(values.mean(), np.finfo(np.float64).tiny))
    return Space(mean, (vectors * scale) @ vectors.T)


def apply_space(space: Space | None, x: np.ndarray) -> np.ndarray:
    """The embeddings in the selection space (unchanged without a fitted space)."""
    return x if space is None else space.apply(x)


def space_summary(space: Space | None, m: Moments | None) -> dict:
    """What the stage records about the space: the pool's mean norm and root-mean-square norm (how far
    the shared direction dominates: their ratio is near 1 for collinear embeddings)."""
    if space is None or m is None:
        return {"center": False, "whiten": False}
    return {
        "center": True,
        "whiten": space.matrix is not None,
        "mean_norm": float(np.linalg.norm(space.mean)),
        "rms_norm": float(np.sqrt(np.trace(m.outer) / m.count)),
    }
