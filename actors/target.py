"""Ray tasks of the target-aware strategies (selection/dsir.py, selection/quality.py): each reads one
sequences shard of prepare by URI, decodes it with the run's tokenizer, and returns what the driver
reduces. The target's texts come from the driver (it reads them once, to check them against the
evaluation sets), through the object store."""

from __future__ import annotations

import numpy as np
import ray

from actors.lexical import decoded_texts
from dataio.rundir import read_sequence_file
from selection.dsir import bucket_counts, log_weights
from selection.ids import id_hash
from selection.lexical import LexicalParams
from selection.quality import QualityModel, fit_quality, quality_scores
from training.embed import local_model
from training.tokenizer import load_tokenizer


def shard_texts(sequences_path: str, tokenizer: str, kind: str) -> tuple[np.ndarray, list[str]]:
    """(sequence ids, their text as the run's tokenizer reads the ids back) of one shard."""
    ids, seqs = read_sequence_file(sequences_path)
    return ids, decoded_texts(load_tokenizer(local_model(tokenizer), kind=kind), seqs)


def sample_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """uint64 hash of (seed, sequence id): a sample is the sequences with the lowest keys."""
    return id_hash(ids, seed)


@ray.remote
def target_bucket_counts(texts: list[str], buckets: int) -> np.ndarray:
    return bucket_counts(texts, buckets)


@ray.remote
def shard_bucket_counts(sequences_path: str, tokenizer: str, kind: str, buckets: int) -> np.ndarray:
    return bucket_counts(shard_texts(sequences_path, tokenizer, kind)[1], buckets)


@ray.remote
def shard_log_weights(
    sequences_path: str, tokenizer: str, kind: str, ratio: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    ids, texts = shard_texts(sequences_path, tokenizer, kind)
    return ids, log_weights(texts, ratio)


@ray.remote
def shard_sample_texts(
    sequences_path: str, tokenizer: str, kind: str, count: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """(keys, texts) of the shard's `count` sequences of lowest sample key: the pool's `count` lowest
    are among the shards' (the same rows however the pool is sharded)."""
    ids, texts = shard_texts(sequences_path, tokenizer, kind)
    keys = sample_keys(ids, seed)
    chosen = np.lexsort((ids, keys))[:count]
    return keys[chosen], [texts[i] for i in chosen]


@ray.remote
def fit_quality_model(
    target: list[str], sample_keys: list[np.ndarray], sample_texts: list[list[str]], params: LexicalParams
) -> QualityModel:
    """The classifier of the target against as many pool texts as target texts: the pool's lowest
    sample keys, from every shard's lowest."""
    keys = np.concatenate(sample_keys)
    texts = [t for shard in sample_texts for t in shard]
    chosen = np.argsort(keys, kind="stable")[: len(target)]
    return fit_quality(target, [texts[i] for i in chosen], params)


@ray.remote
def shard_quality_scores(
    sequences_path: str, tokenizer: str, kind: str, model: QualityModel
) -> tuple[np.ndarray, np.ndarray]:
    ids, texts = shard_texts(sequences_path, tokenizer, kind)
    return ids, quality_scores(texts, model)
