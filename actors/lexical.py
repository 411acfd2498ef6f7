"""Ray task for the lexical space's map step (selection/lexical.py): one sequences shard's hashed n-gram
document frequencies, from its text (the run's token ids decoded with the run's tokenizer)."""

from __future__ import annotations

import numpy as np
import ray

from dataio.rundir import read_sequence_file
from selection.lexical import LexicalParams, document_frequencies
from training.embed import local_model
from training.tokenizer import load_tokenizer


def decoded_texts(tokenizer, seqs: list[np.ndarray]) -> list[str]:
    """The text of each sequence, as the run's tokenizer reads its ids back (special tokens left out)."""
    return tokenizer.batch_decode(seqs, skip_special_tokens=True)


@ray.remote
def shard_frequencies(sequences_path: str, tokenizer: str, kind: str, params: LexicalParams) -> tuple[np.ndarray, int]:
    """(document frequencies over the hashed n-gram space, number of sequences) of one shard; the shards'
    add up to the pool's."""
    _, seqs = read_sequence_file(sequences_path)
    texts = decoded_texts(load_tokenizer(local_model(tokenizer), kind=kind), seqs)
    return document_frequencies(texts, params), len(texts)
