"""What a pool's categories say about an experiment: the oracle arms' subsets and what each arm trained on.

The pool builder (experiments/webpool.py) tags every document with a category (clean, near_duplicate,
boilerplate, ...). Selection never sees it; these functions join it back through the sequences'
document ids, for the oracle arm (the ceiling: a budget-sized draw from one category) and the
composition table (the share of each category in the sequences an arm trained on); and, with each
near-duplicate's source passage, the near-duplicate groups of the diagnostics (experiments/diagnostics.py).
"""

from __future__ import annotations

import json
import re
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
    ids, docs, _ = sequence_documents(prepare_dir)
    missing = next((d for d in docs if d not in by_doc), None)
    if missing is not None:
        raise ValueError(f"{pool_file}: no category for document {missing!r} of {prepare_dir}: not this pool's run")
    return ids, np.array([by_doc[d] for d in docs], dtype=object)


def sequence_documents(prepare_dir: str | Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(training sequence ids sorted, the document id of each, the chunk of its document) from prepare's shards."""
    ids, docs, chunks = [], [], []
    for f in shard_files(U.join(str(prepare_dir), PrepareOutputs.SEQUENCES)):
        t = read_table(f, ["sequence_id", "doc_id", "chunk"])
        ids.append(t.column("sequence_id").to_numpy())
        docs += t.column("doc_id").to_pylist()
        chunks.append(t.column("chunk").to_numpy())
    ids_arr = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    order = np.argsort(ids_arr, kind="stable")
    chunk_arr = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    return ids_arr[order], [docs[i] for i in order], chunk_arr[order]


def pool_sources(pool_file: str) -> dict[str, str]:
    """Near-duplicate document id -> the id of the clean passage it copies: the pool file's `source`
    field (for the analysis only; selection never reads it). A pool built before that field existed
    gets it from the builder's ids: dup-NNNNNN-KK copies clean-NNNNNN."""
    fs, path = U.resolve(pool_file)
    with fs.open_input_stream(path, compression="gzip" if pool_file.endswith(".gz") else None) as f:
        rows = [json.loads(line) for line in f.read().decode("utf-8").split("\n") if line]
    out = {}
    for r in rows:
        if r.get("category") == "near_duplicate":
            legacy = re.fullmatch(r"dup-(\d+)-\d+", r["id"])
            if r.get("source") is None and legacy is None:
                raise ValueError(f"{pool_file}: near-duplicate {r['id']!r} has no source field: rebuild the pool")
            out[r["id"]] = r["source"] if r.get("source") is not None else f"clean-{legacy[1]}"
    return out


def sequence_groups(prepare_dir: str | Path, pool_file: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training sequence ids sorted, the category of each, the near-duplicate group of each) for the
    diagnostics (selection/diagnostics.py). A sequence's group is its document's source passage (the
    document itself when it copies nothing) and its chunk: a copy's k-th sequence and its source's k-th
    sequence share a group. Groups with one member, and sequences in none, are -1."""
    ids, cats = sequence_categories(prepare_dir, pool_file)
    _, docs, chunks = sequence_documents(prepare_dir)
    sources = pool_sources(pool_file)
    keys = [(sources.get(d, d), int(c)) for d, c in zip(docs, chunks.tolist())]
    sizes = Counter(keys)
    numbers: dict[tuple[str, int], int] = {}
    groups = [numbers.setdefault(key, len(numbers)) if sizes[key] > 1 else -1 for key in keys]
    return ids, cats, np.array(groups, dtype=np.int64)


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
