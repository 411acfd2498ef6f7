"""Ray tasks: count a corpus file's documents; tokenize and pack one shard of documents into train
and held-out sequence files (the shard's documents shipped, or read here from object storage)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pyarrow as pa
import ray

from dataio import uri as U
from dataio.contracts import PrepareOutputs
from dataio.corpus import Segment, count_documents, read_segments
from dataio.rundir import write_parquet, write_shard_log
from training.packing import sequence_id
from training.tokenizer import load_tokenizer, pack_tokens, train_tokenizer


def is_heldout(text: str, fraction: float) -> bool:
    """Documents go to held-out by a hash of their text: stable under corpus reordering and refresh."""
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return h / 2**64 < fraction


def sequences_table(rows: list[tuple[str, int, object]]) -> pa.Table:
    return pa.table(
        {
            "sequence_id": [sequence_id(t) for _, _, t in rows],
            "doc_id": [d for d, _, _ in rows],
            "chunk": [c for _, c, _ in rows],
            "input_ids": [t.tolist() for _, _, t in rows],
            "num_tokens": [len(t) for _, _, t in rows],
        },
        schema=PrepareOutputs.SEQUENCE_SCHEMA,
    )


@ray.remote
def count_file_documents(uri: str, fields: dict) -> int:
    return count_documents(uri, **fields)


@ray.remote
def prepare_shard(
    shard: list[tuple[str, str]] | list[Segment],
    *,
    fields: dict,
    tokenizer_path: str,
    kind: str,
    seq_len: int,
    min_tokens: int,
    heldout_fraction: float,
    train_path: str,
    heldout_path: str,
) -> dict:
    """`shard`: the documents as (doc_id, text), or the corpus segments to read them from."""
    start = time.perf_counter()
    docs = (
        shard
        if not shard or isinstance(shard[0][1], str)
        else [(d.doc_id, d.text) for d in read_segments(shard, **fields)]
    )
    tok = load_tokenizer(str(U.local_dir(tokenizer_path)), kind=kind)
    encoded = tok([text for _, text in docs], add_special_tokens=False)["input_ids"]
    train, heldout = [], []
    for (doc_id, text), ids in zip(docs, encoded):
        chunks = pack_tokens(tok, ids, kind=kind, seq_len=seq_len, min_tokens=min_tokens)
        target = heldout if is_heldout(text, heldout_fraction) else train
        target.extend((doc_id, c, t) for c, t in enumerate(chunks))
    for rows, path in ((heldout, heldout_path), (train, train_path)):  # train last: its file marks the shard done
        write_parquet(sequences_table(rows), path)
    result = {"documents": len(docs), "train": len(train), "heldout": len(heldout), "shard": U.name(train_path)}
    write_shard_log(train_path, {**result, "seconds": time.perf_counter() - start})
    return result


def write_local_sequences(texts: list[str], root: Path, *, kind: str, seq_len: int, vocab_size: int) -> None:
    """The prepare stage's outputs (root/tokenizer, root/sequences) in one process, without held-out
    split or Ray: for benchmarks and tests that need a small pool of real training sequences."""
    tok = train_tokenizer(texts, kind=kind, vocab_size=vocab_size, out_dir=root / PrepareOutputs.TOKENIZER)
    rows = []
    for d, ids in enumerate(tok(texts, add_special_tokens=False)["input_ids"]):
        rows += [(str(d), c, t) for c, t in enumerate(pack_tokens(tok, ids, kind=kind, seq_len=seq_len, min_tokens=16))]
    write_parquet(sequences_table(rows), str(root / PrepareOutputs.SEQUENCES / "part-00000.parquet"))
