"""The web-like pool builder, on small synthetic sources written to tmp_path (one test on the real data)."""

import dataclasses
import gzip
import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from dataio.corpus import read_documents
from experiments.webpool import (
    CATEGORIES,
    NearDuplicateConfig,
    Proportions,
    WebPoolConfig,
    categories,
    category_counts,
    load_config,
    multiplicities,
    near_duplicate,
    passages,
    write_pool,
)
from tests.conftest import shared_file

WORDS = "river stone city music light garden winter market bridge forest paper engine island valley".split()


def _article(k: int) -> str:
    """Paragraphs of sentences that all carry the article's marker word `artK`, some with numbers."""
    rng = random.Random(k)
    paras = [f"Heading {k}."]  # a short line, as WikiExtractor leaves section titles: not a paragraph
    for _ in range(rng.randint(3, 6)):
        sents = [
            f"The {rng.choice(WORDS)} of art{k} was {rng.choice(WORDS)} in {rng.randint(1000, 2000)} "
            f"and {' '.join(rng.choices(WORDS, k=rng.randint(4, 12)))}."
            for _ in range(rng.randint(2, 7))
        ]
        paras.append(" ".join(sents))
    return "\n".join(paras)


@pytest.fixture
def sources(tmp_path: Path) -> tuple[str, str]:
    wiki = tmp_path / "wiki.jsonl.gz"
    rows = [{"id": str(k), "title": f"T{k}", "text": _article(k)} for k in range(300)]
    wiki.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    bio = tmp_path / "abstracts.txt"
    rng = random.Random(7)
    bio.write_text(
        "\n".join(
            " ".join(
                f"Patients with {rng.choice(['renal', 'hepatic', 'cardiac'])} disease bio{i} improved."
                for _ in range(12)
            )
            for i in range(120)
        )
    )
    return str(wiki), str(bio)


def _config(sources: tuple[str, str], **overrides) -> WebPoolConfig:
    settings = {
        "documents": 400,
        "passage_words": 40,
        "min_passage_words": 15,
        "max_passages_per_article": 3,
        "heldout_passages": 30,
        "clean_source": sources[0],
        "off_domain_sources": [sources[1]],
        "near_duplicate": NearDuplicateConfig(max_copies=20),
    }
    return WebPoolConfig(**(settings | overrides))


def _read_pool(folder: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress((folder / "pool.jsonl.gz").read_bytes()).splitlines()]


def _jaccard(a: str, b: str) -> float:
    x, y = set(a.split()), set(b.split())
    return len(x & y) / len(x | y)


@pytest.fixture
def built(sources, tmp_path) -> tuple[WebPoolConfig, Path, list[dict]]:
    cfg = _config(sources)
    write_pool(cfg, str(tmp_path / "out"))
    return cfg, tmp_path / "out", _read_pool(tmp_path / "out")


