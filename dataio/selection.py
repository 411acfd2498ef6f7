"""Readers of the select stage's outputs, for training, refresh and reports alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataio import uri as U
from dataio.rundir import read_ids
from selection.partition import group_bounds


def load_selection(select_dir: str | Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray | None]:
    """(per-partition (ids, probabilities) in partition then rank order, greedi subset ids or None
    where the select stage ran no merge)."""
    probs = U.read_parquet(U.join(select_dir, "probabilities.parquet"))
    probs = probs.sort_by([("shard", "ascending"), ("rank", "ascending")])
    ids, p = probs.column("sequence_id").to_numpy(), probs.column("probability").to_numpy()
    starts = group_bounds(probs.column("shard").to_numpy())[0][1:]
    greedi_file = U.join(select_dir, "subset_greedi.parquet")
    return list(zip(np.split(ids, starts), np.split(p, starts))), read_ids(greedi_file) if U.exists(
        greedi_file
    ) else None
