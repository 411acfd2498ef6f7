"""DSIR (Xie et al. 2023): importance resampling of a raw pool toward a target sample, with hashed
n-gram features.

Each text is lowercased and split into word-punctuation tokens (`\\w+|[^\\w\\s]+`, nltk's
WordPunctTokenizer); its unigrams and bigrams (joined by a space) are hashed into `buckets` by
sha256(n-gram) mod buckets. The pool's and the target's bucket counts, normalised, are two bag-of-ngrams
distributions p_raw and p_target; a text's log importance weight is sum_b counts_b * (ln(p_target_b +
1e-8) - ln(p_raw_b + 1e-8)). The budget is drawn without replacement with probabilities proportional to
the weights by Gumbel top-k. These are the features, estimator and resampling of the authors' package
`data-selection` (HashedNgramDSIR, ngrams=2), which tests/test_dsir.py pins this module to.

Map-reduce: `bucket_counts` of each shard add up to the pool's; `log_weights` of a shard needs only the
fitted `log_ratio`. The Gumbel noise of a sequence is a hash of (seed, sequence id), so the draw does not
depend on how the pool is sharded (the package draws it from NumPy's global generator).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import scipy.sparse as sp

from selection.ids import id_hash

WORD_PUNCT = re.compile(r"\w+|[^\w\s]+")
SMOOTHING = 1e-8  # the package's, added to both distributions before the log


def ngrams(text: str) -> list[str]:
    """The lowercased text's word-punctuation unigrams, then its bigrams."""
    words = WORD_PUNCT.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def count_matrix(texts: list[str], buckets: int) -> sp.csr_matrix:
    """(len(texts), buckets) int64 hashed n-gram counts. sha256 per distinct n-gram (cached per call:
    a pool repeats most of them)."""
    if buckets < 1:
        raise ValueError(f"DSIR: buckets must be >= 1, got {buckets}")
    cache: dict[str, int] = {}
    indptr, indices = [0], []
    for text in texts:
        for gram in ngrams(text):
            b = cache.get(gram)
            if b is None:
                b = cache[gram] = int(hashlib.sha256(gram.encode("utf-8")).hexdigest(), 16) % buckets
            indices.append(b)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.int64)
    counts = sp.csr_matrix((data, np.asarray(indices, np.int64), np.asarray(indptr)), shape=(len(texts), buckets))
    counts.sum_duplicates()
    return counts


def bucket_counts(texts: list[str], buckets: int) -> np.ndarray:
    """int64 (buckets,): the texts' n-gram counts summed; shards' vectors add up to the pool's."""
    return np.asarray(count_matrix(texts, buckets).sum(axis=0)).ravel().astype(np.int64)


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray) -> np.ndarray:
    """float64 (buckets,): ln(p_target + 1e-8) - ln(p_raw + 1e-8), each p its counts normalised."""
    target_counts, raw_counts = np.asarray(target_counts), np.asarray(raw_counts)
    if target_counts.shape != raw_counts.shape:
        raise ValueError(
            f"DSIR: target counts {target_counts.shape} and pool counts {raw_counts.shape} differ in shape"
        )
    for name, c in (("target", target_counts), ("pool", raw_counts)):
        if c.sum() <= 0:
            raise ValueError(f"DSIR: the {name} has no n-gram (every text empty)")
    p_target = target_counts / target_counts.sum()
    p_raw = raw_counts / raw_counts.sum()
    return np.log(p_target + SMOOTHING) - np.log(p_raw + SMOOTHING)


def log_weights(texts: list[str], ratio: np.ndarray) -> np.ndarray:
    """float64 (len(texts),): each text's log importance weight, counts . log_ratio."""
    return count_matrix(texts, len(ratio)) @ np.asarray(ratio, dtype=np.float64)


def gumbel_noise(sequence_ids: np.ndarray, seed: int) -> np.ndarray:
    """Standard Gumbel noise, a function of (seed, sequence id) only."""
    bits = id_hash(sequence_ids, seed) >> np.uint64(11)
    uniform = (bits.astype(np.float64) + 0.5) / float(1 << 53)  # in (0, 1), never 0 or 1
    return -np.log(-np.log(uniform))


def importance_resample(sequence_ids: np.ndarray, weights: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Rows (indices into the inputs) of `budget` sequences drawn without replacement with probability
    proportional to exp(weight): the top `budget` of weight + Gumbel noise, ties by sequence id, in
    that order (best first)."""
    n = len(sequence_ids)
    if len(weights) != n:
        raise ValueError(f"DSIR: {n} sequence ids but {len(weights)} weights")
    if not 0 <= budget <= n:
        raise ValueError(f"DSIR: budget {budget} is not in [0, {n}]")
    keys = np.asarray(weights, dtype=np.float64) + gumbel_noise(sequence_ids, seed)
    return np.lexsort((sequence_ids, -keys))[:budget]
