"""What a pool's categories say about an experiment: the oracle arms' subsets and what each arm trained on.

The pool builder (experiments/webpool.py) tags every document with a category (clean, near_duplicate,
boilerplate, ...). Selection never sees it; these functions join it back through the sequences'
document ids, for the oracle arm (the ceiling: a budget-sized draw from one category) and the
composition table (the share of each category in the sequences an arm trained on).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataio import uri as U
from dataio.contracts import PrepareOutputs
from dataio.rundir import read_table, shard_files, write_parquet
from experiments.webpool import categories
from selection.ids import rows_of

# The oracle's draw has its own seed stream, apart from the batch orders' and the random arm's.
ORACLE_STREAM = 2


def sequence_categories(prepare_dir: str | Path, pool_file: str) -> tuple[np.ndarray, np.ndarray]:
    """(training sequence ids sorted, the category of each) from prepare's shards and the pool."""
    by_doc = categories(pool_file)
    ids, docs = [], []
    for f in shard_files(U.join(str(prepare_dir), PrepareOutputs.SEQUENCES)):
        t = read_table(f, ["sequence_id", "doc_id"])
        ids.append(t.column("sequence_id").to_numpy())
        docs += t.column("doc_id").to_pylist()
    missing = next((d for d in docs if d not in by_doc), None)
    if missing is not None:
        raise ValueError(f"{pool_file}: no category for document {missing!r} of {prepare_dir}: not this pool's run")
    ids_arr = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    order = np.argsort(ids_arr, kind="stable")
    return ids_arr[order], np.array([by_doc[docs[i]] for i in order], dtype=object)


def oracle_subset(ids: np.ndarray, cats: np.ndarray, category: str, *, budget: int, seed: int) -> np.ndarray:
    """A uniform draw of `budget` sequences of `category` (all of them when it has fewer), sorted."""
    pool = ids[cats == category]
    if not len(pool):
        raise ValueError(f"the pool has no training sequence of category {category!r} (has: {sorted(set(cats))})")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ORACLE_STREAM,)))
    return np.sort(rng.choice(pool, min(budget, len(pool)), replace=False))


def write_oracle(path: Path, subset: np.ndarray) -> None:
    write_parquet(pa.table({"sequence_id": pa.array(subset, pa.int64())}), str(path))


def composition(ids: np.ndarray, cats: np.ndarray, trained: np.ndarray) -> dict[str, float]:
    """Share of each category among `trained` (sequence ids, with repeats: one per training example)."""
    rows = rows_of(trained, ids, where="the pool's categorised sequences")
    counts = Counter(cats[rows].tolist())
    return {c: counts.get(c, 0) / len(trained) for c in sorted(set(cats.tolist()))}
