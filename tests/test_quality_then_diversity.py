"""Quality, then diversity: the lexical space in the embed stage (with the warm start's loss beside it),
select.prefilter (the perplexity band and SemDeDup before INGENIOUS and GreeDi) and select.temperature,
on a real local Ray cluster, pinned to in-process references."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from dataio.rundir import read_sequences, read_table, shard_files
from jobs.config import EmbedConfig, PipelineConfig, SelectConfig, load_config
from jobs.pipeline import run_pipeline
from jobs.stages.embed import embed_files
from selection.dedup import semdedup_keep
from selection.lexical import LexicalParams, lexical_embeddings
from selection.partition import group_bounds
from selection.perplexity import perplexity_band
from selection.sampling import taylor_softmax
from tests.conftest import write_corpus
from training.tokenizer import load_tokenizer

PIPELINE = """
name: quality
model: {{kind: gpt2, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64, dropout: 0}}
corpus: {{source: {corpus}, text_field: text, id_field: id}}
prepare: {{vocab_size: 600, documents_per_shard: 60, heldout_fraction: 0.1}}
warmstart: {{steps: 4, global_batch_size: 8, learning_rate: 0.001, warmup_steps: 1, schedule: constant,
            checkpoint_every: 2}}
embed: {{encoder: lexical, batch_size: 16, num_actors: 2, sequence_loss: true}}
select: {{fraction: 0.25, num_partitions: 2, knn_k: 5, seed: 3, strategy: ingenious, also: [greedi],
          prefilter: [perplexity, semdedup], perplexity_keep: 0.6, dedup_threshold: 0.9, temperature: 0.5}}
