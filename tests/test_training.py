"""Tokenizers, packing, subset schedules, the train loop's exact resume, embeddings (no Ray)."""

import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dataio.corpus import BUILTIN_WIKI, read_documents
from dataio.rundir import read_sequences
from dataio.sequences import ParquetRows
from selection.sampling import draw_subset, taylor_softmax
from tests.conftest import shared_file
from training.embed import embed_batch
from training.flops import flops_per_token, peak_flops
from training.loop import LMTrainer, TrainConfig, load_state, save_state
from training.model import ModelConfig, Objective, build_model, lm_inputs, nsp_pairs
from training.packing import pack_document, pad_batch, sequence_id
from training.subsets import SubsetSchedule, draw_function
from training.tokenizer import load_tokenizer, train_tokenizer

TEXTS = [
    f"the {w} of {v} is a thing that happens in the year {i}"
    for i, (w, v) in enumerate(
        (w, v) for w in ("history", "music", "science", "art") for v in ("rome", "china", "peru", "mali")
    )
] * 5


def test_real_vocabularies_load_from_files():
    bert = load_tokenizer(str(shared_file("tokenizers/bert-base-uncased_vocab.txt")), kind="bert")
    assert bert("Hello world")["input_ids"] == [101, 7592, 2088, 102]
    gpt2 = load_tokenizer(str(shared_file("tokenizers/gpt2_from_whisper_tiktoken")), kind="gpt2")
    assert gpt2("Hello world")["input_ids"] == [15496, 995]
    assert gpt2.pad_token_id == gpt2.eos_token_id == 50256


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_trained_tokenizer_round_trips(tmp_path, kind):
    tok = train_tokenizer(TEXTS, kind=kind, vocab_size=300, out_dir=tmp_path / "tok")
    again = load_tokenizer(str(tmp_path / "tok"), kind=kind)
    ids = tok("the music of peru", add_special_tokens=False)["input_ids"]
    assert ids == again("the music of peru", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids).replace(" ", "") == "themusicofperu"
    if kind == "bert":
        assert {tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.pad_token_id} <= set(range(5))
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope" / "vocab.txt"), kind=kind)


TRAIN_IN_A_FRESH_PROCESS = """
import sys
from tests.test_training import wiki_texts
from training.tokenizer import train_tokenizer
train_tokenizer(wiki_texts(), kind=sys.argv[1], vocab_size=800, out_dir=sys.argv[2])
"""


