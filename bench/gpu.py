"""The prepared GPU check: throughput of the training step and of embedding, kNN graphs on the device,
and the evaluation and fine-tuning paths on it (no Ray; FAISS optional).

    python -m bench.gpu [--model bert-base] [--steps 30] [--batch 256] [--knn N] [--device cuda|cpu]

bert-base (or gpt2-small) at sequence length 128 in bf16 autocast, random init, random full-length
token sequences: the same LMTrainer step the Ray Train workers run (AdamW, clipping, 15% masking),
timed after warm-up with CUDA synchronised; reports tokens/s and MFU against the card's bf16 peak.
Then embedding throughput (the embed stage's forward pass, layer 9 mean pooling) in sequences/s.
With --knn N: the kNN graph of N clustered 384-d unit vectors (k = 20) built with the `torch`
method (blocked matmul + top-k on the device), and with selection/knn.py's FAISS flat and IVF
indexes on the GPU when the installed faiss has GPU support (the selection stage's graphs), each
then moved to the CPU and serialised as the merge's candidate index is.
Then held-out loss and fine-tuning of a tiny checkpoint on the device (training/evaluate.py and
training/finetune.py, as the evaluate stage's tasks run them): the device paths, not their speed.
Runs on CPU too (--model tiny --device cpu) so the test suite keeps it working.

    python -m bench.gpu --model bert-base --knn 1000000   # the device check: training, embedding, kNN
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dataio.tasks import load_task
from training.device import device_name
from training.embed import embed_batch
from training.evaluate import heldout_loss
from training.finetune import FinetuneConfig, finetune
from training.loop import LMTrainer, TrainConfig
from training.model import ModelConfig, Objective, build_model
from training.packing import pad_batch
from training.subsets import SubsetSchedule, draw_function
from training.tokenizer import train_tokenizer

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
    schedule = SubsetSchedule(
        draw_function("full", np.arange(len(pool)), budget=len(pool), seed=0),
        global_batch=batch,
        redraw_every=None,
        seed=0,
    )
    objective = Objective(
        kind=cfg.kind, seq_len=cfg.seq_len, vocab_size=vocab, pad_id=0, mask_id=103, cls_id=101, sep_id=102
    )
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
    return {
        "model": model_name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch": batch,
        "seq_len": cfg.seq_len,
        "train_tokens_per_s": tokens / train_seconds,
        "mfu": float(np.nanmean(mfu)) if not np.all(np.isnan(mfu)) else None,
        "step_ms": 1000 * train_seconds / steps,
        "embed_sequences_per_s": len(pool) / embed_seconds,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def knn_graph_seconds(n: int, *, device: torch.device, d: int = 384, k: int = 20, seed: int = 0) -> dict:
    """Seconds to build a k-NN graph of n clustered unit vectors: torch on `device`, and FAISS flat and
    IVF on the GPU where a faiss with GPU support is installed. Recall of each against torch (exact)."""
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

        from selection.knn import build_index, faiss_has_gpu, index_device, index_to_cpu, search_index
    except ImportError:
        return {**result, "faiss_gpu": "faiss not installed"}
    if not faiss_has_gpu():
        return {**result, "faiss_gpu": "this faiss has no GPU support"}
    if device.type != "cuda":
        return {**result, "faiss_gpu": "not asked for (--device cpu)"}
    sample = np.random.default_rng(seed).choice(n, min(n, 2000), replace=False)
    for method in ("exact", "ivf"):
        params = KnnParams(method=method, nprobe=16, device="cuda")
        start = time.perf_counter()
        index = build_index(x, params)
        _, found = search_index(index, x, k)
        result[f"faiss_gpu_{method}_s"] = time.perf_counter() - start
        result[f"faiss_gpu_{method}_device"] = index_device(params)
        result[f"faiss_gpu_{method}_recall"] = float(np.mean([len(set(found[i]) & set(exact[i])) / k for i in sample]))
        result[f"faiss_gpu_{method}_serialised_mb"] = faiss.serialize_index(index_to_cpu(index)).nbytes / 2**20
    return result


def device_paths(device: torch.device, kind: str = "bert") -> dict:
    """Held-out loss and fine-tuning of a tiny random checkpoint on `device`, on a learnable synthetic
    task (a keyword decides the label): a device mismatch anywhere in those paths fails here."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = Path(tmp, "model"), Path(tmp, "glue")
        data.mkdir()
        for name, size in (("sst2_train_full.tsv", 256), ("sst2_dev.tsv", 64)):
            labels = rng.integers(0, 2, size)
            rows = [" ".join(rng.choice(words, 5)) + (" great" if y else " awful") + f"\t{y}\n" for y in labels]
            (data / name).write_text("sentence\tlabel\n" + "".join(rows))
        tok = train_tokenizer(words + ["great awful"] * 5, kind=kind, vocab_size=120, out_dir=model_dir)
        cfg = ModelConfig(kind=kind, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=32)
        torch.manual_seed(0)
        model = build_model(cfg, vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
        model.save_pretrained(model_dir)
        sequences = [np.asarray(tok(" ".join(rng.choice(words, 6)))["input_ids"][: cfg.seq_len]) for _ in range(32)]
        loss = heldout_loss(
            model.to(device), sequences, objective=Objective.for_model(tok, cfg, training=False), batch_size=8
        )
        tuning = FinetuneConfig(tasks=["sst2"], data_dir=str(data), epochs=8, batch_size=16)
        tuned = finetune(str(model_dir), load_task("sst2", data), tuning, seed=0, kind=kind, device=device)
    return {
        "heldout_loss": loss["loss"],
        "finetune_accuracy": tuned["accuracy"],
        "finetune_device": tuned["device"],
        "finetune_s": tuned["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-base", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--knn", type=int, default=0, help="also time a k-NN graph of this many points")
    args = parser.parse_args()
    device = device_name(args.device)
    print(json.dumps(measure(args.model, steps=args.steps, batch=args.batch, device=device)))
    if args.knn:
        print(json.dumps(knn_graph_seconds(args.knn, device=device)))
    print(json.dumps(device_paths(device)))


if __name__ == "__main__":
    main()