"""


@pytest.fixture(scope="module")
def quality_run(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    config = tmp / "quality.yaml"
    config.write_text(PIPELINE.format(corpus=write_corpus(tmp / "corpus.jsonl", 120)))
    cfg = load_config(config)
    rows = run_pipeline(cfg, tmp / "run", only=["prepare", "warmstart", "embed", "select"])
    assert all(r["status"] == "ran" for r in rows)
    return cfg, tmp / "run", tmp


@pytest.mark.integration
def test_the_lexical_space_equals_one_pass_over_the_decoded_pool_and_keeps_the_warm_starts_loss(quality_run):
    cfg, run, tmp = quality_run
    ids, seqs = read_sequences(run / "prepare" / "sequences")
    tok = load_tokenizer(str(run / "prepare" / "tokenizer"), kind="gpt2")
    expected = lexical_embeddings(tok.batch_decode(seqs, skip_special_tokens=True), LexicalParams())
    tables = [read_table(f) for f in shard_files(run / "embed")]
    got_ids = np.concatenate([t.column("sequence_id").to_numpy() for t in tables])
    got = np.concatenate([t.column("embedding").combine_chunks().values.to_numpy().reshape(-1, 256) for t in tables])
    assert np.array_equal(got_ids, ids)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # The loss column is the warm-started model's, as the model space's embed writes it.
    model_cfg = dataclasses.replace(cfg, embed=dataclasses.replace(cfg.embed, encoder="warmstart", layer=-1))
    embed_files(
        model_cfg,
        encoder=str(run / "warmstart" / "model"),
        from_warmstart=True,
        tokenizer=str(run / "prepare" / "tokenizer"),
        todo=shard_files(run / "prepare" / "sequences"),
        out=str(tmp / "model-space"),
    )
    for t, f in zip(tables, shard_files(run / "embed")):
        model = read_table(str(tmp / "model-space" / f.rsplit("/", 1)[-1]))
        assert model.column("loss").to_numpy().tobytes() == t.column("loss").to_numpy().tobytes()


@pytest.mark.integration
def test_prefilter_records_every_drop_and_the_diversity_strategies_choose_among_survivors(quality_run):
    cfg, run, _ = quality_run
    select = run / "select"
    pool = [read_table(f) for f in shard_files(run / "embed")]
    ids = np.concatenate([t.column("sequence_id").to_numpy() for t in pool])
    losses = np.concatenate([t.column("loss").to_numpy() for t in pool])
    budget = round(0.25 * len(ids))
    band = set(ids[perplexity_band(ids, losses, round(0.6 * len(ids)), center=0.5)].tolist())
    record = pq.read_table(select / "prefilter.parquet").to_pydict()
    assert sorted(record["sequence_id"]) == sorted(ids.tolist())
    by_id = dict(zip(record["sequence_id"], zip(record["kept"], record["dropped_by"])))
    assert {i for i, (_, why) in by_id.items() if why == "perplexity"} == set(ids.tolist()) - band
    dedup = [read_table(f) for f in shard_files(select / "dedup")]
    dup_ids = np.concatenate([t.column("sequence_id").to_numpy() for t in dedup])
    dup = np.concatenate([t.column("duplicate_score").to_numpy() for t in dedup])
    dropped_by_dedup = set(dup_ids[~semdedup_keep(dup, 0.9)].tolist()) & band
    assert {i for i, (_, why) in by_id.items() if why == "semdedup"} == dropped_by_dedup
    survivors = {i for i, (kept, _) in by_id.items() if kept}
    assert survivors == band - dropped_by_dedup and len(survivors) >= budget
    probabilities = pq.read_table(select / "probabilities.parquet")
    assert set(probabilities.column("sequence_id").to_pylist()) == survivors
    for name in ("ingenious", "greedi"):
        chosen = pq.read_table(select / f"subset_{name}.parquet").column("sequence_id").to_pylist()
        assert len(chosen) == budget and set(chosen) <= survivors, name
    summary = json.loads((select / "manifest.json").read_text())["summary"]
    assert summary["prefilter_kept"] == len(survivors) and summary["sequences"] == len(ids)
    assert not (select / "scatter").exists() and not (select / "prefiltered" / "scatter").exists()


@pytest.mark.integration
def test_temperature_reaches_the_probabilities_and_tasks_do_not_change_the_bytes(quality_run, tmp_path):
    cfg, run, _ = quality_run
    probs = pq.read_table(run / "select" / "probabilities.parquet").sort_by(
        [("shard", "ascending"), ("rank", "ascending")]
    )
    starts = group_bounds(probs.column("shard").to_numpy())[0][1:]
    gains = np.split(probs.column("gain").to_numpy(), starts)
    expected = np.concatenate([taylor_softmax(g, 0.5) for g in gains])
    assert np.array_equal(probs.column("probability").to_numpy(), expected)
    assert not np.array_equal(expected, np.concatenate([taylor_softmax(g) for g in gains]))
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, symlinks=True)
    wider = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, cpus_per_task=0.5))
    assert run_pipeline(wider, copy, only=["select"], force=["select"])[0]["status"] == "ran"
    for f in ("probabilities.parquet", "subset.parquet", "subset_greedi.parquet", "prefilter.parquet"):
        assert (copy / "select" / f).read_bytes() == (run / "select" / f).read_bytes(), f


@pytest.mark.parametrize(
    ("select", "embed", "error"),
    [
        ({"prefilter": ["perplexty"]}, {"sequence_loss": True}, "select.prefilter entries must be among"),
        ({"prefilter": ["perplexity", "perplexity"]}, {"sequence_loss": True}, "names a filter twice"),
        ({"prefilter": ["perplexity"]}, {}, "select.prefilter perplexity ranks sequences by their loss"),
        ({"prefilter": ["perplexity"], "perplexity_keep": 0.1}, {"sequence_loss": True}, "perplexity_keep must be"),
        ({"prefilter": ["semdedup"], "merge_objective": "all_points"}, {}, "all_points is not supported"),
        ({"prefilter": ["semdedup"], "partition": "random"}, {}, "semdedup deduplicates within the k-means"),
        ({"temperature": 0}, {}, "select.temperature must be > 0"),
    ],
)
def test_bad_prefilter_settings_are_refused(select, embed, error):
    with pytest.raises(ValueError, match=error):
        PipelineConfig(select=SelectConfig(**select), embed=EmbedConfig(**embed))


def test_the_lexical_space_may_carry_the_warm_starts_loss_but_another_encoder_may_not():
    assert EmbedConfig(encoder="lexical", sequence_loss=True).encoder == "lexical"
    with pytest.raises(ValueError, match="embed.sequence_loss is the run's own model's loss"):
        EmbedConfig(encoder="some/encoder", sequence_loss=True)