def wiki_texts() -> list[str]:
    return [d.text for d in islice(read_documents(BUILTIN_WIKI), 300)]


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_tokenizer_training_is_the_same_in_every_process(tmp_path, kind):
    """This process and a fresh one (another hash seed) train the same ids: the WordPiece trainer's
    '##' alphabet came out in hash-set order, 118 of these 800 ids differed from run to run."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONHASHSEED": "1", "PYTHONPATH": root}
    subprocess.run([sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS, kind, str(tmp_path / "other")], env=env, check=True)
    train_tokenizer(wiki_texts(), kind=kind, vocab_size=800, out_dir=tmp_path / "here")
    assert (tmp_path / "here" / "tokenizer.json").read_bytes() == (tmp_path / "other" / "tokenizer.json").read_bytes()


def test_packing_and_ids():
    doc = list(range(10, 40))  # 30 tokens
    bert = pack_document(doc, kind="bert", seq_len=12, min_tokens=4, cls_id=2, sep_id=3, eos_id=None)
    assert [len(s) for s in bert] == [12, 12, 12]  # 10 + 10 + 10 tokens, each with [CLS] ... [SEP]
    assert all(s[0] == 2 and s[-1] == 3 for s in bert)
    assert np.concatenate([s[1:-1] for s in bert]).tolist() == doc
    short_tail = pack_document(doc, kind="bert", seq_len=12, min_tokens=11, cls_id=2, sep_id=3, eos_id=None)
    assert len(short_tail) == 0  # every chunk (10 tokens) is below min_tokens
    gpt = pack_document(doc, kind="gpt2", seq_len=16, min_tokens=4, cls_id=None, sep_id=None, eos_id=0)
    assert [len(s) for s in gpt] == [16, 15] and gpt[-1][-1] == 0
    ids = [sequence_id(s) for s in bert]
    assert len(set(ids)) == 3
    assert sequence_id(np.array(bert[0])) == ids[0]  # a function of the tokens alone
    assert ids[0] == sequence_id(np.array([2, *range(10, 20), 3]))
    padded, mask = pad_batch([np.array([5, 6]), np.array([7])], pad_id=0, seq_len=4)
    assert padded.tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]] and mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]


def test_random_draws_do_not_reuse_the_batch_order_stream():
    """The random arm's draw d once came from default_rng([seed, d, 7]), the generator of epoch 7's
    batch order of the same draw."""
    pool = np.arange(1000, dtype=np.int64)
    draws = draw_function("random", pool, budget=100, seed=3)
    for d in range(3):
        order_stream = np.sort(np.random.default_rng([3, d, 7]).choice(len(pool), 100, replace=False))
        assert len(draws(d)) == 100 and not np.array_equal(draws(d), order_stream)
        assert np.array_equal(draws(d), draw_function("random", pool, budget=100, seed=3)(d))  # reproducible


def test_schedule_is_a_function_of_the_step_and_shards_the_global_batch():
    pool = np.arange(50, dtype=np.int64)
    draws = draw_function("random", pool, budget=20, seed=3)
    a = SubsetSchedule(draws, global_batch=8, redraw_every=4, seed=3)
    b = SubsetSchedule(draws, global_batch=8, redraw_every=4, seed=3)
    for step in [7, 0, 3, 9, 4]:  # any order: no hidden state
        rows = a.batch_rows(step)
        assert rows.tolist() == b.batch_rows(step).tolist()
        assert set(rows.tolist()) <= set(draws(a.draw_index(step)).tolist())
        shards = [a.worker_rows(step, r, 4) for r in range(4)]
        assert sorted(np.concatenate(shards).tolist()) == sorted(rows.tolist())
    # An epoch of a draw covers every row of it once before repeating.
    first_draw = np.concatenate([a.batch_rows(s) for s in range(2)])  # 16 of the 20 rows, no repeats
    assert len(set(first_draw.tolist())) == 16
    assert not np.array_equal(draws(0), draws(1))


def test_ingenious_draw_function_matches_the_sampler():
    rng = np.random.default_rng(0)
    pool = rng.permutation(np.arange(1000, 1100, dtype=np.int64))
    partitions = [(pool[:60], taylor_softmax(rng.random(60))), (pool[60:], taylor_softmax(rng.random(40)))]
    draws = draw_function("ingenious", pool, budget=25, seed=5, partitions=partitions)
    assert pool[draws(2)].tolist() == draw_subset(partitions, 25, seed=5, draw=2).tolist()
    fixed = draw_function("greedi", pool, budget=3, seed=0, fixed_ids=pool[[5, 1, 9]])
    assert fixed(0).tolist() == [5, 1, 9] == fixed(3).tolist()
    with pytest.raises(ValueError, match="not in the training pool"):
        draw_function("greedi", pool, budget=1, seed=0, fixed_ids=np.array([7]))


def test_random_and_ingenious_subsets_have_the_same_size():
    # 837 sequences in 60 partitions at 25%: compared arms must train on equally many sequences.
    rng = np.random.default_rng(2)
    pool = rng.permutation(np.arange(5000, 5837, dtype=np.int64))
    bounds = np.cumsum([14] * 57 + [13, 13])
    partitions = [(ids, taylor_softmax(rng.random(len(ids)))) for ids in np.split(pool, bounds)]
    budget = round(0.25 * len(pool))
    for mode in ("random", "ingenious"):
        draws = draw_function(mode, pool, budget=budget, seed=1, partitions=partitions)
        assert [len(set(draws(d).tolist())) for d in range(3)] == [budget] * 3 == [209] * 3


def test_mlm_masking_rates():
    ids = torch.randint(5, 300, (64, 128))
    mask = torch.ones_like(ids)
    batch = lm_inputs(
        "bert", ids, mask, mask_id=4, vocab_size=300, special_ids=[0, 2, 3], generator=torch.Generator().manual_seed(0)
    )
    chosen = batch["labels"] != -100
    assert 0.13 < chosen.float().mean() < 0.17
    assert 0.75 < (batch["input_ids"][chosen] == 4).float().mean() < 0.85
    assert torch.equal(batch["input_ids"][~chosen], ids[~chosen])


def test_whole_word_masking_masks_every_piece_of_a_chosen_word():
    continues_word = torch.arange(300) >= 200  # ids 200.. are '##' pieces
    ids = torch.randint(5, 300, (64, 128))
    ids[:, 1] = 7  # a continuation right after [CLS] starts a word of its own
    ids[:, 0], mask = 2, torch.ones_like(ids)
    batch = lm_inputs(
        "bert",
        ids,
        mask,
        mask_id=4,
        vocab_size=300,
        special_ids=[0, 2, 3],
        generator=torch.Generator().manual_seed(0),
        continues_word=continues_word,
    )
    chosen = batch["labels"] != -100
    word = torch.cumsum(~continues_word[ids], dim=1)  # positions of one word share a number
    for row in range(8):
        for w in word[row].unique():
            in_word = chosen[row][word[row] == w]
            assert bool(in_word.all()) or not bool(in_word.any())  # a word is masked whole or not at all
    starts = ~continues_word[ids] & (ids != 2)
    assert 0.12 < chosen[starts].float().mean() < 0.18  # 15% of words
    assert not chosen[:, 0].any()


def test_nsp_pairs_keep_or_swap_the_second_segment():
    rng = np.random.default_rng(0)
    seqs = [np.array([2, *rng.integers(5, 64, size=rng.integers(3, 15)), 3], dtype=np.int32) for _ in range(200)]
    ids, types, labels = nsp_pairs(seqs, cls_id=2, sep_id=3, generator=torch.Generator().manual_seed(0))
    assert 0.4 < labels.float().mean() < 0.6
    for i, (seq, pair, tt, label) in enumerate(zip(seqs, ids, types, labels.tolist())):
        assert len(pair) == len(tt) <= len(seq) and pair[0] == 2 and pair[-1] == 3
        cut = int(np.flatnonzero(pair == 3)[0])
        first, second = pair[1:cut], pair[cut + 1 : -1]
        assert tt.tolist() == [0] * (cut + 1) + [1] * (len(second) + 1)
        assert first.tolist() == seq[1 : 1 + len(first)].tolist()  # A is the sequence's start
        source = seqs[(i + 1) % len(seqs)][1:-1] if label else seq[1 + len(first) : -1]
        assert second.tolist() == source[: len(second)].tolist()  # B continues A, or starts another sequence
        # One body token gives way to the middle [SEP]; a random B may be shorter than the room left.
        assert len(second) == min(len(seq) - 3 - len(first), len(source))


def tiny_trainer(kind: str, cfg: TrainConfig, seqs: list[np.ndarray] | ParquetRows, **kw) -> LMTrainer:
    torch.manual_seed(0)
    variant = kind == "bert+nsp+wwm"
    model = build_model(
        ModelConfig(
            kind=kind.split("+")[0],
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=64,
            seq_len=16,
            nsp=variant,
            whole_word_masking=variant,
        ),
        vocab_size=64,
        pad_id=0,
    )
    draws = draw_function(cfg.subset, np.arange(len(seqs)), budget=len(seqs) // 2, seed=cfg.seed)
    schedule = SubsetSchedule(draws, global_batch=cfg.global_batch_size, redraw_every=cfg.redraw_every, seed=cfg.seed)
    objective = Objective(
        kind=kind.split("+")[0],
        seq_len=16,
        vocab_size=64,
        pad_id=0,
        mask_id=4,
        cls_id=2,
        sep_id=3,
        nsp=variant,
        continues_word=torch.arange(64) >= 40 if variant else None,
    )
    return LMTrainer(model, seqs, schedule, cfg, objective=objective, **kw)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "bert+nsp+wwm"])
def test_resume_continues_exactly(kind, tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(5, 64, size=rng.integers(6, 17)).astype(np.int32) for _ in range(40)]
    if kind != "gpt2":
        seqs = [np.array([2, *s[1:-1], 3], dtype=np.int32) for s in seqs]
    cfg = TrainConfig(
        steps=8,
        global_batch_size=4,
        grad_accum=2,
        learning_rate=1e-3,
        warmup_steps=2,
        subset="random",
        redraw_every=3,
        seed=1,
    )
    straight = tiny_trainer(kind, cfg, seqs)
    losses = [straight.train_step(s)["loss"] for s in range(8)]
    first = tiny_trainer(kind, cfg, seqs)
    for s in range(4):
        first.train_step(s)
    save_state(
        first.state_dict(4), tmp_path / "state.pt"
    )  # through the file, loaded weights-only, as Ray Train's workers do
    resumed = tiny_trainer(kind, cfg, seqs)
    start = resumed.load_state_dict(load_state(tmp_path / "state.pt"))
    assert start == 4
    assert [resumed.train_step(s)["loss"] for s in range(start, 8)] == losses[4:]


def test_ddp_all_reduces_once_per_step_under_gradient_accumulation():
    """`no_sync` on every micro-batch but the last: one gradient all-reduce a step, the same losses."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.testing._internal.distributed.fake_pg import FakeStore

    rng = np.random.default_rng(2)
    seqs = [rng.integers(5, 64, size=rng.integers(6, 17)).astype(np.int32) for _ in range(40)]
    cfg = TrainConfig(steps=3, global_batch_size=6, grad_accum=3, learning_rate=1e-3, warmup_steps=1, subset="random")
    plain = tiny_trainer("gpt2", cfg, seqs)
    expected = [plain.train_step(s)["loss"] for s in range(cfg.steps)]
    reduced = []

    def count(state, bucket):  # an all-reduce of one world: the gradients as they are
        reduced.append(bucket.index())
        done = torch.futures.Future()
        done.set_result(bucket.buffer())
        return done

    # torch's in-memory test backend: no sockets, so nothing here can wait on a network (a gloo group of one
    # resolved the host name and once hung a CI machine); the hook above stands in for the all-reduce anyway.
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=1)
    try:
        wrapped = tiny_trainer("gpt2", cfg, seqs)
        wrapped.model = DistributedDataParallel(wrapped.model)
        wrapped.model.register_comm_hook(None, count)
        losses = [wrapped.train_step(s)["loss"] for s in range(cfg.steps)]
    finally:
        dist.destroy_process_group()
    assert losses == expected
    assert reduced.count(0) == cfg.steps  # the first bucket once a step, not once per micro-batch


