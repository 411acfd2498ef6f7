"""The select stage's strategies, one function each: from the pool's shared phases (SelectionPool) to a
`Subset`, the table of its subset_<name>.parquet (columns: dataio/contracts.SelectOutputs.SUBSET_SCHEMAS)
with the other files it writes and its summary entries.

The target-aware strategies (DSIR, the quality classifier) are in targeted.py. To add a strategy: write
its function here, register it in STRATEGIES, and give its name and columns
in dataio/contracts.py. The math lives in selection/ (pure NumPy/FAISS); what runs on the cluster is a
Task of actors/selector.py, run by the pool's executor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from actors.selector import candidate_edges, candidate_index, centroid_similarity, group_merge, merge_round
from dataio.contracts import SelectOutputs
from jobs.executor import Task
from jobs.stages.selection_pool import SelectionPool, Subset, pool_losses, sample_points
from jobs.stages.targeted import classifier, dsir
from selection.dedup import dedup_to_ratio, prune_prototypical, semdedup_keep, semdedup_subset
from selection.ids import rows_of
from selection.merge import candidate_count, group_keep, merge_by_gain, merge_groups
from selection.partition import group_bounds, spherical_kmeans
from selection.perplexity import perplexity_band
from selection.sampling import draw_subset, taylor_softmax

SUBSETS = SelectOutputs.SUBSET_SCHEMAS


def ingenious(pool: SelectionPool) -> Subset:
    """The paper's: Taylor-softmax probabilities over each partition's greedy gains, and draw 0 (training
    redraws the rest from probabilities.parquet)."""
    ordered = pool.greedy_orders()
    bounds = group_bounds(ordered.column("shard").to_numpy())[0][1:]
    ids, gains = ordered.column("sequence_id").to_numpy(), ordered.column("gain").to_numpy()
    probs = np.concatenate([taylor_softmax(g, pool.scfg.temperature) for g in np.split(gains, bounds)])
    draw0 = draw_subset(
        list(zip(np.split(ids, bounds), np.split(probs, bounds))), pool.budget, seed=pool.scfg.seed, draw=0
    )
    probabilities = (
        ordered.select(["sequence_id", "shard", "rank", "gain"])
        .append_column("probability", pa.array(probs, pa.float64()))
        .cast(SelectOutputs.PROBABILITIES_SCHEMA)
    )
    return Subset(
        pa.table({"sequence_id": draw0, "draw": np.zeros(len(draw0), np.int32)}, schema=SUBSETS["ingenious"]),
        {"ingenious_subset": len(draw0), "partition_objective": float(gains.sum())},
        files={SelectOutputs.PROBABILITIES: probabilities},
    )


def greedi(pool: SelectionPool) -> Subset:
    """GreeDi's merge round over the partitions' greedy orders, one fixed subset (see merge_round_all_points
    for `all_points`; `partitions` merges the orders by gain, exact greedy on the union of their objectives,
    which no local solution can beat)."""
    ordered = pool.greedy_orders()
    if pool.scfg.merge_objective == "partitions":
        ids, gains = ordered.column("sequence_id").to_numpy(), ordered.column("gain").to_numpy()
        rows = merge_by_gain(ids, gains, pool.budget)
        merged = {"sequence_ids": ids[rows], "gains": gains[rows], "objective": float(gains[rows].sum())}
        merged |= {"local_won": False, "candidates": len(ids), "rounds": 1}
    else:
        merged = merge_round_all_points(pool, ordered)
    table = pa.table(
        {
            "sequence_id": pa.array(merged["sequence_ids"], pa.int64()),
            "rank": pa.array(np.arange(len(merged["sequence_ids"])), pa.int64()),
            "gain": pa.array(merged["gains"], pa.float64()),
        },
        schema=SUBSETS["greedi"],
    )
    summary = {
        "greedi_candidates": merged["candidates"],
        "greedi_rounds": merged["rounds"],
        "greedi_subset": len(merged["sequence_ids"]),
        "greedi_objective": merged["objective"],
        "greedi_kept_local_solution": merged["local_won"],
    }
    return Subset(table, summary, phase="merge")


def merge_candidates(pool: SelectionPool, ordered: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """(candidate ids, the best partition's own greedy solution, rounds): each partition's greedy prefix
    (its oversampled budget share) and the best local solution (RandGreeDi keeps the better of the two).
    Above `merge_max_candidates`, groups of partitions are merged first, one task each on their own points."""
    s, budget = pool.scfg, pool.budget
    ids, gains = ordered.column("sequence_id").to_numpy(), ordered.column("gain").to_numpy()
    shard = ordered.column("shard").to_numpy()
    bounds = group_bounds(shard)[0][1:]
    partition_ids = [int(p[0]) for p in np.split(shard, bounds)]
    orders = np.split(ids, bounds)
    best = max(zip(orders, np.split(gains, bounds)), key=lambda p: p[1][:budget].sum())
    local_ids = best[0][:budget]
    counts = [candidate_count(len(o), budget, len(shard), s.greedi_oversample) for o in orders]
    if sum(counts) <= s.merge_max_candidates:
        return np.unique(np.concatenate([o[:c] for o, c in zip(orders, counts)] + [local_ids])), local_ids, 1
    groups = merge_groups(counts, s.merge_max_candidates)
    tasks = []
    for g in groups:
        n_g = sum(len(orders[i]) for i in g)
        keep = group_keep(sum(counts[i] for i in g), n_g, sum(counts), s.merge_max_candidates, budget, len(shard))
        args = ([partition_ids[i] for i in g], pool.scatter, pool.partitions_dir, [counts[i] for i in g], keep)
        tasks.append(Task(group_merge, (*args, s.knn_k, s.merge_knn_params()), resources=pool.partition_resources))
    chosen = pool.executor.run(tasks, "select: merge groups", "groups")
    return np.unique(np.concatenate(chosen + [local_ids])), local_ids, 2


def merge_round_all_points(pool: SelectionPool, ordered: pa.Table) -> dict:
    """The last merge round judged on all the data: one task builds the candidates' index, and every
    point's nearest candidates above its own k-th neighbour's similarity (one task per embedding shard)
    form the objective the merged subset is greedily chosen on."""
    s, ex = pool.scfg, pool.executor
    candidate_ids, local_ids, rounds = merge_candidates(pool, ordered)
    ids = ordered.column("sequence_id").to_numpy()
    by_id = np.argsort(ids, kind="stable")
    thresholds = ex.put((ids[by_id], ordered.column("kth_similarity").to_numpy()[by_id]))
    index = ex.submit(
        Task(
            candidate_index,
            (pool.embed_files, candidate_ids, s.merge_knn_params(), pool.space),
            resources=pool.partition_resources,
        )
    )
    blocks = [
        ex.submit(
            Task(candidate_edges, (f, index, s.knn_k, thresholds, pool.space), resources=pool.partition_resources)
        )
        for f in pool.embed_files
    ]
    local = rows_of(local_ids, candidate_ids, where="the merge candidates")
    budget = min(pool.budget, len(candidate_ids))
    merged = ex.get(ex.submit(Task(merge_round, (budget, local, *blocks), resources=pool.heavy)))
    return merged | {"sequence_ids": candidate_ids[merged["order"]], "candidates": len(candidate_ids), "rounds": rounds}


def semdedup(pool: SelectionPool) -> Subset:
    """SemDeDup within the cluster partitions: points more similar than `dedup_threshold` to an earlier
    point of their cluster go; the subset is the budget drawn uniformly from what is kept (or all of it)."""
    scores = pool.dedup_scores()
    ids, dup = scores.column("sequence_id").to_numpy(), scores.column("duplicate_score").to_numpy()
    kept = semdedup_keep(dup, pool.scfg.dedup_threshold)
    chosen = semdedup_subset(ids[kept], pool.budget, pool.scfg.seed)
    table = (
        scores.take(pa.array(rows_of(chosen, ids, where="the SemDeDup scores")))
        .select(SUBSETS["semdedup"].names)
        .cast(SUBSETS["semdedup"])
    )
    summary = {
        "semdedup_kept": int(kept.sum()),
        "semdedup_subset": len(chosen),
        "semdedup_shortfall": pool.budget - len(chosen),
    }
    return Subset(table, summary, phase="dedup")


def d4(pool: SelectionPool) -> Subset:
    """D4: SemDeDup to `d4_dedup_keep` of the pool, re-cluster what is kept (k-means on a hash sample of
    it), and keep the budget's points farthest from their centroid (one task per embedding shard)."""
    s, scores = pool.scfg, pool.dedup_scores()
    ids, dup = scores.column("sequence_id").to_numpy(), scores.column("duplicate_score").to_numpy()
    keep = round(s.d4_dedup_keep * len(ids))
    if keep < pool.budget:
        raise ValueError(
            f"select.d4_dedup_keep={s.d4_dedup_keep} keeps {keep} of {len(ids)} sequences, fewer than "
            f"the budget ({pool.budget}): raise it to at least select.fraction"
        )
    kept, threshold = dedup_to_ratio(ids, dup, keep)
    kept_ref = pool.executor.put(kept)
    num_clusters = s.d4_clusters or s.partitions_for(len(ids))
    sample = sample_points(
        pool.executor, pool.embed_files, min(1.0, s.kmeans_sample / keep), s.seed, pool.space, kept_ref
    )
    if num_clusters > len(sample):
        raise ValueError(
            f"select.d4_clusters={num_clusters} is more than the {len(sample)} sampled points D4 re-clusters"
        )
    centroids = spherical_kmeans(sample, num_clusters, seed=s.seed)
    nearest = pool.executor.run(
        [Task(centroid_similarity, (f, centroids, pool.space, kept_ref)) for f in pool.embed_files]
    )
    d4_ids, clusters, sims = (np.concatenate([x[i] for x in nearest]) for i in range(3))
    rows = prune_prototypical(d4_ids, sims, pool.budget)
    table = pa.table(
        {
            "sequence_id": pa.array(d4_ids[rows], pa.int64()),
            "rank": pa.array(np.arange(len(rows)), pa.int64()),
            "cluster": pa.array(clusters[rows], pa.int32()),
            "centroid_similarity": pa.array(sims[rows], pa.float32()),
        },
        schema=SUBSETS["d4"],
    )
    summary = {
        "d4_dedup_kept": keep,
        "d4_dedup_threshold": threshold,
        "d4_clusters": num_clusters,
        "d4_subset": len(rows),
    }
    return Subset(table, summary, phase="dedup")


def perplexity(pool: SelectionPool) -> Subset:
    """The perplexity band of the pool (selection/perplexity.py) from the embedding shards' `loss` column,
    in rank order."""
    ids, losses = pool_losses(pool.embed_files)
    rows = perplexity_band(ids, losses, pool.budget, center=pool.scfg.perplexity_center)
    kept = losses[rows]
    summary = {
        "perplexity_subset": len(rows),
        "perplexity_loss_range": [float(kept.min()), float(kept.max())] if len(rows) else None,
        "pool_loss_median": float(np.median(losses)),
    }
    return Subset(pa.table({"sequence_id": ids[rows], "loss": kept}, schema=SUBSETS["perplexity"]), summary)


DIVERSITY = ("ingenious", "greedi")  # the strategies a prefilter runs before (select.prefilter)

# Every strategy by name, in the order a select stage computes them (ingenious always: its probabilities
# are the stage's main output; the others when something uses their subset).
STRATEGIES: dict[str, Callable[[SelectionPool], Subset]] = {
    "ingenious": ingenious,
    "greedi": greedi,
    "semdedup": semdedup,
    "d4": d4,
    "perplexity": perplexity,
    "dsir": dsir,
    "classifier": classifier,
}
