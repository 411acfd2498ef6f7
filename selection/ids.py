"""Sequence ids -> rows: the one lookup every reader of ids uses (sorted search, no dict: a dict of
the paper's 41.5M ids would take gigabytes in every worker), and the seeded hash of ids every sample,
partition and draw made from ids alone uses."""

from __future__ import annotations

import numpy as np


def rows_of(ids: np.ndarray, among: np.ndarray, *, where: str, missing_ok: bool = False) -> np.ndarray:
    """Row in `among` (any order) of each of `ids`; of the last such row where an id repeats. An id not in
    `among` is a ValueError naming `among` as `where` (e.g. "the training pool"), or row -1 with `missing_ok`."""
    ids, among = np.asarray(ids, dtype=np.int64), np.asarray(among, dtype=np.int64)
    if len(among) == 0:
        at, found = np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        order = np.zeros(1, np.int64)
    else:
        order = np.argsort(among, kind="stable")  # equal ids stay in `among` order
        at = np.searchsorted(among[order], ids, side="right") - 1
        found = (at >= 0) & (among[order[np.maximum(at, 0)]] == ids)
    if not found.all() and not missing_ok:
        missing = ids[~found]
        raise ValueError(f"{len(missing)} sequence ids are not in {where} (e.g. {missing[0]})")
    return np.where(found, order[np.maximum(at, 0)], -1)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 values (wrapping arithmetic): a bijection that mixes every bit."""
    z = np.asarray(z).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def id_hash(sequence_ids: np.ndarray, seed: int) -> np.ndarray:
    """uint64 splitmix64(id XOR splitmix64(seed)) of each id: a function of (seed, id) only, so whatever is
    chosen from it does not depend on how the ids are sharded or ordered."""
    return splitmix64(np.asarray(sequence_ids).astype(np.uint64) ^ splitmix64(np.uint64(seed)))
