"""select: partitions -> per-partition greedy order with gains (one Ray task each) ->
`ingenious` probabilities and draw 0, and, when something uses it, the `greedi` merge round.

Partitions are `cluster` (spherical k-means cells fitted on a sample, oversized cells split) or
`random` (the paper's). Files: probabilities.parquet (sequence_id, shard, rank, gain, probability),
subset_ingenious.parquet (sequence_id, draw), subset_greedi.parquet (sequence_id, rank, gain; only
when the merge runs), subset_perplexity.parquet (sequence_id, loss; only when something uses the
perplexity band), and subset.parquet, a copy of the configured strategy's subset.
partitions/part-p.parquet hold each task's result, so a resumed run orders only the partitions
that have none.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import ray

from actors.monitor import gather
from actors.selector import (
    assign_clusters,
    candidate_edges,
    candidate_index,
    group_merge,
    merge_round,
    order_partition,
    sample_embeddings,
    scatter_shard,
)
from dataio import uri as U
from dataio.rundir import read_ids, read_table, shard_files, write_parquet
from jobs.config import PipelineConfig, SelectConfig, result_settings
from jobs.stages.base import Context, Stage
from selection.ids import rows_of
from selection.merge import candidate_count, group_keep, merge_by_gain, merge_groups
from selection.partition import group_bounds, random_partition, spherical_kmeans, split_oversized
from selection.perplexity import perplexity_band
from selection.sampling import draw_subset, taylor_softmax


class Select(Stage):
    name = "select"
    needs = ("embed",)

    def settings(self, cfg: PipelineConfig) -> dict:
        return {
            "select": result_settings(cfg.select),
            "greedi_merge": cfg.runs_greedi_merge(),
            "perplexity": cfg.runs_perplexity(),
        }

    def run(self, ctx: Context, out: str) -> dict:
        scfg = ctx.cfg.select
        embed_files = shard_files(ctx.stage("embed"))
        expected = sum(U.parquet_rows(f) for f in shard_files(U.join(ctx.stage("prepare"), "sequences")))
        clock = time.perf_counter()
        ids_per_file, parts_per_file = partition(embed_files, scfg)
        ids, parts = np.concatenate(ids_per_file), np.concatenate(parts_per_file)
        if len(ids) != expected:
            raise ValueError(f"embed/ holds {len(ids)} embeddings but prepare/ has {expected} sequences")
        n, budget = len(ids), round(scfg.fraction * len(ids))
        if budget < 1:
            raise ValueError(f"select.fraction={scfg.fraction} of {n} sequences selects nothing")
        merge_all_points = ctx.cfg.runs_greedi_merge() and scfg.merge_objective == "all_points"
        if merge_all_points and budget > scfg.merge_max_candidates:
            raise ValueError(
                f"select.merge_max_candidates={scfg.merge_max_candidates} is below the budget ({budget} "
                "sequences): the last merge round must hold at least the budget; raise it"
            )
        task = {"num_cpus": scfg.cpus_per_task}
        if scfg.memory_per_task_gb:
            task["memory"] = int(scfg.memory_per_task_gb * 2**30)
        partition_files = {int(p): U.join(out, "partitions", f"part-{p:05d}.parquet") for p in np.unique(parts)}
        todo = [p for p, f in partition_files.items() if not U.exists(f)]
        scatter = U.join(out, "scatter")  # the all_points merge's group rounds read it too
        if todo or merge_all_points:
            ray.get(
                [
                    scatter_shard.remote(f, fp, scatter)
                    for f, fp in zip(embed_files, parts_per_file)
                    if not U.exists(U.join(scatter, U.name(f)))
                ]
            )
        seconds = {"partition": time.perf_counter() - clock}
        clock = time.perf_counter()
        stats = gather(
            [
                order_partition.options(**task, num_gpus=scfg.gpus_per_task).remote(
                    p,
                    scatter,
                    scfg.knn_k,
                    scfg.knn_params(),
                    scfg.optimizer,
                    scfg.epsilon,
                    scfg.seed,
                    partition_files[p],
                )
                for p in todo
            ],
            "select: kNN graph + greedy",
            "partitions",
        )
        seconds["greedy"] = time.perf_counter() - clock
        # Every partition's result, by name (never "the files that happen to be there"), covering the pool.
        ordered = pa.concat_tables([read_table(f) for f in partition_files.values()])
        ordered = ordered.sort_by([("shard", "ascending"), ("rank", "ascending")])
        if ordered.num_rows != n or not np.array_equal(np.sort(ordered.column("sequence_id").to_numpy()), np.sort(ids)):
            raise ValueError(
                f"{U.join(out, 'partitions')}: the partitions' results hold {ordered.num_rows} sequences, "
                f"not the {n} embedded ones"
            )

        # ingenious: Taylor-softmax probabilities per partition, and draw 0 (training redraws the rest).
        shard = ordered.column("shard").to_numpy()
        bounds = group_bounds(shard)[0][1:]
        seq_ids, gains = ordered.column("sequence_id").to_numpy(), ordered.column("gain").to_numpy()
        probs = np.concatenate([taylor_softmax(g) for g in np.split(gains, bounds)])
        write_parquet(
            ordered.select(["sequence_id", "shard", "rank", "gain"]).append_column(
                "probability", pa.array(probs, pa.float64())
            ),
            U.join(out, "probabilities.parquet"),
        )
        draw0 = draw_subset(
            list(zip(np.split(seq_ids, bounds), np.split(probs, bounds))), budget, seed=scfg.seed, draw=0
        )
        write_parquet(
            pa.table({"sequence_id": pa.array(draw0, pa.int64()), "draw": pa.array(np.zeros(len(draw0), np.int32))}),
            U.join(out, "subset_ingenious.parquet"),
        )

        written = ["probabilities.parquet", "subset.parquet", "subset_ingenious.parquet"]
        merged = None
        if ctx.cfg.runs_greedi_merge():
            clock = time.perf_counter()
            merged = greedi(embed_files, scatter, U.join(out, "partitions"), ordered, budget, scfg, task)
            seconds["merge"] = time.perf_counter() - clock
            write_parquet(
                pa.table(
                    {
                        "sequence_id": pa.array(merged["sequence_ids"], pa.int64()),
                        "rank": pa.array(np.arange(len(merged["sequence_ids"])), pa.int64()),
                        "gain": pa.array(merged["gains"], pa.float64()),
                    }
                ),
                U.join(out, "subset_greedi.parquet"),
            )
            written.append("subset_greedi.parquet")
        band = {}
        if ctx.cfg.runs_perplexity():
            target = U.join(out, "subset_perplexity.parquet")
            band = perplexity_subset(embed_files, budget, scfg.perplexity_center, target)
            written.append("subset_perplexity.parquet")
        U.write_bytes(U.join(out, "subset.parquet"), U.read_bytes(U.join(out, f"subset_{scfg.strategy}.parquet")))
        U.delete_tree(scatter)  # a copy of the embeddings, needed only until here
        sizes = np.bincount(shard)
        sizes = sizes[sizes > 0]
        merge_summary = (
            {}
            if merged is None
            else {
                "greedi_candidates": merged["candidates"],
                "greedi_rounds": merged["rounds"],
                "greedi_subset": len(merged["sequence_ids"]),
                "greedi_objective": merged["objective"],
                "greedi_kept_local_solution": merged["local_won"],
            }
        )
        return {
            "sequences": n,
            "budget": budget,
            "partition": scfg.partition,
            "partitions": int(len(sizes)),
            "largest_partition": int(sizes.max()),
            "smallest_partition": int(sizes.min()),
            "ingenious_subset": len(draw0),
            **merge_summary,
            **band,
            "partition_objective": float(gains.sum()),
            "strategy": scfg.strategy,
            "phases_run": list(seconds),
            "seconds_by_phase": seconds,
            "partition_task_seconds": sum(s["seconds"] for s in stats),
            "per_partition": stats,
            "knn_recall": (
                float(np.mean([s["knn_recall"] for s in stats]))
                if stats and stats[0]["knn_recall"] is not None
                else None
            ),
            "written": ", ".join(written),
        }


def perplexity_subset(embed_files: list[str], budget: int, center: float, target: str) -> dict:
    """The perplexity band of the pool (selection/perplexity.py) from the embedding shards' `loss`
    column, written to `target` (sequence_id, loss) in rank order; returns its summary entries."""
    for f in embed_files:
        if "loss" not in U.parquet_file(f).schema_arrow.names:
            raise ValueError(f"{f} has no loss column: the perplexity band needs embed.sequence_loss: true")
    pool = pa.concat_tables([read_table(f, ["sequence_id", "loss"]) for f in embed_files])
    ids, losses = pool.column("sequence_id").to_numpy(), pool.column("loss").to_numpy()
    rows = perplexity_band(ids, losses, budget, center=center)
    write_parquet(
        pa.table({"sequence_id": pa.array(ids[rows], pa.int64()), "loss": pa.array(losses[rows], pa.float32())}),
        target,
    )
    kept = losses[rows]
    return {
        "perplexity_subset": len(rows),
        "perplexity_loss_range": [float(kept.min()), float(kept.max())] if len(rows) else None,
        "pool_loss_median": float(np.median(losses)),
    }


def partition(embed_files: list[str], scfg: SelectConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per embedding shard: (sequence ids, partition of each), from the data and seed alone."""
    ids = [read_ids(f) for f in embed_files]
    total = sum(len(i) for i in ids)
    num_partitions = scfg.partitions_for(total)
    if num_partitions > total:
        raise ValueError(
            f"select.num_partitions={num_partitions} is larger than the pool ({total} sequences in "
            f"{len(embed_files)} embedding shards): use at most {total}, or null for automatic"
        )
    if scfg.partition == "random" or num_partitions == 1:
        return ids, [random_partition(i, num_partitions, scfg.seed) for i in ids]
    rate = min(1.0, scfg.kmeans_sample / total)
    samples = ray.get([sample_embeddings.remote(f, rate, scfg.seed) for f in embed_files])
    dims = {f: s[1].shape[1] for f, s in zip(embed_files, samples)}
    if len(set(dims.values())) > 1:
        first = next(iter(dims))
        odd = next(f for f, d in dims.items() if d != dims[first])
        raise ValueError(
            f"{odd}: embedding dimension {dims[odd]} differs from {dims[first]} in {first}; "
            "every shard of embed/ must come from the same encoder (rerun embed with --force)"
        )
    sample_ids = np.concatenate([s[0] for s in samples])
    sample = np.concatenate([s[1] for s in samples])[np.argsort(sample_ids, kind="stable")]  # order-free
    centroids = spherical_kmeans(sample, min(num_partitions, len(sample)), seed=scfg.seed)
    labelled = ray.get([assign_clusters.remote(f, centroids) for f in embed_files])
    clusters = np.concatenate([x[1] for x in labelled])
    sizes = np.bincount(clusters, minlength=len(centroids))
    max_size = math.ceil(scfg.max_partition_factor * total / num_partitions)
    return [x[0] for x in labelled], [split_oversized(i, c, sizes, max_size, scfg.seed) for i, c in labelled]


