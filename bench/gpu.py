"""The prepared GPU check: throughput of the training step and of embedding, kNN graphs on the device,
and the evaluation and fine-tuning paths on it (no Ray; FAISS optional). Writes its numbers as JSON and a
short Markdown table, with the date and the machine, under bench/results/gpu/.

    python -m bench.gpu                 # on a GPU node: bert-base, kNN of 1M points (under 10 minutes)
    python -m bench.gpu --device cpu    # the CI-sized form: a tiny model, 2,000 points

Training: bert-base (or gpt2-small) at sequence length 128 in bf16 autocast, random init, random
full-length token sequences: the same LMTrainer step the Ray Train workers run (AdamW, clipping, 15%
masking), `steps` timed after warm-up with CUDA synchronised; tokens/s, and MFU as the FLOPs of every
timed step over their total time against the card's bf16 peak. Embedding: the embed stage's forward
pass (eval mode, layer 9 mean pooling, only the blocks up to it), `embed_batches` timed batches after
a warm-up one, in sequences/s. kNN (--knn N): the graph of N clustered 384-d unit vectors (k = 20) with
the `torch` method (blocks sized from free device memory, exact; and bf16 re-ranked, with its recall),
and FAISS flat and IVF indexes on the GPU where faiss has GPU support, their build (IVF: the k-means on
the CPU, then adding) timed apart from the search. Then held-out loss and fine-tuning of a tiny
checkpoint on the device (training/evaluate.py and training/finetune.py, as the evaluate stage's tasks
run them): the device paths, not their speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import machine_info, markdown_table, write_result
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
    "tiny": ModelConfig(kind="bert", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=32),
}
VOCAB = {"bert-base": 30522, "gpt2-small": 50257, "tiny": 512}  # tiny's: the LM head would dominate its step
# The two forms: a GPU node's check, and the CI-sized one any CPU runs in seconds.
FORMS = {
    "cuda": {"model": "bert-base", "batch": 256, "knn": 1_000_000},
    "cpu": {"model": "tiny", "batch": 8, "knn": 2000},
}
RESULTS = Path(__file__).resolve().parent / "results" / "gpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    model_name: str, *, steps: int, batch: int, device: torch.device, warmup: int = 5, embed_batches: int = 50
) -> dict:
    cfg, vocab = SIZES[model_name], VOCAB[model_name]
    rng = np.random.default_rng(0)
    low = min(1000, vocab // 4)  # above the special tokens' ids
    pool = [rng.integers(low, vocab, size=cfg.seq_len).astype(np.int32) for _ in range(batch * 4)]
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=vocab, pad_id=0).to(device)
    result = {"model": model_name, "device": _device_label(device), "batch": batch, "seq_len": cfg.seq_len}
    result |= _train_throughput(model, pool, cfg, vocab, steps=steps, warmup=warmup, device=device)
    encoder = (getattr(model, "bert", None) or model.transformer).eval()  # no dropout: the embed stage's mode
    result |= _embed_throughput(encoder, pool, batch, layer=min(9, cfg.num_layers), batches=embed_batches)
    result["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return result


def _train_throughput(
    model: torch.nn.Module,
    pool: list[np.ndarray],
    cfg: ModelConfig,
    vocab: int,
    *,
    steps: int,
    warmup: int,
    device: torch.device,
) -> dict:
    batch = len(pool) // 4
    train = TrainConfig(steps=warmup + steps, global_batch_size=batch, warmup_steps=1, subset="full")
    draws = draw_function("full", np.arange(len(pool)), budget=len(pool), seed=0)
    schedule = SubsetSchedule(draws, global_batch=batch, redraw_every=None, seed=0)
    objective = Objective(
        kind=cfg.kind, seq_len=cfg.seq_len, vocab_size=vocab, pad_id=0, mask_id=103, cls_id=101, sep_id=102
    )
    trainer = LMTrainer(model, pool, schedule, train, objective=objective, device=device)
    for step in range(warmup):
        trainer.train_step(step)
    _sync(device)
    start, tokens = time.perf_counter(), 0
    for step in range(warmup, warmup + steps):
        tokens += trainer.train_step(step)["tokens"]
    seconds = time.perf_counter() - start
    # MFU over the whole timed run (total FLOPs / total time), not a mean of per-step ratios.
    mfu = tokens / seconds * trainer.mfu_per_token_s if trainer.mfu_per_token_s else None
    return {"train_steps": steps, "train_tokens_per_s": tokens / seconds, "mfu": mfu, "step_ms": 1000 * seconds / steps}


def _embed_throughput(
    encoder: torch.nn.Module, pool: list[np.ndarray], batch: int, *, layer: int, batches: int
) -> dict:
    device = next(encoder.parameters()).device
    ids, mask = pad_batch(pool, 0, max(len(s) for s in pool))
    starts = [(i * batch) % (len(pool) - batch + 1) for i in range(batches)]
    embed_batch(encoder, ids[:batch], mask[:batch], pooling="mean", layer=layer)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for first in starts:
        embed_batch(encoder, ids[first : first + batch], mask[first : first + batch], pooling="mean", layer=layer)
    seconds = time.perf_counter() - start  # embed_batch returns host arrays: the device is done
    return {"embed_batches": batches, "embed_sequences_per_s": batches * batch / seconds}


def knn_graph_seconds(n: int, *, device: torch.device, d: int = 384, k: int = 20, seed: int = 0) -> dict:
    """Seconds to build a k-NN graph of n clustered unit vectors: torch on `device` (exact, and bf16
    re-ranked), and FAISS flat and IVF on the GPU where a faiss with GPU support is installed, build
    and search timed apart. Recall of each against torch's exact graph."""
    from selection.knn import KnnParams, knn_search

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(100, d, generator=g)
    x = centres[torch.randint(100, (n,), generator=g)] + 1.2 * torch.randn(n, d, generator=g)
    x = torch.nn.functional.normalize(x, dim=1).numpy()
    sample = np.random.default_rng(seed).choice(n, min(n, 2000), replace=False)
    result = {"n": n, "d": d, "k": k, "device": str(device)}
    found = {}
    for precision in ("fp32", "bf16"):
        _sync(device)
        start = time.perf_counter()
        _, found[precision] = knn_search(x, x, k, KnnParams(method="torch", device=device.type, precision=precision))
        result["torch_s" if precision == "fp32" else f"torch_{precision}_s"] = time.perf_counter() - start
    exact = found["fp32"]
    result["torch_bf16_recall"] = _recall(found["bf16"], exact, sample)
    return result | _faiss_gpu_seconds(x, exact, k, device, sample)