def write_pool(folder: Path, n: int, *, shards: int, row_group: int) -> None:
    """n BERT-shaped sequences of varied lengths in `shards` Parquet files of `row_group`-row groups."""
    rng = np.random.default_rng(4)
    seqs = [np.array([2, *rng.integers(5, 64, size=rng.integers(4, 15)), 3], dtype=np.int32) for _ in range(n)]
    ids = rng.permutation(np.arange(10_000, 10_000 + n, dtype=np.int64))
    for f, part in enumerate(np.array_split(np.arange(n), shards)):
        table = pa.table(
            {"sequence_id": ids[part], "input_ids": pa.array([seqs[i].tolist() for i in part], pa.list_(pa.int32()))}
        )
        pq.write_table(table, folder / f"part-{f:05d}.parquet", row_group_size=row_group)


@pytest.mark.parametrize("world", [1, 2])
def test_workers_load_only_their_window_and_feed_what_the_whole_pool_in_memory_does(tmp_path, world):
    write_pool(tmp_path, 90, shards=3, row_group=7)
    reference_ids, everything = read_sequences(tmp_path)  # the slow obvious path: every sequence in memory
    cfg = TrainConfig(
        steps=14,
        global_batch_size=8,
        grad_accum=2,
        learning_rate=1e-3,
        warmup_steps=2,
        subset="random",
        redraw_every=5,
        seed=2,
        num_workers=world,
    )
    for rank in range(world):
        pool = ParquetRows(str(tmp_path))
        assert pool.ids.tolist() == reference_ids.tolist()
        trainer = tiny_trainer("bert", cfg, pool, rank=rank, world=world, window_rows=17)
        assert trainer.window_steps == 2 * world  # 17 rows hold 2 steps of 8 rows, or 4 of 4
        resumed = tiny_trainer("bert", cfg, ParquetRows(str(tmp_path)), rank=rank, world=world, window_rows=17)
        for step in range(cfg.steps):
            rows = trainer.schedule.worker_rows(step, rank, world)
            expected = [[everything[r] for r in micro] for micro in np.array_split(rows, cfg.grad_accum)]
            got = trainer.step_sequences(step)
            assert [[s.tolist() for s in m] for m in got] == [[s.tolist() for s in m] for m in expected]
            assert all(s.dtype == np.int32 for m in got for s in m)
            window = trainer.schedule.window(step, trainer.window_steps)
            assert trainer.schedule.draw_index(window.start) == trainer.schedule.draw_index(window.stop - 1)
            needed = np.unique(
                np.concatenate(
                    [
                        trainer.schedule.worker_rows(s, rank, world)
                        for s in range(window.start, min(window.stop, cfg.steps))
                    ]
                )
            )
            assert len(pool._rows) == len(needed) <= 17  # this window's rows, not the pool's 90
            outside = np.setdiff1d(np.arange(len(pool)), needed)[0]
            with pytest.raises(ValueError, match=f"row {outside} of the pool .* was not prefetched"):
                pool.get(int(outside))
            if step >= 5:  # a run resumed at step 5, mid-window, feeds the same sequences
                assert [[s.tolist() for s in m] for m in resumed.step_sequences(step)] == [
                    [s.tolist() for s in m] for m in got
                ]