def test_same_config_and_seed_give_the_same_bytes(sources, built, tmp_path):
    cfg, first, _ = built
    write_pool(cfg, str(tmp_path / "again"))
    for name in ("pool.jsonl.gz", "heldout_clean.jsonl", "manifest.json"):
        assert (first / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    write_pool(dataclasses.replace(cfg, seed=1), str(tmp_path / "other"))
    assert (tmp_path / "other" / "pool.jsonl.gz").read_bytes() != (first / "pool.jsonl.gz").read_bytes()


def test_categories_in_proportion_interleaved_and_recorded(built):
    cfg, out, pool = built
    counts = Counter(r["category"] for r in pool)
    for c in CATEGORIES:
        assert abs(counts[c] - cfg.documents * getattr(cfg.proportions, c)) < 1, c
    assert len(pool) == cfg.documents
    assert len({r["id"] for r in pool}) == len(pool)
    first_half = Counter(r["category"] for r in pool[: len(pool) // 2])  # shuffled: every category in each half
    assert set(first_half) == set(CATEGORIES)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {c: n["documents"] for c, n in manifest["counts"].items()} == dict(counts)
    assert categories(str(out / "pool.jsonl.gz")) == {r["id"]: r["category"] for r in pool}
    as_corpus = [(d.doc_id, d.text) for d in read_documents(str(out / "pool.jsonl.gz"))]  # corpus.source reads it
    assert as_corpus == [(r["id"], r["text"]) for r in pool]
    assert manifest["config"]["seed"] == cfg.seed and manifest["seed"] == cfg.seed
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_category_counts_sum_exactly():
    odd = Proportions(clean=0.333, near_duplicate=0.333, boilerplate=0.334, word_salad=0, garbage=0, off_domain=0)
    for n in (1, 7, 100, 999):
        counts = category_counts(n, odd)
        assert sum(counts.values()) == n
        assert all(abs(counts[c] - n * getattr(odd, c)) < 1 for c in CATEGORIES)


def test_no_two_documents_share_a_text(built):
    _, out, pool = built
    held = [d.text for d in read_documents(str(out / "heldout_clean.jsonl"))]
    texts = [r["text"] for r in pool] + held
    assert len(set(texts)) == len(texts)


def test_near_duplicates_differ_from_their_original_and_each_other_but_stay_close(built):
    _, _, pool = built
    clean = {r["id"]: r["text"] for r in pool if r["category"] == "clean"}
    dups = [r for r in pool if r["category"] == "near_duplicate"]
    assert dups
    for r in dups:
        original = clean[f"clean-{r['id'].split('-')[1]}"]  # dup-<original>-<copy>: the original is in the pool
        assert r["text"] != original
        assert _jaccard(r["text"], original) > 0.7, (r["text"], original)
    assert len({r["text"] for r in dups}) == len(dups)


def test_near_duplicates_record_their_source_which_the_corpus_reader_ignores(built):
    _, out, pool = built
    clean = {r["id"] for r in pool if r["category"] == "clean"}
    for r in pool:
        if r["category"] == "near_duplicate":
            assert r["source"] == f"clean-{r['id'].split('-')[1]}" and r["source"] in clean
            assert list(r) == ["id", "text", "category", "source"]
        else:
            assert list(r) == ["id", "text", "category"]  # the other lines are as they were
    docs = list(read_documents(str(out / "pool.jsonl.gz")))
    assert {f.name for f in dataclasses.fields(docs[0])} == {"doc_id", "text"}  # selection sees id and text only
    assert [(d.doc_id, d.text) for d in docs] == [(r["id"], r["text"]) for r in pool]


def test_near_duplicate_edits_every_copy_and_keeps_lines():
    rng = np.random.default_rng(0)
    text = "Alpha beta gamma 1984 delta.\nEpsilon zeta eta theta iota kappa lambda mu nu xi omicron pi."
    cfg = NearDuplicateConfig(edit_rate=0.05, affix_probability=0.0)
    copies = [near_duplicate(text, cfg, ["inserted"], rng) for _ in range(200)]
    assert all(c.count("\n") == 1 for c in copies)
    assert sum(c != text for c in copies) >= 190  # an edit can undo itself (a typo swapping two equal letters)
    assert all(len(c.split()) in (16, 17, 18) for c in copies)  # 17 words, one edit each (round(0.05 x 17) = 1)


def test_multiplicities_are_zipf_like():
    cfg = NearDuplicateConfig(zipf_exponent=2.0, max_copies=100)
    m = multiplicities(5000, cfg, np.random.default_rng(0))
    assert sum(m) == 5000 and min(m) >= 1 and max(m) <= 100
    assert max(m) >= 50  # the most copied passage has many copies
    assert np.median(m) <= 2 and np.mean(np.array(m) == 1) > 0.5  # most have one or two


def test_pool_multiplicities_follow_the_config(built):
    cfg, out, pool = built
    per_original = Counter(r["id"].split("-")[1] for r in pool if r["category"] == "near_duplicate")
    manifest = json.loads((out / "manifest.json").read_text())
    assert max(per_original.values()) == manifest["near_duplicate_max_copies"] <= cfg.near_duplicate.max_copies
    assert len(per_original) == manifest["near_duplicate_originals"]


def test_word_salad_draws_from_the_clean_vocabulary(built):
    _, _, pool = built
    vocab = {w for r in pool if r["category"] == "clean" for w in r["text"].split()}
    salad = [r["text"].split() for r in pool if r["category"] == "word_salad"]
    assert salad and all(set(words) <= vocab for words in salad)
    assert len({w for words in salad for w in words}) > 20  # drawn from the distribution, not a few words


def test_heldout_passages_come_from_articles_outside_the_pool(built):
    cfg, out, pool = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert not set(manifest["articles"]["pool"]) & set(manifest["articles"]["heldout"])
    held = list(read_documents(str(out / "heldout_clean.jsonl")))  # the format evaluate.external reads
    assert len(held) == cfg.heldout_passages

    def articles(texts):
        return {m for t in texts for m in re.findall(r"\bart\d+\b", t)}

    pool_articles = articles(r["text"] for r in pool if r["category"] == "clean")
    held_articles = articles(d.text for d in held)
    assert held_articles and not pool_articles & held_articles
    assert held_articles == {f"art{a}" for a in manifest["articles"]["heldout"]}


def test_passages_are_sized_and_cut_at_sentences_preferring_paragraph_ends():
    paras = [
        "One two three four five. Six seven eight nine ten.",
        "Eleven twelve thirteen. Fourteen fifteen sixteen seventeen eighteen nineteen twenty a b c.",
        "A b c d e f g h i j k l m n o p q r s t u v w x y z aa bb cc.",
    ]
    out = passages(paras, max_words=12, min_words=3)
    assert out[:3] == [
        "One two three four five. Six seven eight nine ten.",  # a paragraph end, once long enough
        "Eleven twelve thirteen.",  # the next sentence would overflow 12 words
        "Fourteen fifteen sixteen seventeen eighteen nineteen twenty a b c.",
    ]
    assert [len(p.split()) for p in out[3:]] == [12, 12, 5]  # a sentence over 12 words is cut in pieces
    flat = " ".join(" ".join(paras).split())
    assert all(" ".join(p.split()) in flat for p in out)
    merged = passages(["Short one here.", "Another short line."], max_words=12, min_words=5)
    assert merged == ["Short one here.\nAnother short line."]  # too short to end there: joined, on two lines
    assert passages(["Too short.", "Also short."], max_words=12, min_words=5) == []


def test_off_domain_and_garbage_are_what_they_claim(built):
    _, _, pool = built
    assert all("Patients with" in r["text"] for r in pool if r["category"] == "off_domain")
    clean_vocab = {w for r in pool if r["category"] == "clean" for w in r["text"].split()}
    for r in (r for r in pool if r["category"] == "garbage"):
        assert len(set(r["text"].split()) & clean_vocab) <= 2, r["text"]


def _yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "webpool.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_bad_configs_name_the_key(sources, tmp_path):
    base = {"clean_source": sources[0], "off_domain_sources": [sources[1]]}
    assert load_config(_yaml(tmp_path, base)).documents == 8000
    cases = {
        "documentz": {"documentz": 10},
        "proportions.clen": {"proportions": {"clen": 0.4}},
        "near_duplicate.max_copy": {"near_duplicate": {"max_copy": 3}},
        "proportions must sum to 1": {"proportions": {"clean": 0.5}},
        "proportions.garbage": {"proportions": {"garbage": -0.1, "clean": 0.6}},
        "heldout_passages": {"heldout_passages": -1},
        "proportions.clean must be > 0": {"proportions": {"clean": 0.0, "garbage": 0.5}},
        "near_duplicate.edit_rate": {"near_duplicate": {"edit_rate": 0.0}},
        "passage_words": {"passage_words": "ninety"},
        "clean_source: no such file": {"clean_source": str(tmp_path / "missing.jsonl.gz")},
        "off_domain_sources[0]": {"off_domain_sources": [str(tmp_path / "nope.txt")]},
    }
    for expected, change in cases.items():
        with pytest.raises(ValueError, match=re.escape(expected)):
            load_config(_yaml(tmp_path, base | change))


def test_too_small_sources_are_an_error(sources, tmp_path):
    with pytest.raises(ValueError, match="clean_source"):
        write_pool(_config(sources, documents=5000), str(tmp_path / "big"))


def test_the_default_config_on_the_real_data(tmp_path, monkeypatch):
    shared_file("pretrain/enwiki2015_13k.jsonl.gz")
    shared_file("bio/PubMedAbstract_1MB.txt")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the config's paths are relative to the project root
    cfg = dataclasses.replace(load_config(root / "configs" / "webpool.yaml"), documents=600, heldout_passages=40)
    manifest = write_pool(cfg, str(tmp_path / "real"))
    pool = _read_pool(tmp_path / "real")
    assert len(pool) == 600 and manifest["heldout"]["documents"] == 40
    assert all(cfg.min_passage_words <= len(r["text"].split()) for r in pool if r["category"] == "clean")
    assert len({r["text"] for r in pool}) == len(pool)