def _recall(found: np.ndarray, exact: np.ndarray, rows: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(found[i]) & set(exact[i])) / k for i in rows]))


def _faiss_gpu_seconds(x: np.ndarray, exact: np.ndarray, k: int, device: torch.device, sample: np.ndarray) -> dict:
    try:
        import faiss

        from selection.knn import KnnParams, build_index, faiss_has_gpu, index_device, index_to_cpu, search_index
    except ImportError:
        return {"faiss_gpu": "faiss not installed"}
    if not faiss_has_gpu():
        return {"faiss_gpu": "this faiss has no GPU support"}
    if device.type != "cuda":
        return {"faiss_gpu": "not asked for (--device cpu)"}
    result = {}
    for method in ("exact", "ivf"):
        params = KnnParams(method=method, nprobe=16, device="cuda")
        start = time.perf_counter()
        index = build_index(x, params)  # IVF: k-means on the CPU, then the vectors added on the GPU
        built = time.perf_counter()
        _, found = search_index(index, x, k)
        result[f"faiss_gpu_{method}_build_s"] = built - start
        result[f"faiss_gpu_{method}_search_s"] = time.perf_counter() - built
        result[f"faiss_gpu_{method}_device"] = index_device(params)
        result[f"faiss_gpu_{method}_recall"] = _recall(found, exact, sample)
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


def _device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"


def write_results(results: dict, out: Path) -> dict:
    """results as JSON and a short Markdown table, named by date, machine and form, in `out`
    (through bench.common.write_result, the writer every benchmark shares)."""
    train, knn = results["training"], results.get("knn") or {}
    rows = [
        ["device", train["device"]],
        [f"train tokens/s ({train['model']}, batch {train['batch']})", f"{train['train_tokens_per_s']:,.0f}"],
        ["MFU (total FLOPs / total time)", "n/a (no GPU)" if train["mfu"] is None else f"{train['mfu']:.1%}"],
        ["embed sequences/s", f"{train['embed_sequences_per_s']:,.0f}"],
        [f"kNN graph, torch exact (n = {knn.get('n', 0):,})", f"{knn['torch_s']:.2f} s" if knn else "not run"],
        [
            "kNN graph, torch bf16 re-ranked",
            f"{knn['torch_bf16_s']:.2f} s, recall {knn['torch_bf16_recall']:.4f}" if knn else "not run",
        ],
    ]
    stem = f"{results['date'][:10]}-{results['machine']}-{results['form']}"
    return write_result("gpu", results, markdown_table(["measure", "value"], rows), out=out, stem=stem)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=sorted(FORMS))
    parser.add_argument("--model", choices=sorted(SIZES), help="default: bert-base on cuda, tiny on cpu")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps after warm-up")
    parser.add_argument("--embed-batches", type=int, default=50, help="timed embedding batches after warm-up")
    parser.add_argument("--batch", type=int, help="default: 256 on cuda, 8 on cpu")
    parser.add_argument("--knn", type=int, help="points of the timed k-NN graph (0: none); default 1M on cuda")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and Markdown results")
    parser.add_argument(
        "--paths", action=argparse.BooleanOptionalAction, default=True, help="held-out loss and fine-tuning on it"
    )
    args = parser.parse_args(argv)
    device = device_name(args.device)
    form = FORMS[args.device]
    model, batch = args.model or form["model"], args.batch or form["batch"]
    knn = form["knn"] if args.knn is None else args.knn
    results = {
        **machine_info(),
        "form": args.device,
        "training": measure(model, steps=args.steps, batch=batch, device=device, embed_batches=args.embed_batches),
        "knn": knn_graph_seconds(knn, device=device) if knn else None,
        "device_paths": device_paths(device) if args.paths else None,
    }
    results = write_results(results, args.out)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
