"""Peak memory of one training worker as the pool grows: rows loaded per window against the whole pool.

    python -m bench.train_memory [--pools 100000 1000000] [--steps 3]

A synthetic pool (128 random token ids per sequence, shards of 50,000 rows) and a tiny BERT; the
worker is rank 0 of 2, built by actors.trainer.build_trainer exactly as a Ray Train worker builds
it, and runs a few steps of a long run (1M steps), so its first window is full (WINDOW_ROWS rows).
"old" is the path before the row windows: the same trainer fed every sequence of the pool read
into memory (dataio.rundir.read_sequences). Each measurement runs in a fresh process and reports
that process's peak RSS (the worker's whole footprint: Python, torch, model, pool).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import markdown_table, write_result
from dataio.contracts import PrepareOutputs, shard_name
from training.loop import WINDOW_ROWS

SEQ_LEN, SHARD_ROWS, VOCAB = 128, 50_000, 1000


def write_pool(root: Path, n: int, seed: int = 0) -> None:
    """root/tokenizer and root/sequences: n sequences of SEQ_LEN random ids of the tokenizer's vocabulary."""
    from dataio.corpus import BUILTIN_WIKI, read_documents
    from training.tokenizer import train_tokenizer

    tok = train_tokenizer(
        [d.text for d in islice(read_documents(BUILTIN_WIKI), 300)],
        kind="bert",
        vocab_size=VOCAB,
        out_dir=root / PrepareOutputs.TOKENIZER,
    )
    rng = np.random.default_rng(seed)
    ids = rng.choice(2**62, size=n, replace=False).astype(np.int64)  # unique, unordered, like content hashes
    (root / PrepareOutputs.SEQUENCES).mkdir()
    for f, start in enumerate(range(0, n, SHARD_ROWS)):
        rows = min(SHARD_ROWS, n - start)
        tokens = rng.integers(5, len(tok), size=(rows, SEQ_LEN), dtype=np.int32)
        tokens[:, 0], tokens[:, -1] = tok.cls_token_id, tok.sep_token_id
        lists = pa.ListArray.from_arrays(
            pa.array(np.arange(0, rows * SEQ_LEN + 1, SEQ_LEN, dtype=np.int32)), pa.array(tokens.ravel())
        )
        pq.write_table(
            pa.table({"sequence_id": ids[start : start + rows], "input_ids": lists}),
            root / PrepareOutputs.SEQUENCES / shard_name(f),
        )


def worker(root: Path, *, subset: str, path: str, steps: int, window_rows: int) -> dict:
    """Build rank 0 of 2 and run `steps` steps; peak RSS and timings of this process."""
    import torch

    from actors.trainer import build_trainer, launch_args
    from dataio.rundir import read_sequences
    from dataio.sequences import InMemoryRows
    from training.loop import TrainConfig
    from training.model import ModelConfig

    model = ModelConfig(kind="bert", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, seq_len=SEQ_LEN)
    train = TrainConfig(steps=1_000_000, global_batch_size=64, warmup_steps=10, subset=subset, num_workers=2, seed=0)
    args = launch_args(train=train, model=model, data=root, out_dir=root / "out", fraction=0.25)
    start = time.perf_counter()
    trainer, _ = build_trainer(args, rank=0, world=2, device=torch.device("cpu"), window_rows=window_rows)
    if path == "old":
        trainer.sequences = InMemoryRows(read_sequences(args["sequences"])[1])
    built = time.perf_counter() - start
    first = time.perf_counter()
    trainer.train_step(0)  # loads the first window on the new path
    first = time.perf_counter() - first
    later = time.perf_counter()
    for step in range(1, steps):
        trainer.train_step(step)
    later = (time.perf_counter() - later) / max(1, steps - 1)
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "build_s": built,
        "first_step_s": first,
        "step_s": later,
        "window_steps": trainer.window_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--subsets", nargs="+", default=["full", "random"])
    parser.add_argument("--paths", nargs="+", default=["new", "old"], choices=["new", "old"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--window-rows", type=int, default=WINDOW_ROWS, help="rows a worker loads at once (new path)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a pool folder: measure in this process
    parser.add_argument("--subset", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(
            json.dumps(
                worker(
                    Path(args.worker),
                    subset=args.subset,
                    path=args.path,
                    steps=args.steps,
                    window_rows=args.window_rows,
                )
            )
        )
        return
    print(f"window: {args.window_rows} rows per worker (new path)")
    results = []
    print(f"{'pool':>9} {'subset':>7} {'path':>4} {'peak RSS MB':>12} {'build s':>8} {'1st step s':>10} {'step s':>7}")
    for n in args.pools:
        with tempfile.TemporaryDirectory() as tmp:
            write_pool(Path(tmp), n)
            for subset in args.subsets:
                for path in args.paths:
                    out = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "bench.train_memory",
                            "--worker",
                            tmp,
                            "--subset",
                            subset,
                            "--path",
                            path,
                            "--steps",
                            str(args.steps),
                            "--window-rows",
                            str(args.window_rows),
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                    r = json.loads(out.strip().splitlines()[-1])
                    results.append({"pool": n, "subset": subset, "path": path, **r})
                    print(
                        f"{n:>9} {subset:>7} {path:>4} {r['peak_rss_mb']:>12.0f} {r['build_s']:>8.1f} "
                        f"{r['first_step_s']:>10.2f} {r['step_s']:>7.2f}",
                        flush=True,
                    )
    names = {"new": "rows per window", "old": "whole pool in memory"}
    rows = [
        [
            f"{r['pool']:,}",
            r["subset"],
            names[r["path"]],
            f"{r['peak_rss_mb']:,.0f}",
            f"{r['build_s']:.1f}",
            f"{r['first_step_s']:.2f}",
            f"{r['step_s']:.2f}",
        ]
        for r in results
    ]
    table = (
        f"Rank 0 of 2, tiny BERT, {SEQ_LEN}-token synthetic sequences, {args.steps} steps; peak RSS of the whole "
        f"worker process; window {args.window_rows:,} rows.\n\n"
    ) + markdown_table(["pool", "subset", "path", "peak RSS MB", "build s", "1st step s", "step s"], rows)
    write_result("train_memory", {"window_rows": args.window_rows, "steps": args.steps, "runs": results}, table)


if __name__ == "__main__":
    main()
