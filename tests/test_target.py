"""Target-aware strategies: DSIR pinned to its authors' package, the quality classifier pinned to
scikit-learn, the target checked against the evaluation sets, and both strategies run on a real local
Ray cluster equal to one in-process pass over the decoded pool."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dataio.contamination import content_hash, decontaminate
from dataio.corpus import BUILTIN_WIKI, read_documents
from dataio.rundir import read_sequences, read_table
from jobs.config import load_config
from jobs.pipeline import run_pipeline
from selection.dsir import bucket_counts, importance_resample, log_ratio, log_weights
from selection.lexical import LexicalParams
from selection.perplexity import perplexity_band
from selection.quality import features, fit_quality, quality_scores
from tests.conftest import write_corpus
from training.tokenizer import load_tokenizer

WORDS = "the cat sat on a mat , dog ran far away . protein cell gene binds receptor ! 1990 ( )".split()


def texts(rng: np.random.Generator, n: int, vocabulary: list[str]) -> list[str]:
    return [" ".join(rng.choice(vocabulary, rng.integers(5, 40))) for _ in range(n)]


def write_jsonl(path: Path, docs: list[str]) -> str:
    path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(docs)))
    return str(path)


def test_dsir_weights_equal_the_authors_package(tmp_path):
    dsir_package = pytest.importorskip("data_selection")
    rng = np.random.default_rng(0)
    raw, target = texts(rng, 60, WORDS), texts(rng, 20, WORDS[:10])
    reference = dsir_package.HashedNgramDSIR(
        [write_jsonl(tmp_path / "raw.jsonl", raw)],
        [write_jsonl(tmp_path / "target.jsonl", target)],
        cache_dir=str(tmp_path / "cache"),
        num_proc=1,
        num_buckets=97,
        min_example_length=0,
    )
    reference.fit_importance_estimator(num_tokens_to_fit="all")
    # The pool's counts as the sum of two shards' (the map-reduce of the select stage).
    ratio = log_ratio(bucket_counts(target, 97), bucket_counts(raw[:25], 97) + bucket_counts(raw[25:], 97))
    np.testing.assert_array_equal(ratio, reference.log_diff)
    expected = [reference.importance_estimator(reference.featurizer(t)) for t in raw]
    np.testing.assert_allclose(log_weights(raw, ratio), expected, rtol=1e-12, atol=1e-9)


def test_importance_resampling_draws_by_exp_weight_whatever_the_order():
    ids = np.arange(100, 110, dtype=np.int64)
    weights = np.log(np.arange(1, 11, dtype=np.float64))
    rows = importance_resample(ids, weights, 4, seed=7)
    assert len(set(ids[rows])) == 4
    shuffled = np.random.default_rng(1).permutation(10)
    again = importance_resample(ids[shuffled], weights[shuffled], 4, seed=7)
    assert ids[shuffled][again].tolist() == ids[rows].tolist()  # same draw, same order, from any input order
    # The first draw is one sample of p ~ exp(weight): over many seeds its frequencies follow p.
    firsts = np.bincount([importance_resample(ids, weights, 1, seed=s)[0] for s in range(6000)], minlength=10)
    p = np.exp(weights) / np.exp(weights).sum()
    assert np.abs(firsts / 6000 - p).max() < 0.02
    with pytest.raises(ValueError, match="budget 11"):
        importance_resample(ids, weights, 11, seed=0)


def test_quality_scores_are_scikit_learns_decision_values_and_prefer_the_target():
    rng = np.random.default_rng(2)
    target, pool = texts(rng, 40, WORDS[:10]), texts(rng, 40, WORDS[8:])
    params = LexicalParams(n_features=1 << 12)
    model = fit_quality(target, pool, params)
    x = features(target + pool, params)
    reference = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000).fit(x, np.r_[np.ones(40), np.zeros(40)])
    np.testing.assert_allclose(quality_scores(target + pool, model), reference.decision_function(x), atol=1e-9)
    unseen_target, unseen_pool = texts(rng, 20, WORDS[:10]), texts(rng, 20, WORDS[8:])
    assert quality_scores(unseen_target, model).min() > quality_scores(unseen_pool, model).max()
    with pytest.raises(ValueError, match="needs target and pool texts"):
        fit_quality([], pool, params)


def test_a_target_holding_an_evaluation_document_is_refused_and_overlaps_are_dropped():
    evaluation = {"wiki_eval": ["The quick brown fox jumps over the lazy dog near the old river bank today."]}
    copy = "  the QUICK brown fox jumps over the lazy dog near the old river bank today. "
    assert content_hash(copy) == content_hash(evaluation["wiki_eval"][0])
    with pytest.raises(ValueError, match="document 1 of the target is document 0 of evaluation set 'wiki_eval'"):
        decontaminate(["unrelated text", copy], evaluation, where="select.target t.jsonl")
    overlapping = "Intro words. The quick brown fox jumps over the lazy dog near the old river bank. More."
    kept, dropped = decontaminate(["a clean document", overlapping], evaluation, where="t", span_words=13)
    assert kept == ["a clean document"] and dropped == 1


def test_a_target_strategy_without_a_target_or_with_a_bad_setting_is_a_config_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: t\nselect: {strategy: dsir}\n")
    with pytest.raises(ValueError, match="set select.target"):
        load_config(config)
    config.write_text("name: t\nselect: {also: [classifier], target: x.jsonl, classifier_center: 2}\n")
    with pytest.raises(ValueError, match="classifier_center must be in"):
        load_config(config)


PIPELINE = """
name: target
model: {{kind: gpt2, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64, dropout: 0}}
corpus: {{source: {corpus}, text_field: text, id_field: id}}
prepare: {{vocab_size: 600, documents_per_shard: 40, heldout_fraction: 0.1}}
warmstart: {{steps: 2, global_batch_size: 8, learning_rate: 0.001, warmup_steps: 1, schedule: constant,
            checkpoint_every: 2}}
