"""Per-sequence losses in the embedding pass, and the perplexity band built on them."""

import dataclasses
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dataio.rundir import read_sequences, read_table, shard_files
from jobs.config import EmbedConfig, PipelineConfig, SelectConfig, load_config
from jobs.pipeline import run_pipeline
from jobs.stages.embed import embed_files
from selection.perplexity import perplexity_band
from tests.conftest import write_corpus
from training.embed import embed_batch, embed_with_loss, load_encoder, masked_copy
from training.model import ModelConfig, Objective, build_model
from training.packing import pad_batch


def band_reference(ids, losses, budget, center):
    ranked = [i for _, i in sorted(zip(losses.tolist(), ids.tolist()))]
    start = math.floor(center * (len(ids) - budget))
    return ranked[start : start + budget]


@pytest.mark.parametrize("n", [1, 2, 7, 50])
@pytest.mark.parametrize("center", [0.0, 0.25, 0.5, 1.0])
def test_band_is_the_middle_of_the_sorted_losses(n, center):
    rng = np.random.default_rng(n)
    ids = rng.permutation(np.arange(-n, n, 2, dtype=np.int64) * 7919)
    losses = rng.integers(0, 5, n).astype(np.float32)  # many ties: broken by sequence_id
    for budget in range(n + 1):
        rows = perplexity_band(ids, losses, budget, center=center)
        assert ids[rows].tolist() == band_reference(ids, losses, budget, center)
        shuffled = rng.permutation(n)
        again = perplexity_band(ids[shuffled], losses[shuffled], budget, center=center)
        assert ids[shuffled][again].tolist() == ids[rows].tolist()  # the input order does not matter


def test_band_drops_equal_shares_and_ranks_nan_highest():
    ids = np.arange(10)
    losses = np.array([5, 1, 9, 3, 7, 0, 8, 2, 6, 4], np.float32)
    assert losses[perplexity_band(ids, losses, 4)].tolist() == [3, 4, 5, 6]  # 3 lowest and 3 highest dropped
    assert losses[perplexity_band(ids, losses, 5)].tolist() == [2, 3, 4, 5, 6]  # 2 lowest, 3 highest
    losses[5] = np.nan
    assert ids[perplexity_band(ids, losses, 1, center=1.0)].tolist() == [5]
    with pytest.raises(ValueError, match="budget 11 is not in"):
        perplexity_band(ids, losses, 11)
    with pytest.raises(ValueError, match="center must be in"):
        perplexity_band(ids, losses, 3, center=1.5)


def test_config_requires_sequence_loss_for_the_band_and_the_own_model_for_the_loss():
    with pytest.raises(ValueError, match="set embed.sequence_loss: true"):
        PipelineConfig(select=SelectConfig(strategy="perplexity"))
    PipelineConfig(select=SelectConfig(strategy="perplexity"), embed=EmbedConfig(sequence_loss=True))
    with pytest.raises(ValueError, match=r"embed.sequence_loss .* embed.encoder: warmstart, got embed.encoder='x/y'"):
        EmbedConfig(encoder="x/y", sequence_loss=True)
    with pytest.raises(ValueError, match="select.perplexity_center must be in"):
        SelectConfig(perplexity_center=-0.1)


VOCAB, PAD, CLS, SEP, MASK = 64, 0, 2, 3, 4


def tiny_model(kind: str, folder):
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=16)
    build_model(cfg, vocab_size=VOCAB, pad_id=PAD, eos_id=1).save_pretrained(folder)
    objective = Objective(kind=kind, seq_len=16, vocab_size=VOCAB, pad_id=PAD, mask_id=MASK, cls_id=CLS, sep_id=SEP)
    return objective


def pool(kind: str):
    rng = np.random.default_rng(3)
    seqs = [rng.integers(5, VOCAB, size=rng.integers(4, 17)) for _ in range(11)]
    if kind == "bert":
        seqs = [np.array([CLS, *s[1:-1], SEP]) for s in seqs]
    return seqs, rng.integers(-(2**62), 2**62, size=len(seqs))


@pytest.mark.parametrize("kind, pooling", [("gpt2", "last"), ("bert", "mean")])
def test_sequence_loss_equals_a_plain_forward_one_sequence_at_a_time(kind, pooling, tmp_path):
    objective = tiny_model(kind, tmp_path)
    seqs, ids = pool(kind)
    lm = load_encoder(str(tmp_path), torch.device("cpu"), lm_head=kind)
    plain = load_encoder(str(tmp_path), torch.device("cpu"))
    reference = []
    for s, i in zip(seqs, ids):
        with torch.no_grad():
            if kind == "gpt2":
                x = torch.as_tensor(s[None])
                reference.append(float(lm(input_ids=x, labels=x).loss))
            else:
                masked, labels = masked_copy(s, int(i), seed=7, objective=objective)
                unlabelled = labels == -100  # only labelled positions are corrupted; a few stay as they were (10%)
                assert unlabelled.sum() < len(s) and (masked[unlabelled] == s[unlabelled]).all()
                loss = lm(input_ids=torch.as_tensor(masked[None]), labels=torch.as_tensor(labels[None])).loss
                reference.append(float(loss))
    by_size = {}
    for size in (1, 4, len(seqs)):  # batch composition and padding change nothing but rounding
        emb, loss = [], []
        for first in range(0, len(seqs), size):
            batch = seqs[first : first + size]
            e, l_ = embed_with_loss(
                lm, batch, ids[first : first + size], objective=objective, pooling=pooling, layer=-1, seed=7
            )
            # The embeddings are those of the model without its head, to the byte.
            alone = embed_batch(plain, *pad_batch(batch, PAD, max(len(s) for s in batch)), pooling=pooling, layer=-1)
            assert e.tobytes() == alone.tobytes()
            emb.append(e)
            loss.append(l_)
        by_size[size] = np.concatenate(loss)
        assert by_size[size].dtype == np.float32
        np.testing.assert_allclose(by_size[size], reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_size[1], by_size[len(seqs)], rtol=1e-5, atol=1e-6)
    other_seed = embed_with_loss(lm, seqs, ids, objective=objective, pooling=pooling, layer=-1, seed=8)[1]
    assert (kind == "gpt2") == np.array_equal(other_seed, by_size[len(seqs)])  # the seed moves BERT's masks only


