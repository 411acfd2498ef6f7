"""Which sequences each optimizer step trains on.

A schedule maps a global step to the rows of that step's global batch, computed from the step
alone: draw d = step // redraw_every picks the subset (seeded by (seed, d)), and the subset is
walked in epochs, each shuffled by (seed, d, epoch). Any worker can compute any step, a resumed run
needs nothing but the step number, and each worker takes rows rank::world of the global batch, so
the global batch is the same whatever the worker count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import numpy as np

from dataio.contracts import FixedSubsetName, PrunedSubsetName, SelectedSubsetName, SelectOutputs, TargetSubsetName

# The random arm's draws come from their own SeedSequence stream (a spawn key), apart from the batch
# orders' [seed, draw, epoch] entropy: drawing from [seed, draw, 7] reused the stream of epoch 7's order.
RANDOM_DRAW_STREAM = 1
# Fixed subsets: one list of ids for the whole run, written by the select stage as select/subset_<name>.parquet
# (`file`: the user's own Parquet of sequence ids, train.subset_file).
FIXED_SUBSETS: tuple[str, ...] = get_args(FixedSubsetName)
# A run trains on every row (full), on one of the select stage's subsets, on uniform draws (random, listed
# beside the greedy selections it is the baseline of) or on the user's file.
SubsetMode = Literal["full", SelectedSubsetName, "random", PrunedSubsetName, TargetSubsetName, "file"]
SUBSET_MODES: tuple[str, ...] = get_args(SubsetMode)


class SubsetSchedule:
    def __init__(
        self, draw_rows: Callable[[int], np.ndarray], *, global_batch: int, redraw_every: int | None, seed: int
    ):
        self.draw_rows = draw_rows  # draw index -> row indices of the pool in that draw
        self.global_batch = global_batch
        self.redraw_every = redraw_every  # None: one draw for the whole run
        self.seed = seed
        self._cache: dict[int, np.ndarray] = {}
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def draw_index(self, step: int) -> int:
        return 0 if not self.redraw_every else step // self.redraw_every

    def before_step(self, step: int) -> None:
        """Called before each step is trained; draws known in advance need nothing (training/reselect.py does)."""

    def draw_start(self, d: int) -> int:
        """The first step of draw d."""
        return d * self.redraw_every if self.redraw_every else 0

    def _draw(self, d: int) -> np.ndarray:
        if d not in self._cache:
            self._cache = {d: np.asarray(self.draw_rows(d), dtype=np.int64)}  # keep only the current draw
        return self._cache[d]

    def _order(self, d: int, epoch: int) -> np.ndarray:
        """The shuffle of draw d's epoch, kept while it is walked: recomputing a permutation of the
        whole draw for every step costs more than the step."""
        if (d, epoch) not in self._orders:
            self._orders = {(d, epoch): np.random.default_rng([self.seed, d, epoch]).permutation(len(self._draw(d)))}
        return self._orders[(d, epoch)]

    def batch_rows(self, step: int) -> np.ndarray:
        d = self.draw_index(step)
        rows = self._draw(d)
        start = (step - self.draw_start(d)) * self.global_batch
        out = []
        while len(out) < self.global_batch:
            epoch, offset = divmod(start + len(out), len(rows))
            out.extend(rows[self._order(d, epoch)[offset : offset + self.global_batch - len(out)]].tolist())
        return np.array(out, dtype=np.int64)

    def worker_rows(self, step: int, rank: int, world: int) -> np.ndarray:
        return self.batch_rows(step)[rank::world]

    def window(self, step: int, length: int) -> range:
        """The steps, `length` at most, whose rows a worker loads with `step`'s: aligned runs of one draw's
        steps (a window never spans two draws), so a resumed run loads what an uninterrupted one did."""
        first = self.draw_start(self.draw_index(step))
        start = first + (step - first) // length * length
        # Ends at the next scheduled redraw (a re-selected draw may start later than scheduled, never earlier).
        end = (
            start + length
            if not self.redraw_every
            else min(start + length, (step // self.redraw_every + 1) * self.redraw_every)
        )
        return range(start, end)


def random_draw_rng(seed: int, draw: int) -> np.random.Generator:
    """The generator of the random arm's draw `draw`."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(RANDOM_DRAW_STREAM, draw)))


def draw_function(
    mode: str,
    pool_ids: np.ndarray,
    *,
    budget: int,
    seed: int,
    partitions: list[tuple[np.ndarray, np.ndarray]] | None = None,
    fixed_ids: np.ndarray | None = None,
) -> Callable[[int], np.ndarray]:
    """draw index -> rows of the pool, for each subset mode.

    full: every row; random: `budget` rows drawn uniformly per draw; ingenious: the paper's
    Taylor-softmax draw from per-partition (ids, probabilities); greedi, semdedup, d4, perplexity and
    file: the fixed subset `fixed_ids`, every draw.
    """
    from selection.ids import rows_of
    from selection.sampling import (
        draw_subset,  # pure NumPy; kept local so tokenizer-only users skip numba
    )

    def rows_for(ids: np.ndarray) -> np.ndarray:
        return rows_of(ids, pool_ids, where="the training pool")

    if mode == "full":
        return lambda d: np.arange(len(pool_ids))
    if mode == "random":
        return lambda d: np.sort(random_draw_rng(seed, d).choice(len(pool_ids), budget, replace=False))
    if mode == "ingenious":
        if partitions is None:
            raise ValueError("subset 'ingenious' needs the selection's probabilities")
        # Drawing from partitions of rows draws the rows of what partitions of ids would draw.
        rows = np.split(
            rows_for(np.concatenate([ids for ids, _ in partitions])),
            np.cumsum([len(ids) for ids, _ in partitions])[:-1],
        )
        row_partitions = [(r, p) for r, (_, p) in zip(rows, partitions)]
        return lambda d: draw_subset(row_partitions, budget, seed=seed, draw=d)
    if mode in FIXED_SUBSETS or mode == "file":
        source = "train.subset_file" if mode == "file" else f"select/{SelectOutputs.subset(mode)}"
        if fixed_ids is None:
            raise ValueError(
                f"subset {mode!r} needs its fixed subset ({source}): the select stage writes it when "
                f"select.strategy or train.subset is {mode}, or select.also lists it"
                if mode != "file"
                else "subset 'file' needs train.subset_file, a Parquet file with a sequence_id column"
            )
        if len(np.unique(fixed_ids)) != len(fixed_ids):
            raise ValueError(f"subset {mode!r}: {source} lists a sequence id more than once")
        fixed_rows = rows_of(fixed_ids, pool_ids, where=f"the training pool ({source})")
        return lambda d: fixed_rows
    raise ValueError(f"unknown subset mode {mode!r}")
