"""python -m experiments.diagnostics on a tiny run directory written through the project's own writers:
a built pool, a trained tokenizer, sequence and embedding shards, the select stage's files (no Ray)."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from dataio.contracts import RUN_CONFIG, PrepareOutputs, SelectOutputs, shard_name
from dataio.rundir import embedding_table, write_parquet
from experiments.categories import pool_sources, sequence_groups
from experiments.diagnostics import diagnose, main
from experiments.webpool import NearDuplicateConfig, WebPoolConfig, write_pool
from selection.diagnostics import near_duplicate_recall, neighbours
from selection.sampling import draw_subset, taylor_softmax
from selection.shard import order_shard
from tests.test_webpool import _article
from training.tokenizer import train_tokenizer

SEQ_LEN = 40  # tokens per sequence: the longer passages make two


def write_sources(folder: Path) -> tuple[str, str]:
    wiki, bio = folder / "wiki.jsonl.gz", folder / "abstracts.txt"
    rows = [{"id": str(k), "text": _article(k)} for k in range(200)]
    wiki.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    rng = random.Random(3)
    sentence = "Patients with {} disease bio{} improved."
    bio.write_text(
        "\n".join(" ".join(sentence.format(rng.choice(["renal", "cardiac"]), i) for _ in range(9)) for i in range(80))
    )
    return str(wiki), str(bio)


def write_prepare(run: Path, pool: list[dict]) -> tuple[np.ndarray, list[str], list[int]]:
    """Tokenizer and two shards of sequences (ids shuffled large integers, chunks of SEQ_LEN tokens). The
    articles share a vocabulary of 14 words, so clean passages are lexically closer than real ones."""
    tok = train_tokenizer([r["text"] for r in pool], kind="gpt2", vocab_size=400, out_dir=run / "prepare" / "tokenizer")
    docs, chunks, tokens = [], [], []
    for r in pool:
        ids = tok(r["text"])["input_ids"]
        for c, start in enumerate(range(0, len(ids), SEQ_LEN)):
            docs.append(r["id"])
            chunks.append(c)
            tokens.append(ids[start : start + SEQ_LEN])
    seq_ids = np.random.default_rng(0).permutation(10**6)[: len(docs)].astype(np.int64) + 10**9
    for shard, rows in enumerate(np.array_split(np.arange(len(docs)), 2)):
        table = pa.table(
            {
                "sequence_id": seq_ids[rows],
                "doc_id": [docs[i] for i in rows],
                "chunk": pa.array([chunks[i] for i in rows], pa.int32()),
                "input_ids": pa.array([tokens[i] for i in rows], pa.list_(pa.int32())),
                "num_tokens": pa.array([len(tokens[i]) for i in rows], pa.int32()),
            },
            schema=PrepareOutputs.SEQUENCE_SCHEMA,
        )
        write_parquet(table, str(run / "prepare" / PrepareOutputs.SEQUENCES / shard_name(shard)))
    return seq_ids, docs, chunks


def write_embed_and_select(run: Path, seq_ids: np.ndarray, budget: int) -> np.ndarray:
    """A space that sees nothing (random vectors), in three shards of another order, and the select
    stage's files from it: two partitions' greedy orders, probabilities, draw 0 and a greedy top-k."""
    x = np.random.default_rng(1).normal(size=(len(seq_ids), 16)).astype(np.float32)
    order = np.random.default_rng(2).permutation(len(seq_ids))
    for shard, rows in enumerate(np.array_split(order, 3)):
        write_parquet(embedding_table(seq_ids[rows], x[rows]), str(run / "embed" / shard_name(shard)))
    parts = [order_shard(seq_ids[rows], x[rows], 20) for rows in np.array_split(np.arange(len(seq_ids)), 2)]
    probs = [taylor_softmax(p.gains) for p in parts]
    table = pa.table(
        {
            "sequence_id": np.concatenate([p.sequence_ids for p in parts]),
            "shard": np.concatenate([np.full(len(p.gains), s, np.int32) for s, p in enumerate(parts)]),
            "rank": np.concatenate([np.arange(len(p.gains)) for p in parts]),
            "gain": np.concatenate([p.gains for p in parts]),
            "probability": np.concatenate(probs),
        },
        schema=SelectOutputs.PROBABILITIES_SCHEMA,
    )
    write_parquet(table, str(run / "select" / SelectOutputs.PROBABILITIES))
    draw = draw_subset([(p.sequence_ids, q) for p, q in zip(parts, probs)], budget, seed=0, draw=0)
    schema = SelectOutputs.SUBSET_SCHEMAS
    draws = pa.table({"sequence_id": draw, "draw": np.zeros(len(draw), np.int32)}, schema=schema["ingenious"])
    write_parquet(draws, str(run / "select" / SelectOutputs.subset("ingenious")))
    top = parts[0].sequence_ids[:budget]
    greedi = pa.table({"sequence_id": top, "rank": np.arange(budget), "gain": parts[0].gains[:budget]})
    write_parquet(greedi.cast(schema["greedi"]), str(run / "select" / SelectOutputs.subset("greedi")))
    return x


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> dict:
    from jobs.config import PipelineConfig
    from training.model import ModelConfig

    root = tmp_path_factory.mktemp("diag")
    wiki, bio = write_sources(root)
    cfg = WebPoolConfig(
        documents=300,
        passage_words=40,
        min_passage_words=15,
        max_passages_per_article=3,
        heldout_passages=10,
        clean_source=wiki,
        off_domain_sources=[bio],
        near_duplicate=NearDuplicateConfig(max_copies=10),
    )
    write_pool(cfg, str(root / "pool"))
    pool = [json.loads(x) for x in gzip.decompress((root / "pool" / "pool.jsonl.gz").read_bytes()).splitlines()]
    run = root / "run"
    seq_ids, docs, chunks = write_prepare(run, pool)
    budget = round(0.25 * len(seq_ids))
    x = write_embed_and_select(run, seq_ids, budget)
    (run / RUN_CONFIG).write_text(yaml.safe_dump(PipelineConfig(model=ModelConfig(kind="gpt2")).to_dict()))
    return {"root": root, "run": run, "pool": pool, "ids": seq_ids, "docs": docs, "chunks": chunks, "x": x}


def test_groups_join_each_copy_to_its_source_chunk_by_chunk(run_dir):
    ids, cats, groups = sequence_groups(run_dir["run"] / "prepare", str(run_dir["root"] / "pool" / "pool.jsonl.gz"))
    assert np.all(np.diff(ids) > 0) and len(ids) == len(run_dir["ids"])
    source = {r["id"]: r.get("source") for r in run_dir["pool"]}
    by_id = dict(zip(run_dir["ids"].tolist(), zip(run_dir["docs"], run_dir["chunks"])))
    keys = [(source[by_id[i][0]] or by_id[i][0], by_id[i][1]) for i in ids.tolist()]
    for a in range(len(ids)):
        members = [b for b in range(len(ids)) if keys[b] == keys[a]]
        assert (groups[a] == -1) == (len(members) == 1)
        assert all(groups[b] == groups[a] for b in members)
    copies = cats == "near_duplicate"
    assert copies.any() and (groups[copies] >= 0).mean() > 0.9  # a copy's last chunk may have no twin
    assert set(cats.tolist()) == {r["category"] for r in run_dir["pool"]}


def test_legacy_pools_get_sources_from_the_ids(tmp_path, run_dir):
    rows = [{k: v for k, v in r.items() if k != "source"} for r in run_dir["pool"]]
    legacy = tmp_path / "pool.jsonl"
    legacy.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pool_sources(str(legacy)) == {r["id"]: r["source"] for r in run_dir["pool"] if "source" in r}


def test_the_command_reports_both_spaces(run_dir, capsys):
    out = run_dir["root"] / "diag.json"
    main(["--run-dir", str(run_dir["run"]), "--pool", str(run_dir["root"] / "pool"), "--k", "5", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["sequences"] == len(run_dir["ids"]) and report["budget"] == round(0.25 * len(run_dir["ids"]))
    run, lexical = report["spaces"]["run"], report["spaces"]["lexical"]
    assert lexical["near_duplicate_recall"]["recall"] > 0.8 > 0.3 > run["near_duplicate_recall"]["recall"]
    assert lexical["knn_purity"]["boilerplate"] > run["knn_purity"]["boilerplate"]
    assert set(run["clean_similarity_auc"]) == set(report["pool_composition"]) - {"clean"}
    assert report["select_draw_reproduced"] is True
    assert {"select:ingenious", "select:greedi", "greedy top-k", "ingenious T=1", "ingenious T=0.01"} <= set(
        run["subsets"]
    )
    assert {"greedy top-k", "ingenious T=1", "ingenious T=0.1"} <= set(lexical["subsets"])
    for shares in [*run["subsets"].values(), *lexical["subsets"].values(), report["pool_composition"]]:
        assert sum(shares.values()) == pytest.approx(1.0)
    assert run["subsets"]["select:ingenious"] == run["subsets"]["ingenious T=1"]
    table = (run_dir["root"] / "diag.md").read_text()
    assert "near-duplicate recall@5" in table and "| lexical | greedy top-k |" in table
    assert table in capsys.readouterr().out


def test_the_run_space_numbers_are_the_library_functions_on_the_aligned_embeddings(run_dir):
    report = diagnose(str(run_dir["run"]), str(run_dir["root"] / "pool"), k=5, temperatures=(1.0,))
    ids, cats, groups = sequence_groups(run_dir["run"] / "prepare", str(run_dir["root"] / "pool" / "pool.jsonl.gz"))
    x = run_dir["x"][np.argsort(run_dir["ids"])]  # the embeddings in sorted-id order
    expected = near_duplicate_recall(neighbours(x, 5), groups, cats == "near_duplicate")
    assert report["spaces"]["run"]["near_duplicate_recall"] == expected


def test_a_folder_that_is_not_a_run_is_named(tmp_path, run_dir):
    with pytest.raises(ValueError, match="no config.yaml: not a pipeline run directory"):
        diagnose(str(tmp_path), str(run_dir["root"] / "pool"))
