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
selection/space.py), fitted once by a map-reduce over the shards. The shared phases are in
selection_pool.py, each strategy a function of strategies.py; this file runs them in order and writes.
"""

from __future__ import annotations

import time

import numpy as np

from dataio import uri as U
from dataio.configfile import result_settings
from dataio.contracts import PrepareOutputs, SelectOutputs
from dataio.corpus import corpus_snapshot
from dataio.rundir import shard_files, write_parquet
from jobs.config import PipelineConfig
from jobs.resources import Resources
from jobs.stages.base import Context, Stage
from jobs.stages.prefilters import prefilter
from jobs.stages.selection_pool import (
    SelectionPool,
    TargetSample,
    check_sizes,
    open_pool,
    select_resources,
    survivors_pool,
)
from jobs.stages.strategies import DIVERSITY, STRATEGIES
from jobs.stages.targeted import read_target


def all_points(cfg: PipelineConfig) -> bool:
    """Whether the GreeDi merge runs and judges candidates on every point (merge_objective all_points)."""
    return cfg.runs_greedi_merge() and cfg.select.merge_objective == "all_points"


def strategies_to_run(cfg: PipelineConfig) -> list[str]:
    """ingenious (its probabilities are the stage's main output), then every subset something uses."""
    return ["ingenious", *[name for name in STRATEGIES if name != "ingenious" and name in cfg.fixed_subsets()]]


class Select(Stage):
    name = "select"
    needs = ("embed",)

    def settings(self, cfg: PipelineConfig) -> dict:
        settings = {
            "select": result_settings(cfg.select),
            "greedi_merge": cfg.runs_greedi_merge(),
            "dedup_subsets": cfg.dedup_subsets(),
            "perplexity": cfg.runs_perplexity(),
        }
        if cfg.target_subsets():  # the target's content: a changed target is a new selection
            settings |= {"target_subsets": cfg.target_subsets(), "target": corpus_snapshot(cfg.select.target)}
        return settings

    def resources(self, cfg: PipelineConfig) -> Resources:
        return select_resources(cfg.select)

    checked_after = "prepare"

    def precheck(self, ctx: Context) -> int:
        """The pool's size (prepare's sequences), after checking the settings fit it (a fraction that rounds
        to no sequence, more partitions than sequences): right after prepare, not after a warm start."""
        n = sum(U.parquet_rows(f) for f in shard_files(U.join(ctx.stage("prepare"), PrepareOutputs.SEQUENCES)))
        check_sizes(ctx.cfg.select, n, all_points_merge=all_points(ctx.cfg))
        return n

    def plan(self, ctx: Context) -> tuple[int, TargetSample | None]:
        """The pool's size and the target sample, if any; settings that do not fit the pool and a target
        holding an evaluation document stop the run here, before select/ is cleared."""
        n = self.precheck(ctx)
        return n, read_target(ctx.cfg, ctx.stage("prepare")) if ctx.cfg.target_subsets() else None

    def run(self, ctx: Context, out: str) -> dict:
        scfg = ctx.cfg.select
        embed_files = shard_files(ctx.stage("embed"))
        expected, target = ctx.plan if ctx.plan is not None else self.plan(ctx)
        all_points_merge = all_points(ctx.cfg)
        pool = open_pool(
            scfg,
            ctx.executor,
            out,
            embed_files,
            expected=expected,
            resources=self.resources(ctx.cfg),
            greedy=not scfg.prefilter,
            dedup=bool(ctx.cfg.dedup_subsets()) or "semdedup" in scfg.prefilter,
            all_points_merge=all_points_merge and not scfg.prefilter,
        )
        pool.target = target
        diverse, prefiltered = pool, {}
        if scfg.prefilter:  # quality first: INGENIOUS and GreeDi choose among the survivors
            survivors, record, prefiltered = prefilter(pool)
            write_parquet(record, U.join(out, SelectOutputs.PREFILTER))
            diverse = survivors_pool(pool, survivors, all_points_merge=all_points_merge)
        written, summaries = [], dict(prefiltered)
        for name in strategies_to_run(ctx.cfg):
            clock = time.perf_counter()
            subset = STRATEGIES[name](diverse if name in DIVERSITY else pool)
            for file, table in subset.files.items():
                write_parquet(table, U.join(out, file))
                written.append(file)
            write_parquet(subset.table, U.join(out, SelectOutputs.subset(name)))
            written.append(SelectOutputs.subset(name))
            summaries |= subset.summary
            if subset.phase:
                pool.time(subset.phase, clock)
        strategy_file = U.join(out, SelectOutputs.subset(scfg.strategy))
        if not U.exists(strategy_file):
            raise ValueError(f"select.strategy {scfg.strategy!r}: this select stage did not write {strategy_file}")
        U.write_bytes(U.join(out, SelectOutputs.SUBSET), U.read_bytes(strategy_file))
        for p in {pool.scatter, diverse.scatter}:
            U.delete_tree(p)  # a copy of the embeddings, needed only until here
        written = [written[0], SelectOutputs.SUBSET, *written[1:]]
        if scfg.prefilter:
            written.append(SelectOutputs.PREFILTER)
        return self.summary(diverse, len(pool.ids), summaries, written)

    @staticmethod
    def summary(pool: SelectionPool, sequences: int, strategies: dict, written: list[str]) -> dict:
        """The stage's summary: the pool, the partitions INGENIOUS and GreeDi ran on (the prefilter's
        survivors', with one), each strategy's entries, the time per phase."""
        sizes = np.bincount(pool.parts)
        sizes = sizes[sizes > 0]
        stats = pool.partition_stats
        return {
            "sequences": sequences,
            "budget": pool.budget,
            "partition": pool.scfg.partition,
            "partitions": int(len(sizes)),
            "largest_partition": int(sizes.max()),
            "smallest_partition": int(sizes.min()),
            **strategies,
            "space": pool.space_info,
            "strategy": pool.scfg.strategy,
            "phases_run": list(pool.seconds),
            "seconds_by_phase": pool.seconds,
            "partition_task_seconds": sum(s["seconds"] for s in stats),
            "per_partition": stats,
            "knn_recall": (
                float(np.mean([s["knn_recall"] for s in stats]))
                if stats and stats[0]["knn_recall"] is not None
                else None
            ),
            "written": ", ".join(written),
        }