def test_training_from_parquet_rows_equals_training_from_memory(tmp_path):
    write_pool(tmp_path, 40, shards=2, row_group=6)
    cfg = TrainConfig(
        steps=6,
        global_batch_size=4,
        grad_accum=2,
        learning_rate=1e-3,
        warmup_steps=2,
        subset="random",
        redraw_every=3,
        seed=1,
    )
    in_memory = tiny_trainer("bert", cfg, read_sequences(tmp_path)[1])
    from_parquet = tiny_trainer("bert", cfg, ParquetRows(str(tmp_path)), window_rows=5)
    assert [in_memory.train_step(s)["loss"] for s in range(6)] == [from_parquet.train_step(s)["loss"] for s in range(6)]


def test_parquet_rows_refuse_bad_folders_and_rows(tmp_path):
    with pytest.raises(ValueError, match="no sequence shards"):
        ParquetRows(str(tmp_path))
    write_pool(tmp_path, 10, shards=1, row_group=4)
    pool = ParquetRows(str(tmp_path))
    with pytest.raises(ValueError, match="rows 3..10 out of range: .* has 10 sequences"):
        pool.prefetch(np.array([3, 10]))
    write_pool(tmp_path, 12, shards=1, row_group=4)
    with pytest.raises(ValueError, match="changed while training: it has 12 rows, 10 when training started"):
        pool.prefetch(np.array([3]))