def greedi(
    embed_files: list[str],
    scatter: str,
    partitions_dir: str,
    ordered: pa.Table,
    budget: int,
    scfg: SelectConfig,
    task: dict,
) -> dict:
    """Merge round. `partitions`: greedy on the union of the partitions' objectives (their orders
    merged by gain). `all_points`: each partition's greedy prefix (its oversampled budget share) becomes a
    candidate, and so does the best partition's own greedy solution (RandGreeDi keeps the better
    of the two). When the candidates exceed `merge_max_candidates`, groups of partitions are merged
    first (one task each, on the group's own points). The last round: one task builds the
    candidates' index, and every point's nearest candidates above its own k-th neighbour's
    similarity (one task per embedding shard) form the objective, so the merged subset is judged on
    all the data, not only on the candidates."""
    ids, gains = ordered.column("sequence_id").to_numpy(), ordered.column("gain").to_numpy()
    if scfg.merge_objective == "partitions":  # exact greedy on the union: no local solution can beat it
        rows = merge_by_gain(ids, gains, budget)
        return {
            "sequence_ids": ids[rows],
            "gains": gains[rows],
            "objective": float(gains[rows].sum()),
            "local_won": False,
            "candidates": len(ids),
            "rounds": 1,
        }
    shard = ordered.column("shard").to_numpy()
    bounds = np.flatnonzero(np.diff(shard)) + 1
    partition_ids = [int(p[0]) for p in np.split(shard, bounds)]
    orders = np.split(ids, bounds)
    n = len(shard)
    best = max(zip(orders, np.split(gains, bounds)), key=lambda p: p[1][:budget].sum())
    local_ids = best[0][:budget]
    counts = [candidate_count(len(o), budget, n, scfg.greedi_oversample) for o in orders]
    rounds = 1
    if sum(counts) > scfg.merge_max_candidates:
        groups = merge_groups(counts, scfg.merge_max_candidates)
        keep = [
            group_keep(
                sum(counts[i] for i in g),
                sum(len(orders[i]) for i in g),
                sum(counts),
                scfg.merge_max_candidates,
                budget,
                n,
            )
            for g in groups
        ]
        chosen = gather(
            [
                group_merge.options(**task).remote(
                    [partition_ids[i] for i in g],
                    scatter,
                    partitions_dir,
                    [counts[i] for i in g],
                    k,
                    scfg.knn_k,
                    scfg.merge_knn_params(),
                )
                for g, k in zip(groups, keep)
            ],
            "select: merge groups",
            "groups",
        )
        candidate_ids = np.unique(np.concatenate(chosen + [local_ids]))
        rounds = 2
    else:
        candidate_ids = np.unique(np.concatenate([o[:c] for o, c in zip(orders, counts)] + [local_ids]))
    by_id = np.argsort(ids, kind="stable")
    thresholds = ray.put((ids[by_id], ordered.column("kth_similarity").to_numpy()[by_id]))
    index = candidate_index.options(**task).remote(embed_files, candidate_ids, scfg.merge_knn_params())
    blocks = [candidate_edges.options(**task).remote(f, index, scfg.knn_k, thresholds) for f in embed_files]
    local = rows_of(local_ids, candidate_ids, where="the merge candidates")
    merged = ray.get(merge_round.options(**task).remote(min(budget, len(candidate_ids)), local, *blocks))
    merged["sequence_ids"] = candidate_ids[merged["order"]]
    merged["candidates"] = len(candidate_ids)
    merged["rounds"] = rounds
    return merged
