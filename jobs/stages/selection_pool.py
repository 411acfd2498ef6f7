"""What every select strategy reads, computed once per stage run: the selection space, the partitions,
each partition's greedy order with gains, and each cluster's SemDeDup scores.

Every phase is a set of Ray tasks run by the executor, one per embedding shard or per partition, each
writing its result under the stage's folder, so a resumed stage redoes only what has no file yet:
partitions/part-p.parquet (a partition's greedy order), dedup/part-p.parquet (a cluster's SemDeDup
scores) and scatter/ (each embedding shard's rows grouped by partition, deleted at the end of the stage).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from actors.selector import (
    assign_clusters,
    dedup_partition,
    order_partition,
    sample_embeddings,
    scatter_shard,
    shard_moments,
)
from dataio import uri as U
from dataio.contracts import shard_name
from dataio.rundir import read_ids, read_table
from jobs.config import SelectConfig
from jobs.executor import Executor, Pending, Task
from jobs.resources import Resources
from selection.partition import random_partition, spherical_kmeans, split_oversized
from selection.space import Space, fit_space, space_summary

PREFILTERED = "prefiltered"  # the survivors pool's folder inside the stage's


def select_resources(scfg: SelectConfig) -> Resources:
    """Each kNN task's share (select's RESOURCES): the partition tasks and the merge's kNN tasks (a group's
    graph, the candidates' index and its search) may use a GPU, and take the device Ray granted them
    (actors/device.py); SemDeDup and the merge's greedy round take the same CPUs and memory, without it
    (SelectionPool.heavy)."""
    return Resources(cpus=scfg.cpus_per_task, gpus=scfg.gpus_per_task, memory_gb=scfg.memory_per_task_gb)


@dataclass(frozen=True)
class Subset:
    """What a strategy (strategies.py, targeted.py) returns."""

    table: pa.Table  # the subset file's rows, in the strategy's rank order where it has one
    summary: dict
    files: dict[str, pa.Table] = field(default_factory=dict)  # other files of the stage folder it writes
    phase: str | None = None  # the wall-clock phase its time counts in (seconds_by_phase)


@dataclass(frozen=True)
class TargetSample:
    """What the target-aware strategies read besides the embeddings: prepare's sequence shards (decoded
    with the run's tokenizer) and the target's texts, checked against the evaluation sets."""

    sequence_files: list[str]
    tokenizer: str  # prepare's tokenizer folder
    kind: str  # the model kind the tokenizer is loaded for
    texts: list[str]
    dropped: int  # target documents dropped for sharing a span with an evaluation set


@dataclass
class SelectionPool:
    scfg: SelectConfig
    executor: Executor
    out: str  # the stage's folder
    embed_files: list[str]
    space: Space | None  # None: raw embeddings
    space_info: dict
    ids: np.ndarray  # every sequence of the pool (all embedded ones, or a prefilter's survivors), in shard order
    parts: np.ndarray  # the partition of each
    budget: int
    keep: Pending | None = None  # the survivors' ids (stored once in the cluster), None: every sequence
    partition_resources: Resources = field(default_factory=Resources)  # each partition task's (Stage.resources)
    target: TargetSample | None = None  # with select.target only
    seconds: dict[str, float] = field(default_factory=dict)  # wall-clock per phase, in the order run
    _orders: pa.Table | None = None
    _stats: list[dict] = field(default_factory=list)
    _dedup: pa.Table | None = None

    @property
    def scatter(self) -> str:
        return U.join(self.out, "scatter")

    @property
    def partitions_dir(self) -> str:
        return U.join(self.out, "partitions")

    @property
    def heavy(self) -> Resources:
        """SemDeDup's and the merge round's share: the kNN tasks' CPUs and memory, no GPU (no kNN to compute)."""
        return dataclasses.replace(self.partition_resources, gpus=0.0)

    def partition_files(self, folder: str) -> dict[int, str]:
        """One result file per partition in `folder`, by partition number."""
        return {int(p): U.join(self.out, folder, shard_name(p)) for p in np.unique(self.parts)}

    def time(self, phase: str, since: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - since

    def greedy_orders(self) -> pa.Table:
        """Every partition's greedy order (sequence_id, shard, rank, gain, kth_similarity), partition then
        rank order, one task per partition not ordered before; checked to cover the pool exactly."""
        if self._orders is not None:
            return self._orders
        clock = time.perf_counter()
        files = self.partition_files("partitions")
        s = self.scfg
        tasks = [
            Task(
                order_partition,
                (p, self.scatter, s.knn_k, s.knn_params(), s.optimizer, s.epsilon, s.seed, f),
                resources=self.partition_resources,
                outputs=(f,),
            )
            for p, f in files.items()
        ]
        self._stats = [s for s in self.executor.run(tasks, "select: kNN graph + greedy", "partitions") if s]
        self.time("greedy", clock)
        # Every partition's result, by name (never "the files that happen to be there"), covering the pool.
        ordered = pa.concat_tables([read_table(f) for f in files.values()])
        ordered = ordered.sort_by([("shard", "ascending"), ("rank", "ascending")])
        got = ordered.column("sequence_id").to_numpy()
        if ordered.num_rows != len(self.ids) or not np.array_equal(np.sort(got), np.sort(self.ids)):
            raise ValueError(
                f"{self.partitions_dir}: the partitions' results hold {ordered.num_rows} sequences, "
                f"not the {len(self.ids)} embedded ones"
            )
        self._orders = ordered
        return ordered

    @property
    def partition_stats(self) -> list[dict]:
        """The partition tasks' own numbers (seconds, kNN recall, ...) for those that ran now."""
        return self._stats

    def dedup_scores(self) -> pa.Table:
        """Every point's SemDeDup score within its cluster partition, one task per cluster not scored before."""
        if self._dedup is None:
            files = self.partition_files("dedup")
            tasks = [
                Task(dedup_partition, (p, self.scatter, f), resources=self.heavy, outputs=(f,))
                for p, f in files.items()
            ]
            self.executor.run(tasks, "select: SemDeDup", "clusters")
            self._dedup = pa.concat_tables([read_table(f) for f in files.values()])
        return self._dedup

    def scatter_shards(
        self, parts_per_file: list[np.ndarray], *, greedy: bool, dedup: bool, all_points_merge: bool
    ) -> None:
        """Copy each embedding shard (in the selection space) with its rows grouped by partition, so a
        partition task reads only its own rows; shards scattered before are not redone. Only while some
        partition or cluster has no result yet, or for the all_points merge, which reads them too."""
        files = [
            *(self.partition_files("partitions").values() if greedy else []),
            *(self.partition_files("dedup").values() if dedup else []),
        ]
        if not all_points_merge and all(U.exists(f) for f in files):
            return
        tasks = [
            Task(
                scatter_shard, (f, fp, self.scatter, self.space, self.keep), outputs=(U.join(self.scatter, U.name(f)),)
            )
            for f, fp in zip(self.embed_files, parts_per_file)
        ]
        self.executor.run(tasks)


def embedding_space(
    embed_files: list[str], scfg: SelectConfig, executor: Executor | None = None
) -> tuple[Space | None, dict]:
    """The selection space fitted on the whole pool (None: raw embeddings), and its summary: one
    task per shard returns its moments, added here in shard order."""
    if not (scfg.center or scfg.whiten):
        return None, space_summary(None, None)
    parts = (executor or Executor()).run([Task(shard_moments, (f,)) for f in embed_files])
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


def sample_points(
    executor: Executor, embed_files: list[str], rate: float, seed: int, space: Space | None, only: object = None
) -> np.ndarray:
    """A hash sample of the pool's points at `rate` (of those in `only`, a stored id array, if given), in
    the selection space and in id order, so it does not depend on how the pool is sharded."""
    tasks = [Task(sample_embeddings, (f, rate, seed, space, only)) for f in embed_files]
    samples = executor.run(tasks)
    dims = {f: s[1].shape[1] for f, s in zip(embed_files, samples)}
    if len(set(dims.values())) > 1:
        first = next(iter(dims))
        odd = next(f for f, d in dims.items() if d != dims[first])
        raise ValueError(
            f"{odd}: embedding dimension {dims[odd]} differs from {dims[first]} in {first}; "
            "every shard of embed/ must come from the same encoder (rerun embed with --force)"
        )
    sample_ids = np.concatenate([s[0] for s in samples])
    return np.concatenate([s[1] for s in samples])[np.argsort(sample_ids, kind="stable")]


def partition(
    embed_files: list[str],
    scfg: SelectConfig,
    space: Space | None = None,
    executor: Executor | None = None,
    keep: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per embedding shard: (sequence ids, partition of each) of its sequences (those in `keep`, if
    given), from the data and seed alone."""
    executor = executor or Executor()
    ids = [i if keep is None else i[np.isin(i, keep)] for i in map(read_ids, embed_files)]
    total = sum(len(i) for i in ids)
    num_partitions = scfg.partitions_for(total)
    if num_partitions > total:
        raise ValueError(
            f"select.num_partitions={num_partitions} is larger than the pool ({total} sequences in "
            f"{len(embed_files)} embedding shards): use at most {total}, or null for automatic"
        )
    if scfg.partition == "random" or num_partitions == 1:
        return ids, [random_partition(i, num_partitions, scfg.seed) for i in ids]
    only = None if keep is None else executor.put(keep)
    sample = sample_points(executor, embed_files, min(1.0, scfg.kmeans_sample / total), scfg.seed, space, only)
    centroids = spherical_kmeans(sample, min(num_partitions, len(sample)), seed=scfg.seed)
    labelled = executor.run([Task(assign_clusters, (f, centroids, space)) for f in embed_files])
    if keep is not None:
        labelled = [(i[np.isin(i, keep)], c[np.isin(i, keep)]) for i, c in labelled]
    clusters = np.concatenate([x[1] for x in labelled])
    sizes = np.bincount(clusters, minlength=len(centroids))
    max_size = math.ceil(scfg.max_partition_factor * total / num_partitions)
    return [x[0] for x in labelled], [split_oversized(i, c, sizes, max_size, scfg.seed) for i, c in labelled]


def open_pool(
    scfg: SelectConfig,
    executor: Executor,
    out: str,
    embed_files: list[str],
    *,
    expected: int,
    resources: Resources,
    greedy: bool,
    dedup: bool,
    all_points_merge: bool,
) -> SelectionPool:
    """The pool in the selection space, partitioned and scattered by partition (the `partition` phase),
    after checking that embed/ holds one embedding per prepared sequence and that the budget is sane."""
    clock = time.perf_counter()
    space, space_info = embedding_space(embed_files, scfg, executor)
    ids_per_file, parts_per_file = partition(embed_files, scfg, space, executor)
    ids = np.concatenate(ids_per_file)
    if len(ids) != expected:
        raise ValueError(f"embed/ holds {len(ids)} embeddings but prepare/ has {expected} sequences")
    budget = check_sizes(scfg, len(ids), all_points_merge=all_points_merge)
    pool = SelectionPool(
        scfg=scfg,
        executor=executor,
        out=out,
        embed_files=embed_files,
        space=space,
        space_info=space_info,
        ids=ids,
        parts=np.concatenate(parts_per_file),
        budget=budget,
        partition_resources=resources,
    )
    pool.scatter_shards(parts_per_file, greedy=greedy, dedup=dedup, all_points_merge=all_points_merge)
    pool.time("partition", clock)
    return pool


def check_sizes(scfg: SelectConfig, n: int, *, all_points_merge: bool) -> int:
    """The budget, round(fraction * n), after checking that the settings fit a pool of n sequences."""
    if scfg.partitions_for(n) > n:
        raise ValueError(
            f"select.num_partitions={scfg.partitions_for(n)} is larger than the pool ({n} sequences): "
            f"use at most {n}, or null for automatic"
        )
    budget = round(scfg.fraction * n)
    if budget < 1:
        raise ValueError(f"select.fraction={scfg.fraction} of {n} sequences selects nothing")
    if all_points_merge and budget > scfg.merge_max_candidates:
        raise ValueError(
            f"select.merge_max_candidates={scfg.merge_max_candidates} is below the budget ({budget} "
            "sequences): the last merge round must hold at least the budget; raise it"
        )
    return budget


def survivors_pool(pool: SelectionPool, survivors: np.ndarray, *, all_points_merge: bool) -> SelectionPool:
    """The pool restricted to a prefilter's survivors, in its own folder (out/prefiltered/: its partitions
    and scatter), in the same space and with the same budget; its phases' time adds to the pool's."""
    clock = time.perf_counter()
    survivors = np.sort(survivors)
    ids_per_file, parts_per_file = partition(pool.embed_files, pool.scfg, pool.space, pool.executor, survivors)
    small = SelectionPool(
        scfg=pool.scfg,
        executor=pool.executor,
        out=U.join(pool.out, PREFILTERED),
        embed_files=pool.embed_files,
        space=pool.space,
        space_info=pool.space_info,
        ids=np.concatenate(ids_per_file),
        parts=np.concatenate(parts_per_file),
        budget=pool.budget,
        seconds=pool.seconds,
        keep=pool.executor.put(survivors),
        partition_resources=pool.partition_resources,
    )
    small.scatter_shards(parts_per_file, greedy=True, dedup=False, all_points_merge=all_points_merge)
    small.time("partition", clock)
    return small


def pool_losses(embed_files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sequence ids, loss) of every embedded sequence, from the shards' `loss` column (embed.sequence_loss)."""
    for f in embed_files:
        if "loss" not in U.parquet_file(f).schema_arrow.names:
            raise ValueError(f"{f} has no loss column: the perplexity band needs embed.sequence_loss: true")
    table = pa.concat_tables([read_table(f, ["sequence_id", "loss"]) for f in embed_files])
    return table.column("sequence_id").to_numpy(), table.column("loss").to_numpy()
