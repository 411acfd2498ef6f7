"""select: random partitions -> per-partition greedy order with gains (one Ray task each) ->
`ingenious` probabilities and draw 0, and the `greedi` merge round.

Files: probabilities.parquet (sequence_id, shard, rank, gain, probability), subset_ingenious.parquet
(sequence_id, draw), subset_greedi.parquet (sequence_id, rank, gain), and subset.parquet, a copy
of the configured strategy's subset. partitions/part-p.parquet hold each task's result, so a
resumed run orders only the partitions that have none.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from actors.selector import merge_candidates, order_partition
from dataio.rundir import read_table, shard_files, write_parquet
from jobs.config import PipelineConfig
from jobs.stages.base import Context, Stage
from selection.partition import random_partition
from selection.sampling import draw_subset, taylor_softmax
from selection.shard import greedi_candidates


class Select(Stage):
    name = "select"
    needs = ("embed",)

    def settings(self, cfg: PipelineConfig) -> dict:
        return {"select": dataclasses.asdict(cfg.select)}

    def run(self, ctx: Context, out: Path) -> dict:
        scfg = ctx.cfg.select
        embed_files = [str(f) for f in shard_files(ctx.stage("embed"))]
        ids = np.concatenate([read_table(f, ["sequence_id"]).column("sequence_id").to_numpy() for f in embed_files])
        expected = sum(read_table(f, ["sequence_id"]).num_rows for f in shard_files(ctx.stage("prepare") / "sequences"))
        if len(ids) != expected:
            raise ValueError(f"embed/ holds {len(ids)} embeddings but prepare/ has {expected} sequences")
        n = len(ids)
        budget = round(scfg.fraction * n)
        if budget < 1:
            raise ValueError(f"select.fraction={scfg.fraction} of {n} sequences selects nothing")
        parts = random_partition(ids, scfg.num_partitions, scfg.seed)
        refs, stats = [], []
        for p in range(scfg.num_partitions):
            path = out / "partitions" / f"part-{p:05d}.parquet"
            members = ids[parts == p]
            if len(members) and not path.exists():
                refs.append(order_partition.options(num_cpus=scfg.cpus_per_task).remote(
                    p, embed_files, members, scfg.knn_k, str(path)))
        stats = ray.get(refs)
        ordered = pa.concat_tables([read_table(f) for f in shard_files(out / "partitions")])
        ordered = ordered.sort_by([("shard", "ascending"), ("rank", "ascending")])

        # ingenious: Taylor-softmax probabilities per partition, and draw 0 (training redraws the rest).
        shard = ordered.column("shard").to_numpy()
        bounds = np.flatnonzero(np.diff(shard)) + 1
        seq_ids, gains = ordered.column("sequence_id").to_numpy(), ordered.column("gain").to_numpy()
        probs = np.concatenate([taylor_softmax(g) for g in np.split(gains, bounds)])
        write_parquet(ordered.append_column("probability", pa.array(probs, pa.float64())), out / "probabilities.parquet")
        partitions = list(zip(np.split(seq_ids, bounds), np.split(probs, bounds)))
        draw0 = draw_subset(partitions, budget, seed=scfg.seed, draw=0)
        write_parquet(pa.table({"sequence_id": pa.array(draw0, pa.int64()),
                                "draw": pa.array(np.zeros(len(draw0), np.int32))}), out / "subset_ingenious.parquet")

        # greedi: each partition's greedy prefix (its oversampled budget share) -> one merge task.
        candidates = np.concatenate([
            part_ids[: greedi_candidates(len(part_ids), budget, n, scfg.greedi_oversample)]
            for part_ids in np.split(seq_ids, bounds)])
        merged = ray.get(merge_candidates.options(num_cpus=scfg.cpus_per_task).remote(
            embed_files, candidates, min(budget, len(candidates)), scfg.knn_k))
        write_parquet(pa.table({"sequence_id": pa.array(merged["sequence_ids"], pa.int64()),
                                "rank": pa.array(np.arange(len(merged["sequence_ids"])), pa.int64()),
                                "gain": pa.array(merged["gains"], pa.float64())}), out / "subset_greedi.parquet")
        shutil.copyfile(out / f"subset_{scfg.strategy}.parquet", out / "subset.parquet")
        sizes = np.bincount(shard, minlength=scfg.num_partitions)
        return {
            "sequences": n, "budget": budget, "partitions": scfg.num_partitions,
            "partition_sizes": [int(s) for s in sizes], "ingenious_subset": len(draw0),
            "greedi_candidates": int(merged["candidates"]), "greedi_subset": len(merged["sequence_ids"]),
            "greedi_merge_objective": merged["objective"], "strategy": scfg.strategy,
            "partition_seconds": sum(s["seconds"] for s in stats),
            "written": "probabilities.parquet, subset.parquet, subset_ingenious.parquet, subset_greedi.parquet",
        }

