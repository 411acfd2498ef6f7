"""What Ray Train costs: tokens/s of the Ray Train loop against the same loop in one plain process.

    python -m bench.training [--steps 60]

Same model (the default config's small BERT), same sequences (the first 3,000 documents of the
embedded corpus, packed to 128 tokens), same batch and seed. Throughput is wall-clock tokens over
steps 10..N (after warm-up), so it includes everything the Ray loop does between steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import ray
import torch

from actors.prepare import write_local_sequences
from actors.trainer import build_trainer, launch_args, launch_training
from bench.common import markdown_table, write_result
from dataio.contracts import TrainOutputs
from dataio.corpus import BUILTIN_WIKI, read_documents
from jobs.config import load_config

WARMUP = 10


def plain_loop(root: Path, cfg, steps: int) -> float:
    train = dataclasses.replace(cfg.train, subset="full", steps=steps)
    args = launch_args(train=train, model=cfg.model, data=root, out_dir=root / "plain")
    trainer, _ = build_trainer(args, rank=0, world=1, device=torch.device("cpu"))
    tokens, start = 0, 0.0
    for step in range(steps):
        if step == WARMUP:
            start = time.perf_counter()
        metrics = trainer.train_step(step)
        if step >= WARMUP:
            tokens += metrics["tokens"]
    return tokens / (time.perf_counter() - start)


def ray_loop(root: Path, cfg, steps: int) -> float:
    train = dataclasses.replace(cfg.train, subset="full", steps=steps, checkpoint_every=steps)
    out = root / "ray-run"
    out.mkdir()
    args = launch_args(train=train, model=cfg.model, data=root, out_dir=out)
    launch_training(
        args, name="bench", storage=out / "ray", num_workers=1, use_gpu=False, cpus_per_worker=train.cpus_per_worker
    )
    lines = [json.loads(x) for x in (out / TrainOutputs.METRICS).read_text().splitlines()]
    # Tokens of steps WARMUP+1..N over the wall-clock between the ends of step WARMUP and step N.
    tokens = sum(m["tokens"] for m in lines[WARMUP:])
    return tokens / (lines[-1]["time"] - lines[WARMUP - 1]["time"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "configs" / "default.yaml"))
    args = parser.parse_args()
    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = [d.text for d in islice(read_documents(BUILTIN_WIKI), 3000)]
        write_local_sequences(texts, root, kind=cfg.model.kind, seq_len=cfg.model.seq_len, vocab_size=8192)
        before = plain_loop(root, cfg, args.steps)  # plain runs on both sides of the Ray run: drift shows
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_tps = ray_loop(root, cfg, args.steps)
        ray.shutdown()
        after = plain_loop(root, cfg, args.steps)
    plain_tps = float(np.mean([before, after]))
    overhead = 1 - ray_tps / plain_tps
    print(
        f"plain loop: {before:.0f} and {after:.0f} tokens/s; Ray Train (1 worker, {cfg.train.cpus_per_worker} CPUs): "
        f"{ray_tps:.0f} tokens/s; Ray overhead {100 * overhead:.1f}% of the plain mean"
    )
    payload = {
        "config": args.config,
        "steps": args.steps,
        "warmup_steps": WARMUP,
        "plain_before_tokens_per_s": before,
        "plain_after_tokens_per_s": after,
        "ray_tokens_per_s": ray_tps,
        "ray_cpus_per_worker": cfg.train.cpus_per_worker,
        "ray_overhead": overhead,
    }
    rows = [
        ["plain loop, before the Ray run", f"{before:,.0f}"],
        ["plain loop, after the Ray run", f"{after:,.0f}"],
        [f"Ray Train loop (1 worker, {cfg.train.cpus_per_worker} CPUs)", f"{ray_tps:,.0f}"],
        ["Ray overhead (1 - Ray / plain mean)", f"{100 * overhead:.1f}%"],
    ]
    table = f"{args.steps} steps, tokens/s after {WARMUP} warm-up steps.\n\n"
    write_result("training", payload, table + markdown_table(["loop", "tokens/s"], rows))


if __name__ == "__main__":
    main()
