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

from actors.prepare import sequences_table
from actors.trainer import launch_training
from dataio.corpus import BUILTIN_WIKI, read_documents
from dataio.rundir import read_sequences, write_parquet
from jobs.config import load_config
from training.loop import LMTrainer
from training.model import build_model
from training.subsets import SubsetSchedule, draw_function
from training.tokenizer import load_tokenizer, pack_tokens, special_ids, train_tokenizer

WARMUP = 10


def write_sequences(root: Path, kind: str, seq_len: int) -> None:
    docs = list(islice(read_documents(BUILTIN_WIKI), 3000))
    tok = train_tokenizer([d.text for d in docs], kind=kind, vocab_size=8192, out_dir=root / "tokenizer")
    rows = []
    for doc, ids in zip(docs, tok([d.text for d in docs], add_special_tokens=False)["input_ids"]):
        chunks = pack_tokens(tok, ids, kind=kind, seq_len=seq_len, min_tokens=16)
        rows += [(doc.doc_id, c, t) for c, t in enumerate(chunks)]
    write_parquet(sequences_table(rows), root / "sequences" / "part-00000.parquet")


def plain_loop(root: Path, cfg, steps: int) -> float:
    tok = load_tokenizer(str(root / "tokenizer"), kind=cfg.model.kind)
    ids, seqs = read_sequences(root / "sequences")
    train = dataclasses.replace(cfg.train, subset="full", steps=steps)
    torch.set_num_threads(train.cpus_per_worker)
    torch.manual_seed(train.seed)
    model = build_model(cfg.model, vocab_size=len(tok), pad_id=tok.pad_token_id)
    schedule = SubsetSchedule(draw_function("full", ids, budget=len(ids), seed=train.seed),
                              global_batch=train.global_batch_size, redraw_every=None, seed=train.seed)
    trainer = LMTrainer(model, seqs, schedule, train, kind=cfg.model.kind, pad_id=tok.pad_token_id,
                        mask_id=tok.mask_token_id, special_ids=special_ids(tok), vocab_size=len(tok), seq_len=cfg.model.seq_len)
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
    args = {"train": dataclasses.asdict(train), "model": dataclasses.asdict(cfg.model),
            "tokenizer": str(root / "tokenizer"), "sequences": str(root / "sequences"), "select_dir": None,
            "fraction": 1.0, "init_from": None, "out_dir": str(out), "model_out": str(out / "model")}
    launch_training(args, name="bench", storage=out / "ray", num_workers=1, use_gpu=False,
                    cpus_per_worker=train.cpus_per_worker)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
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
        write_sequences(root, cfg.model.kind, cfg.model.seq_len)
        before = plain_loop(root, cfg, args.steps)  # plain runs on both sides of the Ray run: drift shows
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_tps = ray_loop(root, cfg, args.steps)
        ray.shutdown()
        after = plain_loop(root, cfg, args.steps)
    plain_tps = float(np.mean([before, after]))
    print(f"plain loop: {before:.0f} and {after:.0f} tokens/s; Ray Train (1 worker, {cfg.train.cpus_per_worker} CPUs): "
          f"{ray_tps:.0f} tokens/s; Ray overhead {100 * (1 - ray_tps / plain_tps):.1f}% of the plain mean")


if __name__ == "__main__":
    main()
