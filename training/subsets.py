"""Which sequences each optimizer step trains on.

A schedule maps a global step to the rows of that step's global batch, computed from the step
alone: draw d = step // redraw_every picks the subset (seeded by (seed, d)), and the subset is
walked in epochs, each shuffled by (seed, d, epoch). Any worker can compute any step, a resumed run
needs nothing but the step number, and each worker takes rows rank::world of the global batch, so
the global batch is the same whatever the worker count.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

SUBSET_MODES = ("full", "ingenious", "greedi", "random")


class SubsetSchedule:
    def __init__(
        self, draw_rows: Callable[[int], np.ndarray], *, global_batch: int, redraw_every: int | None, seed: int
    ):
        self.draw_rows = draw_rows  # draw index -> row indices of the pool in that draw
        self.global_batch = global_batch
        self.redraw_every = redraw_every  # None: one draw for the whole run
        self.seed = seed
        self._cache: dict[int, np.ndarray] = {}

    def draw_index(self, step: int) -> int:
        return 0 if not self.redraw_every else step // self.redraw_every

    def _draw(self, d: int) -> np.ndarray:
        if d not in self._cache:
            self._cache = {d: np.asarray(self.draw_rows(d), dtype=np.int64)}  # keep only the current draw
        return self._cache[d]

    def batch_rows(self, step: int) -> np.ndarray:
        d = self.draw_index(step)
        rows = self._draw(d)
        first_step = d * self.redraw_every if self.redraw_every else 0
        start = (step - first_step) * self.global_batch
        out = []
        while len(out) < self.global_batch:
            epoch, offset = divmod(start + len(out), len(rows))
            order = np.random.default_rng([self.seed, d, epoch]).permutation(len(rows))
            out.extend(rows[order[offset : offset + self.global_batch - len(out)]].tolist())
        return np.array(out, dtype=np.int64)

    def worker_rows(self, step: int, rank: int, world: int) -> np.ndarray:
        return self.batch_rows(step)[rank::world]


def draw_function(
    mode: str, pool_ids: np.ndarray, *, budget: int, seed: int,
    partitions: list[tuple[np.ndarray, np.ndarray]] | None = None, fixed_ids: np.ndarray | None = None,
) -> Callable[[int], np.ndarray]:
    """draw index -> rows of the pool, for each subset mode.

    full: every row; random: `budget` rows drawn uniformly per draw; ingenious: the paper's
    Taylor-softmax draw from per-partition (ids, probabilities); greedi: the fixed merged subset.
    """
    from selection.sampling import (
        draw_subset,  # pure NumPy; kept local so tokenizer-only users skip numba
    )

    row_of = {int(s): r for r, s in enumerate(pool_ids)}

    def rows_for(ids: np.ndarray) -> np.ndarray:
        missing = [int(s) for s in ids if int(s) not in row_of]
        if missing:
            raise ValueError(f"{len(missing)} selected sequence ids are not in the training pool (e.g. {missing[0]})")
        return np.array([row_of[int(s)] for s in ids], dtype=np.int64)

    if mode == "full":
        return lambda d: np.arange(len(pool_ids))
    if mode == "random":
        return lambda d: np.sort(np.random.default_rng([seed, d, 7]).choice(len(pool_ids), budget, replace=False))
    if mode == "ingenious":
        if partitions is None:
            raise ValueError("subset 'ingenious' needs the selection's probabilities")
        return lambda d: rows_for(draw_subset(partitions, budget, seed=seed, draw=d))
    if mode == "greedi":
        if fixed_ids is None:
            raise ValueError("subset 'greedi' needs the merged subset (select/subset_greedi.parquet): the select stage "
                             "computes it when select.strategy or train.subset is greedi, or select.greedi_merge is true")
        fixed_rows = rows_for(fixed_ids)
        return lambda d: fixed_rows
    raise ValueError(f"unknown subset mode {mode!r}")
