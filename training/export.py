"""The rows `ingenious export` writes: a draw's sequences from one prepare shard, with their text.

A row is one training sequence exactly as the trainer reads it (its token ids from prepare's shard),
with where it came from (document id, chunk), which draw of the subset schedule holds it, and its
text as the run's tokenizer reads the ids back (special tokens left out), for trainers that
tokenize for themselves.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from dataio import uri as U
from dataio.contracts import ExportOutputs


def export_table(sequences_file: str, rows: np.ndarray, *, draw: int, tokenizer) -> pa.Table:
    """Rows `rows` (indices within the shard, in the order given) of one prepare shard, as ExportOutputs.SCHEMA."""
    shard = U.read_parquet(sequences_file, ["sequence_id", "doc_id", "chunk", "input_ids"])
    if len(rows) and not (0 <= rows.min() and rows.max() < shard.num_rows):
        raise ValueError(f"{sequences_file}: rows {rows.min()}..{rows.max()} asked of a shard of {shard.num_rows}")
    taken = shard.take(pa.array(rows, pa.int64()))
    ids = taken.column("input_ids").combine_chunks()
    offsets, values = ids.offsets.to_numpy(), ids.values.to_numpy()
    texts = tokenizer.batch_decode(
        [values[offsets[i] : offsets[i + 1]] for i in range(len(ids))], skip_special_tokens=True
    )
    return pa.table(
        {
            "sequence_id": taken.column("sequence_id"),
            "doc_id": taken.column("doc_id"),
            "chunk": taken.column("chunk"),
            "draw": pa.array(np.full(len(rows), draw, np.int32)),
            "text": pa.array(texts, pa.string()),
            "input_ids": ids,
        },
        schema=ExportOutputs.SCHEMA,
    )


def jsonl_bytes(table: pa.Table) -> bytes:
    """One JSON object a line, the table's columns as keys."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()).encode("utf-8")


def write_export(table: pa.Table, uri: str, fmt: str) -> None:
    """Atomically, as Parquet or JSON lines (ExportOutputs.FORMATS)."""
    if fmt == "parquet":
        U.write_parquet(table, uri)
    elif fmt == "jsonl":
        U.write_bytes(uri, jsonl_bytes(table))
    else:
        raise ValueError(f"export format {fmt!r}: expected one of {ExportOutputs.FORMATS}")


def export_rows(uri: str) -> int:
    """The rows of one exported file (for the export's own check)."""
    if uri.endswith(".parquet"):
        return U.parquet_rows(uri)
    return U.read_bytes(uri).count(b"\n")