PIPELINE = """
name: ppl
model: {{kind: bert, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, seq_len: 64, dropout: 0}}
corpus: {{source: {corpus}, text_field: text, id_field: id}}
prepare: {{vocab_size: 600, documents_per_shard: 60, heldout_fraction: 0.1}}
warmstart: {{steps: 6, global_batch_size: 8, learning_rate: 0.001, warmup_steps: 2, schedule: constant,
            checkpoint_every: 3}}
embed: {{layer: -1, batch_size: 16, num_actors: 2, sequence_loss: true}}
select: {{fraction: 0.3, num_partitions: 2, knn_k: 5, seed: 11, strategy: perplexity}}
train: {{steps: 4, global_batch_size: 8, learning_rate: 0.001, warmup_steps: 0, schedule: constant, cooldown_steps: 4,
        init_optimizer: true, subset: ingenious, checkpoint_every: 2}}
"""


@pytest.mark.integration
def test_pipeline_writes_the_middle_of_the_loss_distribution(ray_cluster, tmp_path):
    config = tmp_path / "ppl.yaml"
    config.write_text(PIPELINE.format(corpus=write_corpus(tmp_path / "corpus.jsonl", 120)))
    cfg = load_config(config)
    run = tmp_path / "run"
    rows = run_pipeline(cfg, run, only=["prepare", "warmstart", "embed", "select", "train"])
    assert all(r["status"] == "ran" for r in rows)

    embed_shards = shard_files(run / "embed")
    tables = [read_table(f) for f in embed_shards]
    assert all(t.schema.field("loss").type == "float" for t in tables)
    ids = np.concatenate([t.column("sequence_id").to_numpy() for t in tables])
    losses = np.concatenate([t.column("loss").to_numpy() for t in tables])
    assert len(ids) == len(read_sequences(run / "prepare" / "sequences")[0]) and np.isfinite(losses).all()
    budget = round(0.3 * len(ids))
    band = pq.read_table(run / "select" / "subset_perplexity.parquet")
    assert band.column_names == ["sequence_id", "loss"] and band.num_rows == budget
    assert band.column("sequence_id").to_pylist() == band_reference(ids, losses, budget, 0.5)
    assert band.column("loss").to_numpy().tolist() == sorted(losses.tolist())[(len(ids) - budget) // 2 :][:budget]
    assert (run / "select" / "subset.parquet").read_bytes() == (
        run / "select" / "subset_perplexity.parquet"
    ).read_bytes()

    # Turning the loss off leaves the embedding column's bytes as they were.
    plain_cfg = dataclasses.replace(
        cfg,
        embed=dataclasses.replace(cfg.embed, sequence_loss=False),
        select=dataclasses.replace(cfg.select, strategy="ingenious"),
    )
    embed_files(
        plain_cfg,
        encoder=str(run / "warmstart" / "model"),
        from_warmstart=True,
        tokenizer=str(run / "prepare" / "tokenizer"),
        todo=shard_files(run / "prepare" / "sequences"),
        out=str(tmp_path / "plain"),
    )
    for f in embed_shards:
        plain = pq.read_table(tmp_path / "plain" / f.rsplit("/", 1)[-1])
        assert plain.column_names == ["sequence_id", "embedding"]
        assert plain.column("embedding").combine_chunks().values.to_numpy().tobytes() == (
            read_table(f).column("embedding").combine_chunks().values.to_numpy().tobytes()
        )

    # The regime: the warm start ends at its peak rate, publishes its AdamW state, and the train stage
    # (Ray Train, init_optimizer) goes on at that rate and cools down to 0.
    assert (run / "warmstart" / "model" / "optimizer.pt").exists()
    lr = {
        s: [json.loads(x)["lr"] for x in (run / s / "metrics.jsonl").read_text().splitlines()]
        for s in ("warmstart", "train")
    }
    assert lr["warmstart"] == pytest.approx([0, 5e-4, 1e-3, 1e-3, 1e-3, 1e-3])
    assert lr["train"] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_embedding_runs_only_the_blocks_up_to_its_layer_and_equals_every_hidden_state(kind, tmp_path):
    from training.embed import layer_output

    tiny_model(kind, tmp_path)
    encoder = load_encoder(str(tmp_path), torch.device("cpu"))
    seqs, _ = pool(kind)
    ids, mask = (torch.as_tensor(a) for a in pad_batch(seqs, PAD, 16))
    ran = []
    for i, block in enumerate(encoder.base_model.encoder.layer if kind == "bert" else encoder.h):
        block.register_forward_pre_hook(lambda *_, i=i: ran.append(i))
    with torch.inference_mode():
        every = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for layer in range(-3, 3):
            ran.clear()
            hidden, _ = layer_output(encoder, ids, mask, layer)
            assert hidden.numpy().tobytes() == every[layer].numpy().tobytes()
            assert ran == list(
                range(min(layer % 3 + 1, 2))
            )  # the pass ends on entering block `layer`: no later one runs
