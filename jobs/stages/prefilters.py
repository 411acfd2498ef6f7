"""Quality before diversity (select.prefilter): filters applied in order to the pool, each keeping some of
what the previous one kept; INGENIOUS and GreeDi then choose their budget among the survivors.

Each filter is a function of the whole pool (its losses, its SemDeDup scores) and the current survivors'
ids, returning the ids it keeps. To add one: write it here, register it in FILTERS and name it in
jobs/config.Prefilter.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from dataio.contracts import SelectOutputs
from jobs.stages.selection_pool import SelectionPool, pool_losses
from selection.dedup import semdedup_keep
from selection.perplexity import perplexity_band


def perplexity_filter(pool: SelectionPool, survivors: np.ndarray) -> np.ndarray:
    """The band of `perplexity_keep` of the pool (or every survivor, if fewer) around `perplexity_center`
    of the survivors' loss ranks: drops the lowest losses (boilerplate, copies) and the highest (garbage)."""
    ids, losses = pool_losses(pool.embed_files)
    mine = np.isin(ids, survivors)
    ids, losses = ids[mine], losses[mine]
    keep = min(len(ids), round(pool.scfg.perplexity_keep * len(pool.ids)))
    return ids[perplexity_band(ids, losses, keep, center=pool.scfg.perplexity_center)]


def semdedup_filter(pool: SelectionPool, survivors: np.ndarray) -> np.ndarray:
    """The survivors SemDeDup at `dedup_threshold` keeps (scored within the pool's k-means clusters)."""
    scores = pool.dedup_scores()
    ids = scores.column("sequence_id").to_numpy()
    kept = ids[semdedup_keep(scores.column("duplicate_score").to_numpy(), pool.scfg.dedup_threshold)]
    return survivors[np.isin(survivors, kept)]


FILTERS: dict[str, Callable[[SelectionPool, np.ndarray], np.ndarray]] = {
    "perplexity": perplexity_filter,
    "semdedup": semdedup_filter,
}


def prefilter(pool: SelectionPool) -> tuple[np.ndarray, pa.Table, dict]:
    """(survivors' ids, the per-sequence record: kept and the filter that dropped it, summary entries)."""
    survivors = np.sort(pool.ids)
    dropped_by = np.full(len(survivors), None, dtype=object)
    counts = {}
    for name in pool.scfg.prefilter:
        kept = FILTERS[name](pool, survivors)
        gone = np.isin(np.sort(pool.ids), survivors) & ~np.isin(np.sort(pool.ids), kept)
        dropped_by[gone] = name
        counts[name] = int(gone.sum())
        survivors = np.sort(kept)
    if len(survivors) < pool.budget:
        raise ValueError(
            f"select.prefilter {pool.scfg.prefilter} keeps {len(survivors)} of {len(pool.ids)} sequences, fewer than "
            f"the budget ({pool.budget}): raise select.perplexity_keep or select.dedup_threshold"
        )
    record = pa.table(
        {"sequence_id": np.sort(pool.ids), "kept": np.isin(np.sort(pool.ids), survivors), "dropped_by": dropped_by},
        schema=SelectOutputs.PREFILTER_SCHEMA,
    )
    return (
        survivors,
        record,
        {"prefilter": pool.scfg.prefilter, "prefilter_kept": len(survivors), "prefilter_dropped": counts},
    )
