"""The target-aware strategies of the select stage: toward a target sample (select.target), DSIR's
importance resampling (selection/dsir.py) and a quality classifier's top or band (selection/quality.py).

Both see the whole pool (a prefilter narrows INGENIOUS and GreeDi only). Each is a map over prepare's
sequence shards (one Ray task each, actors/target.py), a reduce on the driver, and a second map that
scores every sequence; the subset is a function of the sequences, the target and the seed only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from actors.target import (
    fit_quality_model,
    shard_bucket_counts,
    shard_log_weights,
    shard_quality_scores,
    shard_sample_texts,
    target_bucket_counts,
)
from dataio import uri as U
from dataio.contamination import decontaminate
from dataio.contracts import PrepareOutputs, SelectOutputs
from dataio.corpus import read_documents
from dataio.rundir import shard_files
from jobs.config import PipelineConfig
from jobs.executor import Task
from jobs.stages.selection_pool import SelectionPool, Subset, TargetSample
from selection.dsir import importance_resample, log_ratio
from selection.lexical import LexicalParams
from selection.perplexity import perplexity_band

SUBSETS = SelectOutputs.SUBSET_SCHEMAS


def read_target(cfg: PipelineConfig, prepare_dir: str) -> TargetSample:
    """The target's texts (at most select.target_max_documents), without those sharing a span with an
    evaluation set (evaluate.external); a document equal to one stops the run here."""
    s = cfg.select
    texts = []
    for doc in read_documents(s.target):
        if s.target_max_documents is not None and len(texts) >= s.target_max_documents:
            break
        texts.append(doc.text)
    eval_sets = {path: (d.text for d in read_documents(path)) for path in cfg.evaluate.external}
    kept, dropped = decontaminate(texts, eval_sets, where=f"select.target {s.target}", span_words=s.target_span_words)
    if not kept:
        raise ValueError(
            f"select.target {s.target}: no document is left to select toward ({dropped} overlap evaluation)"
        )
    return TargetSample(
        sequence_files=shard_files(U.join(prepare_dir, PrepareOutputs.SEQUENCES)),
        tokenizer=U.join(prepare_dir, PrepareOutputs.TOKENIZER),
        kind=cfg.model.kind,
        texts=kept,
        dropped=dropped,
    )


def _scores(pool: SelectionPool, task, *args) -> tuple[np.ndarray, np.ndarray]:
    """(ids, value) of every pool sequence from one task per sequences shard, checked to be the pool."""
    t = pool.target
    parts = pool.executor.run([Task(task, (f, t.tokenizer, t.kind, *args)) for f in t.sequence_files])
    ids, values = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if not np.array_equal(np.sort(ids), np.sort(pool.ids)):
        raise ValueError(f"prepare's sequence shards hold {len(ids)} sequences, not the {len(pool.ids)} embedded ones")
    return ids, values


def _ranked(name: str, ids: np.ndarray, values: np.ndarray, column: str) -> pa.Table:
    return pa.table(
        {"sequence_id": ids, "rank": np.arange(len(ids), dtype=np.int64), column: values}, schema=SUBSETS[name]
    )


def dsir(pool: SelectionPool) -> Subset:
    """DSIR: the pool's and the target's hashed n-gram distributions, each sequence's log importance
    weight, and the budget resampled without replacement (Gumbel top-k), best key first."""
    s, ex, t = pool.scfg, pool.executor, pool.target
    target_counts = ex.submit(Task(target_bucket_counts, (ex.put(t.texts), s.dsir_buckets)))
    pool_counts = ex.run(
        [Task(shard_bucket_counts, (f, t.tokenizer, t.kind, s.dsir_buckets)) for f in t.sequence_files]
    )
    ratio = log_ratio(ex.get(target_counts), np.sum(pool_counts, axis=0))
    ids, weights = _scores(pool, shard_log_weights, ex.put(ratio))
    rows = importance_resample(ids, weights, pool.budget, s.seed)
    summary = {
        "dsir_subset": len(rows),
        "dsir_target_documents": len(t.texts),
        "target_dropped_overlapping_evaluation": t.dropped,
        "dsir_log_weight_kept_mean": float(weights[rows].mean()),
        "dsir_log_weight_pool_mean": float(weights.mean()),
    }
    return Subset(_ranked("dsir", ids[rows], weights[rows], "log_weight"), summary, phase="target")


def classifier(pool: SelectionPool) -> Subset:
    """A linear classifier of the target against as many pool sequences (hash-sampled), every sequence
    scored, and the budget's band of score ranks at select.classifier_center (1: the top), best first."""
    s, ex, t = pool.scfg, pool.executor, pool.target
    params = LexicalParams(n_features=s.classifier_features, seed=s.seed)
    count = min(len(t.texts), len(pool.ids))
    samples = ex.run([Task(shard_sample_texts, (f, t.tokenizer, t.kind, count, s.seed)) for f in t.sequence_files])
    model = ex.submit(
        Task(fit_quality_model, (ex.put(t.texts), [p[0] for p in samples], [p[1] for p in samples], params))
    )
    ids, scores = _scores(pool, shard_quality_scores, model)
    rows = perplexity_band(ids, scores, pool.budget, center=s.classifier_center)[::-1]  # highest score first
    summary = {
        "classifier_subset": len(rows),
        "classifier_target_documents": len(t.texts),
        "target_dropped_overlapping_evaluation": t.dropped,
        "classifier_score_range": [float(scores[rows].min()), float(scores[rows].max())] if len(rows) else None,
        "classifier_pool_score_median": float(np.median(scores)),
    }
    return Subset(_ranked("classifier", ids[rows], scores[rows], "score"), summary, phase="target")
