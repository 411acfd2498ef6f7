"""The perplexity band: keep the sequences whose warm-start loss is neither among the lowest
(boilerplate, near-duplicates, lists the model already predicts) nor among the highest (garbled
text, tables, other languages), but the middle of the pool's loss distribution.
"""

from __future__ import annotations

import numpy as np


def perplexity_band(sequence_ids: np.ndarray, losses: np.ndarray, budget: int, *, center: float = 0.5) -> np.ndarray:
    """The `budget` rows (indices into the inputs) of a window of consecutive loss ranks, in rank
    order. Ranks run by loss, ties by sequence_id, so the band does not depend on the input order.
    Of the n - budget rows left out, floor(center * (n - budget)) are the lowest ranks and the rest
    the highest: center 0.5 drops equal shares (the lower share one less when n - budget is odd).
    A NaN loss (a one-token GPT-2 sequence has no next token to predict) ranks above every other."""
    n = len(sequence_ids)
    if len(losses) != n:
        raise ValueError(f"perplexity_band: {n} sequence ids but {len(losses)} losses")
    if not 0 <= budget <= n:
        raise ValueError(f"perplexity_band: budget {budget} is not in [0, {n}]")
    if not 0.0 <= center <= 1.0:
        raise ValueError(f"perplexity_band: center must be in [0, 1], got {center}")
    ranked = np.lexsort((sequence_ids, losses))
    start = int(np.floor(center * (n - budget)))
    return ranked[start : start + budget]
