"""A lexical embedding space that needs no model: hashed n-gram TF-IDF, randomly projected.

Near-duplicates with small edits and templated page chrome share most of their word and character
n-grams, so they sit close together here, where a briefly trained model does not see them.

A text becomes two blocks of hashed n-gram counts (scikit-learn's HashingVectorizer, no sign
alternation): word 1-2-grams and character 3-5-grams within word boundaries (`char_wb`), each block
`n_features` wide. Each count c becomes (1 + ln c) * idf, with the smoothed idf of scikit-learn,
idf = ln((1 + n) / (1 + df)) + 1, from the documents' frequencies df over n documents. Each block is
L2-normalised and weighted sqrt(1/2), so words and characters count equally, and the 2 * n_features
vector is projected to `dim` dimensions by a random sign matrix R / sqrt(dim) and L2-normalised
(a text with no n-gram stays the zero vector).

Map-reduce: `document_frequencies` of each shard sum to the pool's df; `embed_texts` of a shard, given
that df and the pool's document count, gives the same bytes as one pass over the pool, because every
step works row by row and R is stateless: its entry for hashed feature j and output dimension d is a
bit of splitmix64((j * words + d // 64) XOR splitmix64(seed)), so any feature's row is recomputed
where it is needed and R is never held whole (2**21 x 256 signs would be 4 GB as float64). The
projection sums each row's terms in a fixed order of hashed features, in fixed blocks of the hash
space, whatever else the shard holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from selection.ids import splitmix64

MASK64 = (1 << 64) - 1
PROJECTION_BLOCK = 1 << 14  # hashed features per block of the projection: 16k x 256 float64 = 32 MB


@dataclass(frozen=True)
class LexicalParams:
    """The lexical space: output dimension, hash space per block, n-gram ranges and projection seed."""

    dim: int = 256
    n_features: int = 1 << 20  # per block (word, character)
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"lexical space: dim must be >= 1, got {self.dim}")
        if not 1 <= self.n_features <= 1 << 30:
            raise ValueError(f"lexical space: n_features must be in [1, 2**30], got {self.n_features}")
        for key in ("word_ngrams", "char_ngrams"):
            lo, hi = getattr(self, key)
            if not 1 <= lo <= hi:
                raise ValueError(f"lexical space: {key} must be (min, max) with 1 <= min <= max, got {(lo, hi)}")
        if not 0 <= self.seed <= MASK64:
            raise ValueError(f"lexical space: seed must be in [0, 2**64), got {self.seed}")

    @property
    def width(self) -> int:
        """Columns of the hashed count matrix: the word block, then the character block."""
        return 2 * self.n_features


def hashed_counts(texts: list[str], params: LexicalParams) -> sp.csr_matrix:
    """(len(texts), 2 * n_features) float64 counts: word n-grams in columns [0, F), character n-grams
    in [F, 2F). Lowercased, scikit-learn's default word tokens (two or more word characters)."""
    if isinstance(texts, str):
        raise ValueError("hashed_counts: texts must be a list of strings, got one string")
    common = {"n_features": params.n_features, "alternate_sign": False, "norm": None, "dtype": np.float64}
    words = HashingVectorizer(analyzer="word", ngram_range=params.word_ngrams, **common)
    chars = HashingVectorizer(analyzer="char_wb", ngram_range=params.char_ngrams, **common)
    counts = sp.hstack([words.transform(texts), chars.transform(texts)], format="csr")
    counts.sum_duplicates()  # also sorts each row's columns
    return counts


def document_frequencies(texts: list[str], params: LexicalParams) -> np.ndarray:
    """int64 (2 * n_features,): how many of `texts` hold each hashed n-gram. Shards' vectors add up to
    the pool's."""
    return frequencies_of(hashed_counts(texts, params))


def frequencies_of(counts: sp.csr_matrix) -> np.ndarray:
    """The document frequencies of a hashed count matrix (every stored count is > 0)."""
    return np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.int64)


