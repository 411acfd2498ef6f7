"""Pack tokenized documents into fixed-length training sequences with stable, content-derived ids.

Each document is cut into its own chunks (no packing across documents), so a sequence depends only
on its document: a corpus refresh that edits one article changes only that article's ids.
BERT: [CLS] chunk [SEP]; GPT-2: chunk, with <|endoftext|> closing a document's last chunk.
A trailing chunk shorter than `min_tokens` is dropped (too little context to be worth a slot).
"""

from __future__ import annotations

import hashlib

import numpy as np


def sequence_id(tokens: np.ndarray) -> int:
    """Signed 64-bit id from the sequence's token ids (blake2b); identical sequences share an id."""
    digest = hashlib.blake2b(np.asarray(tokens, dtype=np.int32).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def pack_document(
    token_ids: list[int],
    *,
    kind: str,
    seq_len: int,
    min_tokens: int,
    cls_id: int | None,
    sep_id: int | None,
    eos_id: int | None,
) -> list[np.ndarray]:
    if kind == "bert":
        body = seq_len - 2
        chunks = [token_ids[i : i + body] for i in range(0, len(token_ids), body)]
        out = [np.array([cls_id, *c, sep_id], dtype=np.int32) for c in chunks if len(c) >= min_tokens]
    elif kind == "gpt2":
        stream = list(token_ids) + [eos_id]
        chunks = [stream[i : i + seq_len] for i in range(0, len(stream), seq_len)]
        out = [np.array(c, dtype=np.int32) for c in chunks if len(c) >= min_tokens]
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return out


def pad_batch(sequences: list[np.ndarray], pad_id: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to seq_len: (input_ids int64, attention_mask int64)."""
    ids = np.full((len(sequences), seq_len), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), seq_len), dtype=np.int64)
    for r, s in enumerate(sequences):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    return ids, mask
