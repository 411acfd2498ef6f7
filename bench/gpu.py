"""GPU throughput of the training step and of embedding, for the device tool (no Ray, no FAISS).

    python -m bench.gpu [--model bert-base] [--steps 30] [--batch 256]

bert-base (or gpt2-small) at sequence length 128 in bf16 autocast, random init, random full-length
token sequences: the same LMTrainer step the Ray Train workers run (AdamW, clipping, 15% masking),
timed after warm-up with CUDA synchronised; reports tokens/s and MFU against the card's bf16 peak.
Then embedding throughput (the embed stage's forward pass, layer 9 mean pooling) in sequences/s.
With --knn N: the kNN graph of N clustered 384-d unit vectors (k = 20) built with the `torch`
method (blocked matmul + top-k on the device), and with FAISS's GPU flat and IVF indexes when the
installed faiss has GPU support (the selection stage's graphs; FAISS is optional here).
Runs on CPU too (--model tiny --device cpu) so the test suite keeps it working.

    python -m bench.gpu --model bert-base --knn 1000000   # the device check: training, embedding, kNN
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from training.embed import embed_batch
from training.loop import LMTrainer, TrainConfig
from training.model import ModelConfig, Objective, build_model
from training.packing import pad_batch
from training.subsets import SubsetSchedule, draw_function

SIZES = {
    "bert-base": ModelConfig(kind="bert"),
    "gpt2-small": ModelConfig(kind="gpt2", seq_len=128),
    "tiny": ModelConfig(kind="bert", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
}
VOCAB = {"bert": 30522, "gpt2": 50257}


def measure(model_name: str, *, steps: int, batch: int, device: torch.device, warmup: int = 5) -> dict:
    cfg = SIZES[model_name]
    vocab = VOCAB[cfg.kind]
    rng = np.random.default_rng(0)
    pool = [rng.integers(1000, vocab, size=cfg.seq_len).astype(np.int32) for _ in range(batch * 4)]
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=vocab, pad_id=0).to(device)
    train = TrainConfig(steps=warmup + steps, global_batch_size=batch, warmup_steps=1, subset="full")
    schedule = SubsetSchedule(draw_function("full", np.arange(len(pool)), budget=len(pool), seed=0),
                              global_batch=batch, redraw_every=None, seed=0)
    objective = Objective(kind=cfg.kind, seq_len=cfg.seq_len, vocab_size=vocab, pad_id=0, mask_id=103, cls_id=101, sep_id=102)
    trainer = LMTrainer(model, pool, schedule, train, objective=objective, device=device)
    for step in range(warmup):
        trainer.train_step(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, tokens, mfu = time.perf_counter(), 0, []
    for step in range(warmup, warmup + steps):
        metrics = trainer.train_step(step)
        tokens += metrics["tokens"]
        mfu.append(metrics.get("mfu", float("nan")))
    train_seconds = time.perf_counter() - start

    encoder = getattr(model, "bert", None) or model.transformer
    ids, mask = pad_batch(pool, 0, cfg.seq_len)
    layer = min(9, cfg.num_layers)
    embed_batch(encoder, ids[:batch], mask[:batch], pooling="mean", layer=layer)  # warm-up
    start = time.perf_counter()
    for first in range(0, len(pool), batch):
        embed_batch(encoder, ids[first : first + batch], mask[first : first + batch], pooling="mean", layer=layer)
    embed_seconds = time.perf_counter() - start
    return {"model": model_name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "batch": batch, "seq_len": cfg.seq_len, "train_tokens_per_s": tokens / train_seconds,
            "mfu": float(np.nanmean(mfu)) if not np.all(np.isnan(mfu)) else None,
            "step_ms": 1000 * train_seconds / steps, "embed_sequences_per_s": len(pool) / embed_seconds,
            "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def knn_graph_seconds(n: int, *, device: torch.device, d: int = 384, k: int = 20, seed: int = 0) -> dict:
    """Seconds to build a k-NN graph of n clustered unit vectors: torch on `device`, and FAISS GPU
    (flat, IVF) where a faiss with GPU support is installed. Recall of each against torch (exact)."""
    from selection.knn import KnnParams, knn_search

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(100, d, generator=g)
    x = centres[torch.randint(100, (n,), generator=g)] + 1.2 * torch.randn(n, d, generator=g)
    x = torch.nn.functional.normalize(x, dim=1).numpy()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    _, exact = knn_search(x, x, k, KnnParams(method="torch", device=device.type))
    result = {"n": n, "d": d, "k": k, "device": str(device), "torch_s": time.perf_counter() - start}
    try:
        import faiss
    except ImportError:
        return {**result, "faiss_gpu": "faiss not installed"}
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return {**result, "faiss_gpu": "this faiss has no GPU support"}
    resources = faiss.StandardGpuResources()
    sample = np.random.default_rng(seed).choice(n, min(n, 2000), replace=False)
    for name, cpu_index in (("flat", faiss.IndexFlatIP(d)),
                            ("ivf", faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, int(2 * n**0.5), faiss.METRIC_INNER_PRODUCT))):
        start = time.perf_counter()
        index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
        if name == "ivf":
            index.train(x)
            index.nprobe = 16
        index.add(x)
        _, found = index.search(x, k)
        result[f"faiss_gpu_{name}_s"] = time.perf_counter() - start
        result[f"faiss_gpu_{name}_recall"] = float(np.mean([len(set(found[i]) & set(exact[i])) / k for i in sample]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-base", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--knn", type=int, default=0, help="also time a k-NN graph of this many points")
    args = parser.parse_args()
    print(json.dumps(measure(args.model, steps=args.steps, batch=args.batch, device=torch.device(args.device))))
    if args.knn:
        print(json.dumps(knn_graph_seconds(args.knn, device=torch.device(args.device))))


if __name__ == "__main__":
    main()