def embed_texts(texts: list[str], df: np.ndarray, n_documents: int, params: LexicalParams) -> np.ndarray:
    """float32 (len(texts), dim) unit rows (zero for a text without n-grams) given the pool's document
    frequencies `df` over `n_documents` documents."""
    return embed_counts(hashed_counts(texts, params), df, n_documents, params)


def lexical_embeddings(texts: list[str], params: LexicalParams) -> np.ndarray:
    """One pass: the frequencies of `texts` themselves, then their embeddings."""
    counts = hashed_counts(texts, params)
    return embed_counts(counts, frequencies_of(counts), len(texts), params)


def embed_counts(counts: sp.csr_matrix, df: np.ndarray, n_documents: int, params: LexicalParams) -> np.ndarray:
    """The embeddings of a hashed count matrix (see `embed_texts`)."""
    df = np.asarray(df)
    if df.shape != (params.width,):
        raise ValueError(f"lexical space: df must have shape ({params.width},) (2 x n_features), got {df.shape}")
    if n_documents < 1 or (df.size and (df.min() < 0 or df.max() > n_documents)):
        raise ValueError(
            f"lexical space: n_documents ({n_documents}) must be >= 1 and >= every document frequency "
            f"(max {int(df.max()) if df.size else 0}): df and n_documents come from the same pool"
        )
    weights = tfidf(counts, df, n_documents, params.n_features)
    return unit_rows(project(weights, params)).astype(np.float32)


def tfidf(counts: sp.csr_matrix, df: np.ndarray, n_documents: int, n_features: int) -> sp.csr_matrix:
    """(1 + ln c) * idf per count, each block (word, character) of each row L2-normalised and weighted
    sqrt(1/2)."""
    x = counts.tocsr(copy=True)
    idf = np.log((1.0 + n_documents) / (1.0 + df.astype(np.float64))) + 1.0
    x.data = (1.0 + np.log(x.data)) * idf[x.indices]
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    block = (x.indices >= n_features).astype(np.int64)  # 0: word, 1: character
    cell = 2 * rows + block  # bincount adds each cell's terms in the order they come: row by row
    norms = np.sqrt(np.bincount(cell, weights=x.data * x.data, minlength=2 * x.shape[0]))
    x.data = x.data * np.sqrt(0.5) / norms[cell]
    return x


def project(x: sp.csr_matrix, params: LexicalParams) -> np.ndarray:
    """float64 x @ R / sqrt(dim), R the seeded sign matrix; only the rows of R for hashed features
    that `x` uses are made, a block of the hash space at a time."""
    csc = x.tocsc()
    used = np.flatnonzero(np.diff(csc.indptr))
    out = np.zeros((x.shape[0], params.dim))
    for start in range(0, params.width, PROJECTION_BLOCK):
        lo, hi = np.searchsorted(used, [start, start + PROJECTION_BLOCK])
        if lo == hi:
            continue
        cols = used[lo:hi]
        out += csc[:, cols] @ projection_rows(cols, params)
    return out


def projection_rows(features: np.ndarray, params: LexicalParams) -> np.ndarray:
    """float64 (len(features), dim): the rows of R / sqrt(dim) for these hashed features."""
    words = -(-params.dim // 64)  # 64 signs per hash
    key = splitmix64(np.array([params.seed], dtype=np.uint64))[0]
    counters = np.asarray(features, dtype=np.uint64)[:, None] * np.uint64(words) + np.arange(words, dtype=np.uint64)
    hashes = splitmix64(counters ^ key).astype("<u8")
    bits = np.unpackbits(hashes.view(np.uint8), axis=1, bitorder="little")[:, : params.dim]
    return (1.0 - 2.0 * bits) / np.sqrt(params.dim)


def unit_rows(y: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; zero rows stay zero."""
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return np.divide(y, norms, out=np.zeros_like(y), where=norms > 0)
