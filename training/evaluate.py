"""Held-out language-modelling quality of a checkpoint.

BERT: masked-token cross-entropy with masks drawn from a fixed seed (every checkpoint sees the
same masks), reported with its exponential (MLM pseudo-perplexity). GPT-2: token-level perplexity.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import PreTrainedModel

from training.model import Objective


@torch.inference_mode()
def heldout_loss(
    model: PreTrainedModel,
    sequences: list[np.ndarray],
    *,
    objective: Objective,
    batch_size: int = 64,
    seed: int = 1234,
) -> dict[str, float]:
    if not sequences:
        raise ValueError("held-out evaluation needs at least one sequence")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        batch = objective.batch(sequences[start : start + batch_size], generator)
        labels = batch["labels"]
        n = int((labels[:, 1:] != -100).sum()) if objective.kind == "gpt2" else int((labels != -100).sum())
        if n == 0:
            continue
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        total += float(loss) * n
        count += n
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count, "sequences": len(sequences)}


def predicted_tokens(sequences: list[np.ndarray], *, kind: str, special_ids: list[int]) -> np.ndarray:
    """The tokens a held-out loss scores: GPT-2 every token after the first (next-token prediction);
    BERT the maskable ones (masks are a uniform 15% of them, so their mean is the masked mean's
    expectation)."""
    if kind == "gpt2":
        parts = [np.asarray(s[1:]) for s in sequences]
    else:
        parts = [np.asarray(s)[~np.isin(s, special_ids)] for s in sequences]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def unigram_loss(train: np.ndarray, held: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats per token) of `held` under the add-one unigram model of `train`: the loss a
    model that learned only word frequencies would have, the floor an LM must clear to have learned
    anything from context."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    return float(-np.mean(np.log(counts[held] / counts.sum())))