class _Payload:
    """What a hostile checkpoint holds: unpickling it runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    save_state({"model": {}, "step": 3, "extra": _Payload(marker)}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"checkpoint .*state\.pt holds more than weights and training state"):
        load_state(tmp_path / "state.pt")
    assert not marker.exists()
    torch.load(tmp_path / "state.pt", weights_only=False)  # what the trainer used to do: the payload runs
    assert marker.exists()


def test_embedding_pooling_ignores_padding():
    torch.manual_seed(0)
    lm = build_model(
        ModelConfig(
            kind="bert", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=16, dropout=0.0
        ),
        vocab_size=64,
        pad_id=0,
    )
    encoder = lm.bert.eval()
    seqs = [np.array([2, 7, 8, 9, 3]), np.array([2, 10, 11, 12, 13, 14, 15, 3])]
    alone = embed_batch(encoder, *pad_batch(seqs[:1], 0, 5), pooling="mean", layer=-1)
    batched = embed_batch(encoder, *pad_batch(seqs, 0, 16), pooling="mean", layer=-1)
    np.testing.assert_allclose(batched[0], alone[0], rtol=1e-4, atol=1e-5)
    ids, mask = pad_batch(seqs, 0, 16)
    hidden = encoder(
        input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True
    ).hidden_states[1]
    manual = hidden[1, :8].mean(0).detach().numpy()
    np.testing.assert_allclose(
        embed_batch(encoder, ids, mask, pooling="mean", layer=1)[1], manual, rtol=1e-4, atol=1e-5
    )
    last = embed_batch(encoder, ids, mask, pooling="last", layer=1)
    np.testing.assert_allclose(last[0], hidden[0, 4].detach().numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="layer 5 out of range"):
        embed_batch(encoder, ids, mask, pooling="mean", layer=5)


def test_flops_per_token_by_hand():
    cfg = ModelConfig(kind="bert", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=16)
    model = build_model(cfg, vocab_size=100, pad_id=0)
    h, f, v = 32, 64, 100
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h  # attention, MLP, two LayerNorms
    head = (h * h + h) + 2 * h + v  # transform dense + LayerNorm + output bias
    weights = 2 * layer + head + v * h  # + the (tied) output projection onto the vocabulary
    assert flops_per_token(model, seq_len=16) == 6 * weights + 12 * 2 * h * 16
    assert peak_flops(torch.device("cpu")) is None  # no MFU claimed off GPU


def test_gpu_benchmark_runs_on_cpu():
    from bench.gpu import measure

    result = measure("tiny", steps=2, batch=4, device=torch.device("cpu"), warmup=1)
    assert result["train_tokens_per_s"] > 0 and result["embed_sequences_per_s"] > 0 and result["mfu"] is None


def test_gpu_check_writes_its_numbers_with_date_and_machine(tmp_path):
    """The CPU form of `python -m bench.gpu --device cpu`, shortened (its device paths have their own test)."""
    import json

    from bench.gpu import main

    argv = ["--device", "cpu", "--steps", "2", "--embed-batches", "2", "--knn", "300", "--no-paths"]
    results = main([*argv, "--out", str(tmp_path)])
    assert results["form"] == "cpu" and results["training"]["train_steps"] == 2 and results["training"]["mfu"] is None
    assert results["knn"]["n"] == 300 and results["knn"]["torch_bf16_recall"] > 0.99
    (written,) = tmp_path.glob("*.json")
    assert json.loads(written.read_text()) == json.loads(json.dumps(results))
    table = written.with_suffix(".md").read_text()
    assert f"on {results['machine']}" in table and results["date"] in table and "| embed sequences/s |" in table


def test_gpu_knn_benchmark_runs_on_cpu_without_faiss_gpu():
    from bench.gpu import knn_graph_seconds

    result = knn_graph_seconds(500, device=torch.device("cpu"), d=16, k=5)
    assert result["torch_s"] > 0 and result["n"] == 500
    assert result["faiss_gpu"] in ("faiss not installed", "this faiss has no GPU support")


def test_bench_results_are_written_with_date_machine_and_versions(tmp_path):
    """bench.common.write_result: the one writer every benchmark uses (JSON plus a Markdown table)."""
    import json

    from bench.common import markdown_table, write_result

    record = write_result("demo", {"speedup": 2.5}, markdown_table(["a", "b"], [[1, 2]]), form="quick", out=tmp_path)
    written = json.loads((tmp_path / "demo-quick.json").read_text())
    assert written == record and written["speedup"] == 2.5 and written["form"] == "quick"
    assert all(written[k] for k in ("date", "machine", "cpu", "cores", "python", "numpy"))
    table = (tmp_path / "demo-quick.md").read_text()
    assert written["date"] in table and written["machine"] in table and "| a | b |" in table and "| 1 | 2 |" in table
