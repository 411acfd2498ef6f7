"""A quality classifier in DCLM's manner: a linear model that tells a target sample (text like what we
want to train on) from a random sample of the pool, scoring every sequence of the pool; the subset is
the top (or a band) of the scores.

Features are the lexical space's hashed word 1-2-grams and character 3-5-grams (selection/lexical.py),
each count c as 1 + ln c, the row L2-normalised: no document frequencies, so a shard is scored on its own
and the map step needs only the fitted weights. The model is scikit-learn's L2 logistic regression
(lbfgs: deterministic), on as many pool texts as target texts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from selection.lexical import LexicalParams, hashed_counts


@dataclass(frozen=True)
class QualityModel:
    """A fitted linear classifier: score = features . coef + intercept (> 0: more like the target)."""

    params: LexicalParams
    coef: np.ndarray  # float64 (2 * n_features,)
    intercept: float


def features(texts: list[str], params: LexicalParams) -> sp.csr_matrix:
    """(len(texts), 2 * n_features) sublinear counts, rows of unit L2 norm (a text with no n-gram is zero)."""
    x = hashed_counts(texts, params)
    x.data = 1.0 + np.log(x.data)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ x)


def fit_quality(target: list[str], pool_sample: list[str], params: LexicalParams, *, c: float = 1.0) -> QualityModel:
    """Logistic regression of target (1) against pool sample (0)."""
    if not target or not pool_sample:
        raise ValueError(f"quality classifier: needs target and pool texts, got {len(target)} and {len(pool_sample)}")
    x = sp.vstack([features(target, params), features(pool_sample, params)], format="csr")
    y = np.concatenate([np.ones(len(target)), np.zeros(len(pool_sample))])
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(x, y)
    return QualityModel(params, model.coef_.ravel().astype(np.float64), float(model.intercept_[0]))


def quality_scores(texts: list[str], model: QualityModel) -> np.ndarray:
    """float64 (len(texts),): the classifier's decision value of each text."""
    return features(texts, model.params) @ model.coef + model.intercept
