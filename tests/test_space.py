"""The selection space (centring, ZCA whitening) against NumPy references."""

import numpy as np
import pytest

from selection.space import apply_space, fit_space, moments, space_summary


def correlated(n: int = 400, d: int = 6, seed: int = 0) -> np.ndarray:
    """Nearly collinear rows, as the warm-started model's embeddings: a big shared offset plus a
    few correlated directions."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    return (20.0 + rng.normal(size=(n, d)) @ mix).astype(np.float32)


def test_centring_subtracts_the_pool_mean():
    x = correlated()
    space = fit_space(moments(x), whiten=False, eps=1e-3)
    assert space.matrix is None
    np.testing.assert_allclose(space.mean, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(space.apply(x), x - x.astype(np.float64).mean(axis=0), atol=1e-5)


def test_whitening_equals_the_eigh_reference():
    x = correlated()
    eps = 1e-3
    space = fit_space(moments(x), whiten=True, eps=eps)
    cov = np.cov(x.astype(np.float64), rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    reference = vectors @ np.diag(1 / np.sqrt(values + eps * values.mean())) @ vectors.T
    np.testing.assert_allclose(space.matrix, reference, rtol=1e-8, atol=1e-10)
    expected = (x - x.astype(np.float64).mean(axis=0)) @ reference
    np.testing.assert_allclose(space.apply(x), expected, rtol=1e-5, atol=1e-5)


def test_whitened_sample_covariance_is_about_identity():
    x = correlated(n=2000)
    white = fit_space(moments(x), whiten=True, eps=1e-6).apply(x)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(white.astype(np.float64), rowvar=False), np.eye(x.shape[1]), atol=1e-3)


def test_moments_added_over_shards_equal_one_pass():
    x = correlated(n=301)
    shards = [x[:50], x[50:51], x[51:51], x[51:]]  # an empty shard and a one-row shard too
    total = moments(shards[0])
    for s in shards[1:]:
        total = total + moments(s)
    one = moments(x)
    assert total.count == one.count
    np.testing.assert_allclose(total.total, one.total, rtol=1e-12)
    np.testing.assert_allclose(total.outer, one.outer, rtol=1e-12)
    a = fit_space(total, whiten=True, eps=1e-3)
    b = fit_space(one, whiten=True, eps=1e-3)
    np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-9, atol=1e-12)


def test_centring_spreads_nearly_collinear_embeddings():
    x = correlated()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = fit_space(moments(x), whiten=False, eps=1e-3).apply(x)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    assert (xn @ xn.T).mean() > 0.9 and abs((cn @ cn.T).mean()) < 0.05
    summary = space_summary(fit_space(moments(x), whiten=False, eps=1e-3), moments(x))
    assert summary["center"] and not summary["whiten"] and summary["mean_norm"] / summary["rms_norm"] > 0.9


def test_bad_input():
    x = correlated()
    with pytest.raises(ValueError, match="embedding dimension 3 differs from 6"):
        moments(x) + moments(x[:, :3])
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        fit_space(moments(x[:1]), whiten=True, eps=1e-3)
    with pytest.raises(ValueError, match="differs from the fitted space"):
        fit_space(moments(x), whiten=False, eps=1e-3).apply(x[:, :3])
    assert apply_space(None, x) is x
