"""Ray task of `ingenious export`: one draw's sequences of one prepare shard, written for other trainers."""

from __future__ import annotations

import numpy as np
import ray

from training.embed import local_model
from training.export import export_table, write_export
from training.tokenizer import load_tokenizer


@ray.remote
def export_shard(
    sequences_file: str, rows: np.ndarray, *, draw: int, tokenizer: str, kind: str, out: str, fmt: str
) -> int:
    """Write rows `rows` of `sequences_file` (draw `draw`) to `out` in format `fmt`; returns the row count."""
    table = export_table(sequences_file, rows, draw=draw, tokenizer=load_tokenizer(local_model(tokenizer), kind=kind))
    write_export(table, out, fmt)
    return table.num_rows
