"""Downstream fine-tuning of a pretrained checkpoint: the paper's GLUE recipe, scaled down.

The paper fine-tunes every pretrained model on each GLUE task and reports dev scores; we do the
same from any saved checkpoint (BERT or GPT-2, via AutoModelForSequenceClassification), with a
fixed train subsample (the same examples for every checkpoint and seed, so arms compare like with
like) and several seeds for the classifier head and data order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from transformers import (
    AutoModelForSequenceClassification,
    get_linear_schedule_with_warmup,
)
from transformers.utils import logging as hf_logging

from dataio.tasks import Example, Task
from dataio.uri import local_dir
from training.model import adamw_groups
from training.tokenizer import load_tokenizer


@dataclass(kw_only=True)
class FinetuneConfig:
    tasks: list[str] = field(default_factory=list)  # e.g. [sst2, cola, mrpc, stsb, rte]; empty: no fine-tuning
    data_dir: str | None = None  # a folder (path or s3://, gs:// URI) holding the task files, found by name
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 3
    learning_rate: float = (
        1e-3  # for the small models trained here; BERT-base's recipe is 2e-5 (configs/bert-base.yaml)
    )
    batch_size: int = 32
    max_len: int = 128
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_train_examples: int | None = 2000  # a fixed subsample; None: the whole train split
    max_eval_examples: int | None = None
    cpus_per_task: int = 1
    # The share of a GPU each fine-tuning task takes where they run on GPUs: a small model's task leaves most of
    # a card idle, so 0.25 runs four on one (bf16 bert-base at batch 32, length 128 needs a few GB).
    gpu_fraction: float = 1.0

    RESOURCES: ClassVar[tuple[str, ...]] = ("cpus_per_task", "gpu_fraction")

    def __post_init__(self) -> None:
        if self.tasks and not self.data_dir:
            raise ValueError("downstream.data_dir is required when downstream.tasks is set")
        if not self.seeds or self.epochs < 1 or self.batch_size < 1 or self.max_len < 8:
            raise ValueError("downstream.seeds must be non-empty, epochs >= 1, batch_size >= 1, max_len >= 8")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"downstream.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not (0.0 < self.learning_rate < math.inf) or not (0.0 <= self.weight_decay < math.inf):
            raise ValueError(
                f"downstream.learning_rate must be finite and > 0 (got {self.learning_rate}), "
                f"weight_decay finite and >= 0 (got {self.weight_decay})"
            )
        if not 0.0 < self.gpu_fraction <= 1.0:
            raise ValueError(f"downstream.gpu_fraction must be in (0, 1], got {self.gpu_fraction}")
        if min(self.seeds) < 0:
            raise ValueError(f"downstream.seeds must be >= 0, got {self.seeds}")
        if (
            any(n is not None and n < 1 for n in (self.max_train_examples, self.max_eval_examples))
            or self.cpus_per_task < 1
        ):
            raise ValueError(
                "downstream.max_train_examples and max_eval_examples (or null) and cpus_per_task must be >= 1"
            )


# The seed of the fixed train subsample: one constant, not the run's seed, so every checkpoint and
# every fine-tuning seed sees the same examples (arms compare like with like).
SUBSAMPLE_SEED = 12345
# Gradient-norm clip of fine-tuning: BERT's and the GLUE recipe's 1.0 (pretraining has train.max_grad_norm).
FINETUNE_MAX_GRAD_NORM = 1.0


def subsample(examples: list[Example], limit: int | None) -> list[Example]:
    """The same `limit` examples whatever the seed or checkpoint (a fixed permutation)."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = np.sort(np.random.default_rng(SUBSAMPLE_SEED).choice(len(examples), limit, replace=False))
    return [examples[i] for i in keep]


def matthews(y: np.ndarray, p: np.ndarray) -> float:
    tp, tn = float(np.sum((p == 1) & (y == 1))), float(np.sum((p == 0) & (y == 0)))
    fp, fn = float(np.sum((p == 1) & (y == 0))), float(np.sum((p == 0) & (y == 1)))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denominator == 0 else float((tp * tn - fp * fn) / denominator)


