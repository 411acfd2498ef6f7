"""Summaries over seeds, one definition for every table: mean and the t-based 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import t

CONFIDENCE = 0.95
INTERVAL = "mean ± half-width of the t-based 95% confidence interval over seeds"
INTERVAL_HEADER = "mean ± t 95% CI over seeds"


def mean_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean of `values` and the half-width of its t-based 95% interval (None for one value)."""
    if not len(values):
        raise ValueError("mean_interval needs at least one value")
    mean = float(np.mean(values))
    if len(values) == 1:
        return mean, None
    sem = float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, float(t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) * sem


def format_interval(values: Sequence[float], digits: int) -> str:
    """`mean ± half-width`, or the value alone when there is one."""
    mean, half = mean_interval(values)
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"
