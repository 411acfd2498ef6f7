"""The training pool's sequences by row, read from their Parquet shards only where a worker needs them.

A row is a sequence's position in the pool: shards in name order, rows in file order (the order of
dataio.rundir.read_sequences). A worker keeps the pool's sequence ids (8 bytes a row) and each
shard's first row; the tokens of a window of steps are loaded by `prefetch(rows)`, one row group at
a time, and the previous window's are dropped. Memory is O(row group + window), never O(pool): the
paper's 41.5M sequences of 128 tokens are >20 GB as Python arrays in every worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from dataio import uri as U
from dataio.rundir import read_ids


@runtime_checkable
class RowSource(Protocol):
    """Where a trainer gets a sequence's tokens: `prefetch` the rows of the coming steps, then `get` each."""

    def prefetch(self, rows: np.ndarray) -> None: ...

    def get(self, row: int) -> np.ndarray: ...


class InMemoryRows:
    """Sequences already in memory (unit tests, the memory benchmark's reference): nothing to prefetch."""

    def __init__(self, sequences: Sequence[np.ndarray]):
        self.sequences = sequences

    def prefetch(self, rows: np.ndarray) -> None:
        pass

    def get(self, row: int) -> np.ndarray:
        return self.sequences[row]


class ParquetRows:
    """The sequences of a folder of `part-*.parquet` shards (a URI), loaded a window of rows at a time."""

    def __init__(self, folder: str):
        self.folder, self.files = folder, U.shard_files(folder)
        if not self.files:
            raise ValueError(f"{folder}: no sequence shards (part-*.parquet) to train on")
        ids = [read_ids(f) for f in self.files]
        self.ids = np.concatenate(ids).astype(np.int64, copy=False)
        self.starts = np.cumsum([0] + [len(i) for i in ids])  # shard f holds rows starts[f] .. starts[f+1]-1
        self._rows = np.empty(0, np.int64)  # the loaded rows, sorted
        self._chunk_starts = np.zeros(1, np.int64)  # index in _rows of each chunk's first row
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []  # (list offsets, token values) per chunk read

    def __len__(self) -> int:
        return len(self.ids)

    def prefetch(self, rows: np.ndarray) -> None:
        """Load exactly these rows (any order, repeats allowed), dropping what was loaded before."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if len(rows) and not (0 <= rows[0] and rows[-1] < len(self)):
            raise ValueError(
                f"rows {rows[0]}..{rows[-1]} out of range: the pool {self.folder} has {len(self)} sequences"
            )
        self._rows, self._chunks = np.empty(0, np.int64), []  # free the last window before reading the next
        chunk_starts = [0]
        for f in np.unique(np.searchsorted(self.starts, rows, side="right") - 1):
            local = rows[(rows >= self.starts[f]) & (rows < self.starts[f + 1])] - self.starts[f]
            for offsets, values in self._read(int(f), local):
                self._chunks.append((offsets, values))
                chunk_starts.append(chunk_starts[-1] + len(offsets) - 1)
        self._rows, self._chunk_starts = rows, np.array(chunk_starts, np.int64)

    def _read(self, f: int, local: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(offsets, token values) of rows `local` (sorted) of shard f: a chunk per row group holding any,
        each row group's column read alone and dropped once its rows are taken."""
        file, expected = self.files[f], int(self.starts[f + 1] - self.starts[f])
        shard = U.parquet_file(file)
        bounds = np.cumsum([0] + [shard.metadata.row_group(g).num_rows for g in range(shard.num_row_groups)])
        if bounds[-1] != expected:
            raise ValueError(
                f"{file} changed while training: it has {bounds[-1]} rows, {expected} when training started"
            )
        out = []
        for g in range(shard.num_row_groups):
            wanted = local[(local >= bounds[g]) & (local < bounds[g + 1])] - bounds[g]
            if len(wanted):
                lists = shard.read_row_group(g, columns=["input_ids"]).column("input_ids").take(wanted).combine_chunks()
                out.append((lists.offsets.to_numpy(), lists.values.to_numpy()))
        return out

    def get(self, row: int) -> np.ndarray:
        p = int(np.searchsorted(self._rows, row))
        if p == len(self._rows) or self._rows[p] != row:
            raise ValueError(f"row {row} of the pool {self.folder} was not prefetched for this window of steps")
        c = int(np.searchsorted(self._chunk_starts, p, side="right")) - 1
        offsets, values = self._chunks[c]
        i = p - self._chunk_starts[c]
        return values[offsets[i] : offsets[i + 1]]