def f1_binary(y: np.ndarray, p: np.ndarray) -> float:
    tp = float(np.sum((p == 1) & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + float(np.sum((p == 1) & (y == 0)) + np.sum((p == 0) & (y == 1))))


def task_metrics(task: Task, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of the task, and `score`: GLUE's headline number for it."""
    if task.num_labels == 1:
        pearson, spearman = float(pearsonr(y, pred)[0]), float(spearmanr(y, pred)[0])
        return {"pearson": pearson, "spearman": spearman, "score": (pearson + spearman) / 2}
    accuracy = float(np.mean(y == pred))
    out = {"accuracy": accuracy}
    if task.num_labels == 2:
        out |= {"f1": f1_binary(y, pred), "mcc": matthews(y, pred)}
    else:
        out["macro_f1"] = float(np.mean([f1_binary(y == c, pred == c) for c in range(task.num_labels)]))
    out["score"] = {"accuracy": accuracy, "mcc": out.get("mcc"), "f1_accuracy": (out.get("f1", 0.0) + accuracy) / 2}[
        task.score
    ]
    return out


class Encoder:
    """Text (pairs) to padded model inputs with the checkpoint's own tokenizer."""

    def __init__(self, model_dir: str, kind: str, max_len: int):
        self.tok, self.kind, self.max_len = load_tokenizer(model_dir, kind=kind), kind, max_len

    def __call__(self, batch: list[Example]) -> dict[str, torch.Tensor]:
        texts = [e.text for e in batch]
        pairs = [e.pair for e in batch] if batch[0].pair is not None else None
        if pairs is not None and self.kind == "gpt2":  # GPT-2 has no pair template: join with end-of-text
            texts, pairs = [f"{t}{self.tok.eos_token}{p}" for t, p in zip(texts, pairs)], None
        return self.tok(texts, pairs, truncation=True, max_length=self.max_len, padding=True, return_tensors="pt")


def finetune(
    model_uri: str, task: Task, cfg: FinetuneConfig, *, seed: int, kind: str, device: torch.device = torch.device("cpu")
) -> dict[str, float | int | str]:
    """Fine-tune the checkpoint (a folder's path or URI) on task.train (subsampled), evaluate on
    task.dev; returns metrics. Runs on `device` only: the caller decides (training/device.py)."""
    start = time.perf_counter()
    model_dir = str(local_dir(model_uri))
    train, dev = subsample(task.train, cfg.max_train_examples), subsample(task.dev, cfg.max_eval_examples)
    encode = Encoder(model_dir, kind, cfg.max_len)
    torch.manual_seed(seed)  # the classifier head's initialisation and dropout
    hf_logging.set_verbosity_error()  # the LM head left unused and the new classifier are expected, not news
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=task.num_labels,
        problem_type="regression" if task.num_labels == 1 else "single_label_classification",
    ).to(device)
    model.config.pad_token_id = encode.tok.pad_token_id
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    optimizer = torch.optim.AdamW(adamw_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_fraction * steps), steps)
    label_dtype = torch.float32 if task.num_labels == 1 else torch.long
    # bf16 autocast on a GPU that has it (fp32 weights and optimizer state); fp32 elsewhere.
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = partial(torch.autocast, device.type, torch.bfloat16, bf16)
    order_rng = np.random.default_rng(seed)
    model.train()
    for _ in range(cfg.epochs):
        order = order_rng.permutation(len(train))
        for first in range(0, len(train), cfg.batch_size):
            batch = [train[i] for i in order[first : first + cfg.batch_size]]
            inputs = {k: v.to(device) for k, v in encode(batch).items()}
            labels = torch.tensor([e.label for e in batch], dtype=label_dtype, device=device)
            with autocast():
                loss = model(**inputs, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), FINETUNE_MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    predictions = []
    with torch.inference_mode(), autocast():
        for first in range(0, len(dev), cfg.batch_size):
            logits = model(**{k: v.to(device) for k, v in encode(dev[first : first + cfg.batch_size]).items()}).logits
            predictions.append(logits.squeeze(-1) if task.num_labels == 1 else logits.argmax(-1))
    pred = torch.cat(predictions).float().cpu().numpy()
    y = np.array([e.label for e in dev], dtype=np.float32)
    return {
        "task": task.name,
        "seed": seed,
        **task_metrics(task, y, pred),
        "train_examples": len(train),
        "eval_examples": len(dev),
        "device": device.type,
        "seconds": time.perf_counter() - start,
    }
