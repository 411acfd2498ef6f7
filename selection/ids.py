"""Sequence ids -> rows: the one lookup every reader of ids uses (sorted search, no dict: a dict of
the paper's 41.5M ids would take gigabytes in every worker)."""

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
