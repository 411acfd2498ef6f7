"""Readers of the select stage's outputs, and the subset schedule they make (what the trainer walks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataio import uri as U
from dataio.contracts import SelectOutputs
from dataio.rundir import read_ids
from selection.partition import group_bounds
from training.loop import TrainConfig
from training.reselect import ReselectSchedule
from training.subsets import FIXED_SUBSETS, SubsetSchedule, draw_function


def load_selection(select_dir: str | Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray | None]:
    """(per-partition (ids, probabilities) in partition then rank order, greedi subset ids or None
    where the select stage ran no merge)."""
    probs = U.read_parquet(U.join(select_dir, SelectOutputs.PROBABILITIES))
    probs = probs.sort_by([("shard", "ascending"), ("rank", "ascending")])
    ids, p = probs.column("sequence_id").to_numpy(), probs.column("probability").to_numpy()
    starts = group_bounds(probs.column("shard").to_numpy())[0][1:]
    return list(zip(np.split(ids, starts), np.split(p, starts))), fixed_subset_ids("greedi", select_dir)


def fixed_subset_ids(mode: str, select_dir: str | Path | None, subset_file: str | None = None) -> np.ndarray | None:
    """The ids of a fixed subset mode: select/subset_<mode>.parquet (None where the select stage did not
    write it), or for `file` the user's Parquet file (which must exist); None for the drawn modes."""
    if mode == "file":
        if subset_file is None or not U.exists(str(subset_file)):
            raise ValueError(f"train.subset_file {subset_file!r} does not exist")
        return read_ids(subset_file)
    if mode not in FIXED_SUBSETS or select_dir is None:
        return None
    path = U.join(str(select_dir), SelectOutputs.subset(mode))
    return read_ids(path) if U.exists(path) else None


def subset_schedule(
    cfg: TrainConfig,
    pool_ids: np.ndarray,
    *,
    fraction: float,
    select_dir: str | Path | None,
    out_dir: str | None = None,
    rank: int = 0,
) -> SubsetSchedule:
    """The rows of every step of a run: its subset draws (from the select stage's outputs) walked in
    epochs. The trainer and the reports that reconstruct what a run trained on both call this. With
    train.reselect, draws after the first are the run's own (under `out_dir`, its folder)."""
    budget = max(1, round(fraction * len(pool_ids)))
    partitions = load_selection(select_dir)[0] if select_dir and cfg.subset == "ingenious" else None
    fixed = fixed_subset_ids(cfg.subset, select_dir, cfg.subset_file)
    draws = draw_function(cfg.subset, pool_ids, budget=budget, seed=cfg.seed, partitions=partitions, fixed_ids=fixed)
    plan = cfg.reselect_plan()
    if plan is None:
        return SubsetSchedule(draws, global_batch=cfg.global_batch_size, redraw_every=cfg.redraw_every, seed=cfg.seed)
    if out_dir is None:
        raise ValueError("a schedule with train.reselect needs the run's folder (out_dir), where its draws are")
    return ReselectSchedule(
        draws,
        pool_ids,
        plan,
        out_dir=out_dir,
        when_late=cfg.reselect.when_late,
        global_batch=cfg.global_batch_size,
        seed=cfg.seed,
        rank=rank,
    )
