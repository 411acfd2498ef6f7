"""Scale run: 25% of N synthetic 384-d embeddings through the real Ray select stage on this machine.

    python -m bench.scale --n 1000000                     # the ingenious strategy (no merge)
    python -m bench.scale --n 1000000 --strategy greedi   # with the GreeDi merge round
    python -m bench.scale --n 250000 500000 1000000       # growth of each cost, for the README's projection

Writes a throwaway run directory (embedding shards of 50k rows and matching sequence-id shards),
starts a local Ray cluster, runs the select stage (cluster partitions of ~n/64 points, IVF kNN
graphs, lazy greedy over every partition, the `ingenious` draw, and with `--strategy greedi` the
merge: by gain, or with `--merge-objective all_points` over all points), and prints the time of each phase
and the peak memory of all processes
together above idle Ray, ending with one line per run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from actors.monitor import PeakRss
from bench.common import markdown_table, write_result
from dataio.contracts import PrepareOutputs, shard_name
from dataio.rundir import RunDir, embedding_table, write_parquet
from jobs.config import PipelineConfig, SelectConfig
from jobs.stages.base import Context
from jobs.stages.select import Select

SHARD = 50_000


def write_synthetic_run(root: Path, n: int, d: int = 384, clusters: int = 100, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    spread = rng.uniform(0.5, 1.5, size=clusters).astype(np.float32)
    for s, start in enumerate(range(0, n, SHARD)):
        m = min(SHARD, n - start)
        r = np.random.default_rng([seed, s])
        labels = r.integers(clusters, size=m)
        x = centres[labels] + 1.2 * spread[labels, None] * r.standard_normal((m, d), dtype=np.float32)
        ids = r.integers(-(2**62), 2**62, size=m)
        write_parquet(embedding_table(ids, x), root / "embed" / shard_name(s))
        write_parquet(
            pa.table({"sequence_id": pa.array(ids, pa.int64())}),
            root / "prepare" / PrepareOutputs.SEQUENCES / shard_name(s),
        )


def scale_run(n: int, partitions: int, strategy: str, merge_objective: str, merge_max_candidates: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="ingenious-scale-"))
    try:
        start = time.perf_counter()
        write_synthetic_run(root, n)
        print(f"wrote {n} synthetic embeddings in {time.perf_counter() - start:.1f}s to {root}", flush=True)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        cfg = PipelineConfig(
            select=SelectConfig(
                partition="cluster",
                num_partitions=partitions,
                knn_k=20,
                knn_method="ivf",
                fraction=0.25,
                strategy=strategy,
                merge_objective=merge_objective,
                merge_max_candidates=merge_max_candidates,
            )
        )
        out = root / "select"
        out.mkdir()
        with PeakRss(interval=0.2) as mem:
            start = time.perf_counter()
            summary = Select().run(Context(cfg, RunDir(root)), out)
            total = time.perf_counter() - start
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    phases = summary["seconds_by_phase"]
    print(
        json.dumps(
            {
                k: summary.get(k)
                for k in (
                    "sequences",
                    "budget",
                    "partitions",
                    "largest_partition",
                    "ingenious_subset",
                    "greedi_subset",
                    "greedi_candidates",
                    "greedi_rounds",
                    "phases_run",
                )
            }
        )
    )
    per_partition = np.mean([s["seconds"] for s in summary["per_partition"]])
    print(
        f"select stage: {total:.1f}s total = "
        + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
        + f", rest {total - sum(phases.values()):.1f}s; {per_partition:.2f}s per partition task "
        f"({n // partitions} points); peak memory of all processes {mem.peak / 2**30:.2f} GB above idle"
    )
    name = strategy if strategy == "ingenious" else f"greedi/{merge_objective}"
    return {
        "n": n,
        "strategy": name,
        "total_s": total,
        "peak_gb": mem.peak / 2**30,
        **phases,
        "partitions": partitions,
        "phases": list(phases),
        "partition_task_s": per_partition,
        "candidates": summary.get("greedi_candidates"),
        "rounds": summary.get("greedi_rounds"),
    }


def table(results: list[dict]) -> str:
    """One row per run: the select stage's seconds by phase and the peak memory above idle Ray."""
    return "25% of n synthetic 384-d embeddings through the Ray select stage (2 Ray CPUs).\n\n" + markdown_table(
        ["n", "strategy", "partitions", "total s", "partition s", "kNN + greedy s", "merge s", "rest s", "peak GB"],
        [
            [
                f"{r['n']:,}",
                r["strategy"],
                r["partitions"],
                f"{r['total_s']:.1f}",
                f"{r['partition']:.1f}",
                f"{r['greedy']:.1f}",
                f"{r.get('merge', 0.0):.1f}",
                f"{r['total_s'] - sum(r.get(k, 0.0) for k in r['phases']):.1f}",
                f"{r['peak_gb']:.2f}",
            ]
            for r in results
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--partitions", type=int, default=None, help="default: n / 15,625 (64 at 1M)")
    parser.add_argument("--strategy", choices=("ingenious", "greedi"), default="ingenious")
    parser.add_argument("--merge-objective", choices=("partitions", "all_points"), default="partitions")
    parser.add_argument(
        "--merge-max-candidates",
        type=int,
        default=SelectConfig().merge_max_candidates,
        help="all_points only: above it, groups of partitions are merged first",
    )
    args = parser.parse_args()
    results = [
        scale_run(
            n, args.partitions or max(1, n // 15_625), args.strategy, args.merge_objective, args.merge_max_candidates
        )
        for n in args.n
    ]
    for r in results:
        print(
            f"bench.scale n={r['n']} strategy={r['strategy']} total={r['total_s']:.1f}s "
            f"peak={r['peak_gb']:.2f}GB partition={r['partition']:.1f}s greedy={r['greedy']:.1f}s "
            f"merge={r.get('merge', 0.0):.1f}s candidates={r['candidates']} rounds={r['rounds']}"
        )
    write_result("scale", {"runs": results}, table(results), form=f"{results[-1]['strategy'].split('/')[0]}")
