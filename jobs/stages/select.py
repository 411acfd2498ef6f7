"""select: partitions -> per-partition greedy order with gains (one Ray task each) ->
`ingenious` probabilities and draw 0, and, when something uses it, the `greedi` merge round.

Partitions are `cluster` (spherical k-means cells fitted on a sample, oversized cells split) or
`random` (the paper's). Files: probabilities.parquet (sequence_id, shard, rank, gain, probability),
subset_ingenious.parquet (sequence_id, draw), subset_greedi.parquet (sequence_id, rank, gain; only
when the merge runs), subset_perplexity.parquet (sequence_id, loss), subset_semdedup.parquet
(sequence_id, cluster, centroid_similarity, duplicate_score) and subset_d4.parquet (sequence_id,
rank, cluster, centroid_similarity), each only when something uses it, and subset.parquet, a copy
of the configured strategy's subset.
partitions/part-p.parquet hold each task's result (dedup/part-p.parquet each cluster's SemDeDup
scores), so a resumed run redoes only the partitions that have none.

Every embedding the stage reads is first put in the selection space (select.center / select.whiten,
selection/space.py), fitted once by a map-reduce over the shards.
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
    centroid_similarity,
    dedup_partition,
    group_merge,
    merge_round,
    order_partition,
    sample_embeddings,
    scatter_shard,
    shard_moments,
)
from dataio import uri as U
from dataio.configfile import result_settings
from dataio.contracts import PrepareOutputs, SelectOutputs, shard_name
from dataio.rundir import read_ids, read_table, shard_files, write_parquet
from jobs.config import PipelineConfig, SelectConfig
from jobs.stages.base import Context, Stage
from selection.dedup import dedup_to_ratio, prune_prototypical, semdedup_keep, semdedup_subset
from selection.ids import rows_of
from selection.merge import candidate_count, group_keep, merge_by_gain, merge_groups
from selection.partition import group_bounds, random_partition, spherical_kmeans, split_oversized
from selection.perplexity import perplexity_band
from selection.sampling import draw_subset, taylor_softmax
from selection.space import Space, fit_space, space_summary

SUBSETS = SelectOutputs.SUBSET_SCHEMAS  # each subset file's columns


class Select(Stage):
    name = "select"
    needs = ("embed",)

    def settings(self, cfg: PipelineConfig) -> dict:
        return {
            "select": result_settings(cfg.select),
            "greedi_merge": cfg.runs_greedi_merge(),
            "dedup_subsets": cfg.dedup_subsets(),
            "perplexity": cfg.runs_perplexity(),
        }

    def run(self, ctx: Context, out: str) -> dict:
        scfg = ctx.cfg.select
        embed_files = shard_files(ctx.stage("embed"))
        expected = sum(U.parquet_rows(f) for f in shard_files(U.join(ctx.stage("prepare"), PrepareOutputs.SEQUENCES)))
        clock = time.perf_counter()
        space, space_info = embedding_space(embed_files, scfg)
        ids_per_file, parts_per_file = partition(embed_files, scfg, space)
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
        partition_files = {int(p): U.join(out, "partitions", shard_name(p)) for p in np.unique(parts)}
        todo = [p for p, f in partition_files.items() if not U.exists(f)]
        scatter = U.join(out, "scatter")  # the all_points merge's group rounds and SemDeDup read it too
        dedup_files = {p: U.join(out, "dedup", shard_name(p)) for p in partition_files}
        dedup_todo = [p for p, f in dedup_files.items() if not U.exists(f)] if ctx.cfg.dedup_subsets() else []
        if todo or merge_all_points or dedup_todo:
            ray.get(
                [
                    scatter_shard.remote(f, fp, scatter, space)
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
            ordered.select(["sequence_id", "shard", "rank", "gain"])
            .append_column("probability", pa.array(probs, pa.float64()))
            .cast(SelectOutputs.PROBABILITIES_SCHEMA),
            U.join(out, SelectOutputs.PROBABILITIES),
        )
        draw0 = draw_subset(
            list(zip(np.split(seq_ids, bounds), np.split(probs, bounds))), budget, seed=scfg.seed, draw=0
        )
        write_parquet(
            pa.table({"sequence_id": draw0, "draw": np.zeros(len(draw0), np.int32)}, schema=SUBSETS["ingenious"]),
            U.join(out, SelectOutputs.subset("ingenious")),
        )

        written = [SelectOutputs.PROBABILITIES, SelectOutputs.SUBSET, SelectOutputs.subset("ingenious")]
        merged = None
        if ctx.cfg.runs_greedi_merge():
            clock = time.perf_counter()
            merged = greedi(embed_files, scatter, U.join(out, "partitions"), ordered, budget, scfg, task, space)
            seconds["merge"] = time.perf_counter() - clock
            write_parquet(
                pa.table(
                    {
                        "sequence_id": pa.array(merged["sequence_ids"], pa.int64()),
                        "rank": pa.array(np.arange(len(merged["sequence_ids"])), pa.int64()),
                        "gain": pa.array(merged["gains"], pa.float64()),
                    },
                    schema=SUBSETS["greedi"],
                ),
                U.join(out, SelectOutputs.subset("greedi")),
            )
            written.append(SelectOutputs.subset("greedi"))
        dedup_summary = {}
        if ctx.cfg.dedup_subsets():
            clock = time.perf_counter()
            dedup_summary = dedup_subsets(
                ctx.cfg.dedup_subsets(), embed_files, scatter, out, dedup_files, dedup_todo, budget, scfg, task, space
            )
            seconds["dedup"] = time.perf_counter() - clock
            written += [SelectOutputs.subset(name) for name in ctx.cfg.dedup_subsets()]
        band = {}
        if ctx.cfg.runs_perplexity():
            band = perplexity_subset(
                embed_files, budget, scfg.perplexity_center, U.join(out, SelectOutputs.subset("perplexity"))
            )
            written.append(SelectOutputs.subset("perplexity"))
        strategy_file = U.join(out, SelectOutputs.subset(scfg.strategy))
        if not U.exists(strategy_file):
            raise ValueError(f"select.strategy {scfg.strategy!r}: this select stage did not write {strategy_file}")
        U.write_bytes(U.join(out, SelectOutputs.SUBSET), U.read_bytes(strategy_file))
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
            **dedup_summary,
            "space": space_info,
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
        pa.table({"sequence_id": ids[rows], "loss": losses[rows]}, schema=SUBSETS["perplexity"]),
        target,
    )
    kept = losses[rows]
    return {
        "perplexity_subset": len(rows),
        "perplexity_loss_range": [float(kept.min()), float(kept.max())] if len(rows) else None,
        "pool_loss_median": float(np.median(losses)),
    }


def embedding_space(embed_files: list[str], scfg: SelectConfig) -> tuple[Space | None, dict]:
    """The selection space fitted on the whole pool (None: raw embeddings), and its summary: one
    task per shard returns its moments, added here in shard order."""
    if not (scfg.center or scfg.whiten):
        return None, space_summary(None, None)
    parts = ray.get([shard_moments.remote(f) for f in embed_files])
    total = parts[0]
    for f, m in zip(embed_files[1:], parts[1:]):
        if m.total.shape != total.total.shape:
            raise ValueError(
                f"{f}: embedding dimension {m.total.shape[0]} differs from {total.total.shape[0]} in "
                f"{embed_files[0]}; every shard of embed/ must come from the same encoder (rerun embed with --force)"
            )
        total = total + m
    space = fit_space(total, whiten=scfg.whiten, eps=scfg.whiten_eps)
    return space, space_summary(space, total)


def partition(
    embed_files: list[str], scfg: SelectConfig, space: Space | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
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
    samples = ray.get([sample_embeddings.remote(f, rate, scfg.seed, space) for f in embed_files])
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
    labelled = ray.get([assign_clusters.remote(f, centroids, space) for f in embed_files])
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
    space: Space | None,
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
    index = candidate_index.options(**task).remote(embed_files, candidate_ids, scfg.merge_knn_params(), space)
    blocks = [candidate_edges.options(**task).remote(f, index, scfg.knn_k, thresholds, space) for f in embed_files]
    local = rows_of(local_ids, candidate_ids, where="the merge candidates")
    merged = ray.get(merge_round.options(**task).remote(min(budget, len(candidate_ids)), local, *blocks))
    merged["sequence_ids"] = candidate_ids[merged["order"]]
    merged["candidates"] = len(candidate_ids)
    merged["rounds"] = rounds
    return merged


def dedup_subsets(
    names: list[str],
    embed_files: list[str],
    scatter: str,
    out: str,
    dedup_files: dict[int, str],
    todo: list[int],
    budget: int,
    scfg: SelectConfig,
    task: dict,
    space: Space | None,
) -> dict:
    """SemDeDup and D4 (selection/dedup.py). SemDeDup's clusters are the stage's cluster partitions
    (its k-means cells; an oversized cell split by id hash is deduplicated piece by piece), one task
    each, scoring every point once; the threshold (SemDeDup) or the target ratio (D4) is then a cut
    on the scores here. D4 re-clusters what its dedup kept (k-means on a hash sample of it, as the
    partitions are fitted) and keeps the budget's points farthest from their centroid, one task per
    embedding shard."""
    gather(
        [dedup_partition.options(**task).remote(p, scatter, dedup_files[p]) for p in todo],
        "select: SemDeDup",
        "clusters",
    )
    scores = pa.concat_tables([read_table(f) for f in dedup_files.values()])
    ids = scores.column("sequence_id").to_numpy()
    dup = scores.column("duplicate_score").to_numpy()
    summary = {}
    if "semdedup" in names:
        kept = semdedup_keep(dup, scfg.dedup_threshold)
        chosen = semdedup_subset(ids[kept], budget, scfg.seed)
        write_parquet(
            scores.take(pa.array(rows_of(chosen, ids, where="the SemDeDup scores")))
            .select(SUBSETS["semdedup"].names)
            .cast(SUBSETS["semdedup"]),
            U.join(out, SelectOutputs.subset("semdedup")),
        )
        summary |= {
            "semdedup_kept": int(kept.sum()),
            "semdedup_subset": len(chosen),
            "semdedup_shortfall": budget - len(chosen),
        }
    if "d4" in names:
        keep = round(scfg.d4_dedup_keep * len(ids))
        if keep < budget:
            raise ValueError(
                f"select.d4_dedup_keep={scfg.d4_dedup_keep} keeps {keep} of {len(ids)} sequences, fewer than "
                f"the budget ({budget}): raise it to at least select.fraction"
            )
        kept, threshold = dedup_to_ratio(ids, dup, keep)
        kept_ref = ray.put(kept)
        num_clusters = scfg.d4_clusters or scfg.partitions_for(len(ids))
        rate = min(1.0, scfg.kmeans_sample / keep)
        samples = ray.get([sample_embeddings.remote(f, rate, scfg.seed, space, kept_ref) for f in embed_files])
        sample_ids = np.concatenate([s[0] for s in samples])
        sample = np.concatenate([s[1] for s in samples])[np.argsort(sample_ids, kind="stable")]  # order-free
        if num_clusters > len(sample):
            raise ValueError(
                f"select.d4_clusters={num_clusters} is more than the {len(sample)} sampled points D4 re-clusters"
            )
        centroids = spherical_kmeans(sample, num_clusters, seed=scfg.seed)
        nearest = ray.get([centroid_similarity.remote(f, centroids, space, kept_ref) for f in embed_files])
        d4_ids = np.concatenate([x[0] for x in nearest])
        clusters = np.concatenate([x[1] for x in nearest])
        sims = np.concatenate([x[2] for x in nearest])
        rows = prune_prototypical(d4_ids, sims, budget)
        write_parquet(
            pa.table(
                {
                    "sequence_id": pa.array(d4_ids[rows], pa.int64()),
                    "rank": pa.array(np.arange(len(rows)), pa.int64()),
                    "cluster": pa.array(clusters[rows], pa.int32()),
                    "centroid_similarity": pa.array(sims[rows], pa.float32()),
                },
                schema=SUBSETS["d4"],
            ),
            U.join(out, SelectOutputs.subset("d4")),
        )
        summary |= {
            "d4_dedup_kept": keep,
            "d4_dedup_threshold": threshold,
            "d4_clusters": num_clusters,
            "d4_subset": len(rows),
        }
    return summary