embed: {{encoder: lexical, batch_size: 32, num_actors: 2}}
select: {{fraction: 0.25, num_partitions: 2, knn_k: 5, seed: 3, also: [dsir, classifier], target: {target},
          dsir_buckets: 512, classifier_features: 4096, classifier_center: 0.9}}
evaluate: {{external: [{external}]}}
"""


def builtin_docs(start: int, stop: int) -> list[str]:
    return [d.text for d in islice(read_documents(BUILTIN_WIKI), start, stop)]


@pytest.fixture(scope="module")
def target_run(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("target")
    target = write_jsonl(tmp / "target.jsonl", builtin_docs(1000, 1030))
    external = write_jsonl(tmp / "eval.jsonl", builtin_docs(2000, 2005))
    config = tmp / "target.yaml"
    config.write_text(PIPELINE.format(corpus=write_corpus(tmp / "corpus.jsonl", 100), target=target, external=external))
    cfg = load_config(config)
    rows = run_pipeline(cfg, tmp / "run", only=["prepare", "warmstart", "embed", "select"])
    assert all(r["status"] == "ran" for r in rows)
    return cfg, tmp / "run", tmp


def decoded_pool(run: Path) -> tuple[np.ndarray, list[str]]:
    ids, seqs = read_sequences(run / "prepare" / "sequences")
    tok = load_tokenizer(str(run / "prepare" / "tokenizer"), kind="gpt2")
    return ids, tok.batch_decode(seqs, skip_special_tokens=True)


@pytest.mark.integration
def test_dsir_on_ray_equals_one_pass_over_the_decoded_pool(target_run):
    cfg, run, _ = target_run
    ids, pool = decoded_pool(run)
    target = builtin_docs(1000, 1030)
    ratio = log_ratio(bucket_counts(target, 512), bucket_counts(pool, 512))
    weights = log_weights(pool, ratio)
    rows = importance_resample(ids, weights, round(0.25 * len(ids)), seed=3)
    got = read_table(run / "select" / "subset_dsir.parquet")
    assert got.column("sequence_id").to_numpy().tolist() == ids[rows].tolist()
    np.testing.assert_allclose(got.column("log_weight").to_numpy(), weights[rows], rtol=1e-12)
    summary = json.loads((run / "select" / "manifest.json").read_text())["summary"]
    assert summary["dsir_target_documents"] == 30 and summary["target_dropped_overlapping_evaluation"] == 0
    # Sequences like the target's text weigh more than the pool's on average.
    assert summary["dsir_log_weight_kept_mean"] > summary["dsir_log_weight_pool_mean"]


@pytest.mark.integration
def test_the_classifier_on_ray_equals_one_pass_and_its_band_sits_where_asked(target_run):
    cfg, run, _ = target_run
    ids, pool = decoded_pool(run)
    target = builtin_docs(1000, 1030)
    from actors.target import sample_keys

    negatives = [pool[i] for i in np.lexsort((ids, sample_keys(ids, 3)))[: len(target)]]
    model = fit_quality(target, negatives, LexicalParams(n_features=4096, seed=3))
    scores = quality_scores(pool, model)
    budget = round(0.25 * len(ids))
    rows = perplexity_band(ids, scores, budget, center=0.9)[::-1]
    got = read_table(run / "select" / "subset_classifier.parquet")
    assert got.column("sequence_id").to_numpy().tolist() == ids[rows].tolist()
    np.testing.assert_allclose(got.column("score").to_numpy(), scores[rows], rtol=1e-9, atol=1e-12)
    ranks = np.argsort(np.argsort(scores))  # 0 = lowest score
    kept = ranks[rows]
    assert kept.min() == int(0.9 * (len(ids) - budget)) and kept.max() == kept.min() + budget - 1


@pytest.mark.integration
def test_a_rerun_gives_the_same_bytes_and_a_contaminated_target_stops_before_select_is_cleared(target_run):
    cfg, run, tmp = target_run
    before = {n: (run / "select" / n).read_bytes() for n in ("subset_dsir.parquet", "subset_classifier.parquet")}
    run_pipeline(cfg, run, only=["select"], force=["select"])
    assert {n: (run / "select" / n).read_bytes() for n in before} == before
    leaked = write_jsonl(tmp / "leaked.jsonl", builtin_docs(1000, 1010) + builtin_docs(2002, 2003))
    config = tmp / "leaked.yaml"
    config.write_text((tmp / "target.yaml").read_text().replace(str(tmp / "target.jsonl"), leaked))
    with pytest.raises(ValueError, match="document 10 of the target is document 2 of evaluation set"):
        run_pipeline(load_config(config), run, only=["select"])
    assert {n: (run / "select" / n).read_bytes() for n in before} == before  # nothing already written lost
