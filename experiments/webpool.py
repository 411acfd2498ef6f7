"""A web-like pretraining pool, built deterministically from local text.

On clean, non-redundant Wikipedia every selection strategy ties with random: the published gains of
data selection come from redundant, noisy web crawls. This builds such a pool from the local data, as
passages of about one training sequence each (so every sequence has one category), in six categories:

- clean: Wikipedia passages, cut at sentence boundaries and preferably at paragraph ends;
- near_duplicate: edited copies of some clean passages. As in a crawl, the original is in the clean
  part once and its copies are here, their number per original drawn from a truncated power law
  (a few passages copied very often, most once or twice). Every copy has word swaps, deletions,
  insertions, typos or changed numbers (and maybe a prefix or suffix such as "Share this:"), so exact
  hashing misses it, and no two copies are equal;
- boilerplate: cookie banners, navigation menus, footers, newsletter prompts and product listings from
  a few templates with slot fills: highly redundant, never identical;
- word_salad: words drawn i.i.d. from the clean passages' unigram distribution;
- garbage: number tables, random token strings, base64-like noise, repeated characters;
- off_domain: passages of biomedical abstracts (one abstract a line).

Output folder: `pool.jsonl.gz` (`{"id", "text", "category"}` a line, shuffled; a near-duplicate also has
`source`, the id of the clean passage it copies), `heldout_clean.jsonl`
(`{"id", "text"}`: clean passages of articles the pool does not use, for `evaluate.external`) and
`manifest.json`. Same config and seed, same bytes. The category and source stay in the pool file for
the analysis (`categories`, experiments/categories.py); the pipeline's corpus reader reads only `id` and `text`.

    python -m experiments.webpool --config configs/webpool.yaml --out runs/webpool
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataio import uri as U
from dataio.configfile import build_section, read_yaml, section_dict
from dataio.corpus import read_documents

CATEGORIES = ("clean", "near_duplicate", "boilerplate", "word_salad", "garbage", "off_domain")
POOL_FILE = "pool.jsonl.gz"  # {"id", "text", "category"[, "source"]} a line: the corpus
HELDOUT_FILE = "heldout_clean.jsonl"  # {"id", "text"} a line: evaluate.external's set "heldout_clean"
MANIFEST_FILE = "manifest.json"  # the config, counts and digests, written last
ID_PREFIX = {"clean": "clean", "boilerplate": "boiler", "word_salad": "salad", "garbage": "garbage"}
ID_PREFIX |= {"off_domain": "offdomain", "near_duplicate": "dup"}


@dataclass(kw_only=True)
class Proportions:
    """Each category's share of the pool's documents (they sum to 1)."""

    clean: float = 0.40
    near_duplicate: float = 0.25
    boilerplate: float = 0.10
    word_salad: float = 0.10
    garbage: float = 0.10
    off_domain: float = 0.05

    def __post_init__(self) -> None:
        for name in CATEGORIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"proportions.{name} must be in [0, 1], got {value}")
        total = sum(getattr(self, name) for name in CATEGORIES)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"proportions must sum to 1, got {total:.6g}")
        if self.clean == 0 and (self.near_duplicate > 0 or self.word_salad > 0):
            raise ValueError("proportions.clean must be > 0: near_duplicate and word_salad are made of clean passages")


@dataclass(kw_only=True)
class NearDuplicateConfig:
    # P(m copies) ~ m^-zipf_exponent on 1..max_copies: near-duplicate cluster sizes in web crawls
    # follow a power law. At 2.0 about 60% of the copied passages have one copy, a few have max_copies.
    zipf_exponent: float = 2.0
    max_copies: int = 100
    edit_rate: float = 0.05  # the share of a copy's words edited (at least one edit a copy)
    affix_probability: float = 0.5  # a copy gets a prefix or suffix ("Share this:", "Read more") this often

    def __post_init__(self) -> None:
        if not self.zipf_exponent > 0:
            raise ValueError(f"near_duplicate.zipf_exponent must be > 0, got {self.zipf_exponent}")
        if self.max_copies < 2:
            raise ValueError(f"near_duplicate.max_copies must be >= 2, got {self.max_copies}")
        if not 0.0 < self.edit_rate <= 0.5:
            raise ValueError(f"near_duplicate.edit_rate must be in (0, 0.5], got {self.edit_rate}")
        if not 0.0 <= self.affix_probability <= 1.0:
            raise ValueError(f"near_duplicate.affix_probability must be in [0, 1], got {self.affix_probability}")


@dataclass(kw_only=True)
class WebPoolConfig:
    seed: int = 0
    documents: int = 8000  # the pool's size: the experiment trains on 2 CPU cores
    # Words of a passage at most: sized so that, with a WordPiece or BPE vocabulary of 8k trained on this
    # pool, a passage is about one 128-token sequence and so a sequence has one category. A passage that
    # overflows its sequence becomes a sequence of its own.
    passage_words: int = 75
    min_passage_words: int = 35  # shorter passages (an article's last lines) are dropped
    # A few passages per article keep the clean part topically diverse (the first articles are long).
    max_passages_per_article: int = 8
    heldout_passages: int = 400  # clean passages of articles not in the pool, for evaluation
    clean_source: str = "../shared/data/pretrain/enwiki2015_13k.jsonl.gz"  # JSONL {"id", "text"}
    off_domain_sources: list[str] = field(
        default_factory=lambda: ["../shared/data/bio/PubMedAbstract_1MB.txt"]  # text files, a document a line
    )
    proportions: Proportions = field(default_factory=Proportions)
    near_duplicate: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)

    def __post_init__(self) -> None:
        for key in ("documents", "passage_words", "min_passage_words", "max_passages_per_article"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.seed < 0 or self.heldout_passages < 0:
            raise ValueError(f"seed and heldout_passages must be >= 0, got {self.seed} and {self.heldout_passages}")
        if self.min_passage_words > self.passage_words:
            raise ValueError(
                f"min_passage_words must be <= passage_words, got {self.min_passage_words} > {self.passage_words}"
            )
        sources = [("clean_source", self.clean_source)]
        sources += [(f"off_domain_sources[{i}]", p) for i, p in enumerate(self.off_domain_sources)]
        for key, path in sources:
            if not Path(path).expanduser().is_file():
                raise ValueError(f"{key}: no such file {path!r} (paths are taken from the current folder)")
        if self.proportions.off_domain > 0 and not self.off_domain_sources:
            raise ValueError("off_domain_sources is empty but proportions.off_domain > 0")


def load_config(path: str | Path) -> WebPoolConfig:
    if not Path(path).is_file():
        raise ValueError(f"config file {path} does not exist")
    return build_section(WebPoolConfig, read_yaml(path) or {}, "", str(path))


def category_counts(documents: int, proportions: Proportions) -> dict[str, int]:
    """Documents per category, rounded by largest remainder so that they sum to `documents`."""
    exact = [documents * getattr(proportions, c) for c in CATEGORIES]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))[: documents - sum(counts)]:
        counts[i] += 1
    return dict(zip(CATEGORIES, counts))


# ---- passages ----

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
# WikiExtractor leaves template and markup debris in a few lines; section headings are short lines.
MARKUP = ("{{", "}}", "#if:", "</", "<br", "formula_", "codice_")
MIN_PARAGRAPH_WORDS = 8


def paragraphs(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.split("\n")
        if len(line.split()) >= MIN_PARAGRAPH_WORDS and not any(m in line for m in MARKUP)
    ]


def sentences(paragraph: str, max_words: int) -> Iterator[list[str]]:
    """A paragraph's sentences as word lists; a sentence longer than `max_words` is cut into pieces."""
    for sentence in SENTENCE_END.split(paragraph):
        words = sentence.split()
        for start in range(0, len(words), max_words):
            yield words[start : start + max_words]


def passages(paras: list[str], max_words: int, min_words: int) -> list[str]:
    """Consecutive sentences packed into passages of at most `max_words` words, cut at a paragraph end
    once a passage has `min_words` (else at the sentence that would overflow it); paragraphs inside a
    passage stay on their own lines. Passages under `min_words` are dropped."""
    out: list[str] = []
    lines: list[list[str]] = []  # the passage being built: a word list per paragraph
    size = 0

    def flush() -> None:
        nonlocal lines, size
        if size >= min_words:
            out.append("\n".join(" ".join(line) for line in lines if line))
        lines, size = [], 0

    for para in paras:
        lines.append([])
        for words in sentences(para, max_words):
            if size and size + len(words) > max_words:
                flush()
                lines.append([])
            lines[-1] += words
            size += len(words)
        if size >= min_words:
            flush()
    flush()
    return out


def split_articles(
    cfg: WebPoolConfig, pool_target: int, heldout_target: int
) -> tuple[list[str], list[str], list[str], list[str]]:
    """(pool passages, held-out passages, pool article ids, held-out article ids). Articles are read in
    file order (streamed: only as many as needed) and each goes wholly to the side further from its
    target, so both sides draw from the same stretch of the file and share no article."""
    sides: dict[str, tuple[list[str], list[str], int]] = {
        "pool": ([], [], pool_target),
        "heldout": ([], [], heldout_target),
    }
    seen: set[str] = set()
    for doc in read_documents(cfg.clean_source):
        room = {k: t - len(p) for k, (p, _, t) in sides.items() if len(p) < t}
        if not room:
            break
        side = min(room, key=lambda k: (len(sides[k][0]) / sides[k][2], k))
        texts = [t for t in passages(paragraphs(doc.text), cfg.passage_words, cfg.min_passage_words) if t not in seen]
        texts = texts[: min(cfg.max_passages_per_article, room[side])]
        if texts:
            seen.update(texts)
            sides[side][0].extend(texts)
            sides[side][1].append(doc.doc_id)
    for key, (found, _, target) in sides.items():
        if len(found) < target:
            raise ValueError(f"clean_source {cfg.clean_source!r}: {len(found)} {key} passages, {target} needed")
    return sides["pool"][0], sides["heldout"][0], sides["pool"][1], sides["heldout"][1]


# ---- near duplicates ----

PREFIXES = ("Share this:", "Advertisement", "Home > Articles >", "Posted by admin", "From Wikipedia:", "Updated:")
SUFFIXES = ("Read more", "Share this:", "Continue reading →", "Click here to subscribe.", "(via Wikipedia)")
SUFFIXES += ("Tags: history, culture", "Like this: Like Loading...")


def multiplicities(total: int, cfg: NearDuplicateConfig, rng: np.random.Generator) -> list[int]:
    """Copies per copied passage, drawn from P(m) ~ m^-zipf_exponent on 1..max_copies until they add
    up to `total` (the last one trimmed)."""
    sizes = np.arange(1, cfg.max_copies + 1)
    weights = sizes ** -float(cfg.zipf_exponent)
    out: list[int] = []
    while sum(out) < total:
        out.append(int(rng.choice(sizes, p=weights / weights.sum())))
    if out:
        out[-1] -= sum(out) - total
    return out


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 2:
        return word + word
    i = int(rng.integers(len(word) - 1))
    kind = int(rng.integers(4))
    if kind == 0:  # two neighbouring letters swapped
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # a letter dropped
        return word[:i] + word[i + 1 :]
    if kind == 2:  # a letter doubled
        return word[: i + 1] + word[i] + word[i + 1 :]
    return word[:i] + str(rng.choice(list(string.ascii_lowercase))) + word[i + 1 :]  # a letter replaced


def _renumber(word: str, rng: np.random.Generator) -> str:
    return re.sub(r"\d", lambda m: str((int(m[0]) + int(rng.integers(1, 10))) % 10), word)


def near_duplicate(text: str, cfg: NearDuplicateConfig, vocab: list[str], rng: np.random.Generator) -> str:
    """`text` with round(edit_rate x words) (at least one) of its words edited: swapped with the next,
    deleted, followed by an inserted word of the clean vocabulary, misspelt, or (words with digits) renumbered; then
    maybe a prefix or suffix. Line breaks are kept."""
    tokens = re.findall(r"\S+|\n", text)
    words = [i for i, t in enumerate(tokens) if t != "\n"]
    chosen = sorted(rng.choice(words, size=max(1, round(cfg.edit_rate * len(words))), replace=False).tolist())
    for i in reversed(chosen):  # from the end, so indices of earlier words stay valid
        word = tokens[i]
        kind = "number" if any(c.isdigit() for c in word) and rng.random() < 0.7 else None
        kind = kind or str(rng.choice(["swap", "delete", "insert", "typo"]))
        if kind == "number":
            tokens[i] = _renumber(word, rng)
        elif kind == "swap" and i + 1 < len(tokens) and tokens[i + 1] != "\n":
            tokens[i], tokens[i + 1] = tokens[i + 1], word
        elif kind == "delete" and len(words) > 1:
            tokens[i] = ""
        elif kind == "insert":
            tokens.insert(i + 1, vocab[int(rng.integers(len(vocab)))])
        else:
            tokens[i] = _typo(word, rng)
    body = " ".join(t for t in tokens if t).replace(" \n ", "\n").strip()
    if rng.random() < cfg.affix_probability:
        if rng.random() < 0.5:
            body = f"{rng.choice(PREFIXES)} {body}"
        else:
            body = f"{body} {rng.choice(SUFFIXES)}"
    return body


# ---- boilerplate ----

SITES = ("DailyNews", "TechHub", "ShopSmart", "TravelWise", "HealthFirst", "CityGuide", "FoodieLife", "MyBlog")
MENU = ("Home", "About", "About Us", "News", "Blog", "Shop", "Products", "Services", "Contact", "Contact Us", "FAQ")
MENU += ("Careers", "Press", "Login", "Sign up", "Register", "Cart", "Search", "Help", "Support", "Sitemap", "Deals")
PRODUCTS = ("Wireless Headphones", "Stainless Steel Water Bottle", "Running Shoes", "USB-C Charger", "Yoga Mat")
PRODUCTS += ("Coffee Maker", "LED Desk Lamp", "Backpack", "Bluetooth Speaker", "Phone Case", "Smart Watch", "Tent")
COLORS = ("Black", "White", "Blue", "Red", "Grey", "Green")


def _cookie(rng: np.random.Generator) -> str:
    site, days = rng.choice(SITES), int(rng.integers(7, 400))
    return (
        f"We use cookies to improve your experience on {site}. By continuing to browse the site you agree "
        f"to our use of cookies. Cookies are stored for {days} days. Read our Privacy Policy and Cookie Policy "
        f"to learn more. {rng.choice(['Accept all', 'Accept', 'OK'])} | {rng.choice(['Manage settings', 'Reject'])}"
    )


def _nav(rng: np.random.Generator) -> str:
    items = rng.choice(MENU, size=int(rng.integers(8, 16)), replace=False)
    return f"{rng.choice(SITES)} | " + " | ".join(items) + f" | Follow us on Facebook Twitter Instagram | {_year(rng)}"


def _footer(rng: np.random.Generator) -> str:
    site = rng.choice(SITES)
    return (
        f"Copyright © {_year(rng)} {site} Inc. All rights reserved. Terms of Use | Privacy Policy | "
        f"Cookie Settings | Accessibility | Contact Us | Sitemap. {site} is a registered trademark. "
        f"Call us at 1-800-{int(rng.integers(100, 1000))}-{int(rng.integers(1000, 10000))}, Monday to Friday."
    )


def _subscribe(rng: np.random.Generator) -> str:
    site, off = rng.choice(SITES), int(rng.integers(1, 10)) * 5
    return (
        f"Click here to subscribe to the {site} newsletter! Get {off}% off your first order and be the first "
        f"to hear about new arrivals, exclusive offers and more. Enter your email address. Subscribe now. "
        f"No spam, unsubscribe at any time. Already a member? Log in. {_year(rng)} {site}."
    )


def _products(rng: np.random.Generator) -> str:
    rows = []
    for name in rng.choice(PRODUCTS, size=int(rng.integers(3, 6)), replace=False):
        price = f"${int(rng.integers(5, 300))}.{int(rng.integers(0, 100)):02d}"
        stars, reviews = f"{rng.integers(30, 51) / 10:.1f}", int(rng.integers(1, 5000))
        rows.append(f"{name} ({rng.choice(COLORS)}) {price} ★ {stars} ({reviews} reviews) Add to cart")
    return "Customers also bought: " + " ".join(rows) + " Free shipping on orders over $50."


def _year(rng: np.random.Generator) -> int:
    return int(rng.integers(2005, 2025))


BOILERPLATE: tuple[Callable[[np.random.Generator], str], ...] = (_cookie, _nav, _footer, _subscribe, _products)


def boilerplate(rng: np.random.Generator, max_words: int) -> str:
    """One template block, or two (as a page's chrome comes: a menu above a cookie banner) where they fit
    in `max_words` together."""
    first, second = rng.choice(len(BOILERPLATE), size=2, replace=False)
    blocks = [BOILERPLATE[first](rng)]
    if rng.random() < 0.5:
        blocks.append(BOILERPLATE[second](rng))
    return "\n".join(blocks) if len(" ".join(blocks).split()) <= max_words else blocks[0]


# ---- word salad and garbage ----

B64 = string.ascii_letters + string.digits + "+/"


def garbage(rng: np.random.Generator, words: int) -> str:
    """Noise of about `words` tokens (sized so that it fills about one sequence, as a passage of `words`
    words does: a table cell or a run of punctuation is several tokens)."""
    kind = int(rng.integers(4))
    if kind == 0:  # a number table
        cols = int(rng.integers(3, 8))
        cells = [f"{rng.random() * 10 ** rng.integers(1, 5):.2f}" for _ in range(max(cols, words // 4))]
        return "\n".join(" | ".join(cells[i : i + cols]) for i in range(0, len(cells), cols))
    if kind == 1:  # random tokens
        alphabet = list(string.ascii_lowercase + string.digits)
        count = max(3, words // 3)  # a random string is about three tokens
        return " ".join("".join(rng.choice(alphabet, size=int(rng.integers(2, 10)))) for _ in range(count))
    if kind == 2:  # base64-like noise, wrapped at 76 characters as in MIME
        blob = "".join(rng.choice(list(B64), size=words * 2)) + "=="
        return "\n".join(blob[i : i + 76] for i in range(0, len(blob), 76))
    runs = [str(rng.choice(list("=-*#!._~ab0"))) * int(rng.integers(3, 20)) for _ in range(max(3, words // 12))]
    return " ".join(runs)  # repeated characters, as in ASCII rules and spam


def word_salad(rng: np.random.Generator, vocab: list[str], probs: np.ndarray, words: int) -> str:
    return " ".join(vocab[i] for i in rng.choice(len(vocab), size=words, p=probs))


# ---- the pool ----


def _unique(make: Callable[[], str], seen: set[str], what: str) -> str:
    for _ in range(1000):
        text = make()
        if text not in seen:
            seen.add(text)
            return text
    raise ValueError(f"{what}: no new distinct text in 1000 tries (the pool is too large for its sources)")


def build(cfg: WebPoolConfig) -> tuple[list[dict], list[dict], dict]:
    """(pool records in their shuffled order, held-out records, manifest facts)."""
    counts = category_counts(cfg.documents, cfg.proportions)
    rng = {c: np.random.default_rng([cfg.seed, i]) for i, c in enumerate(CATEGORIES)}
    shuffle_rng = np.random.default_rng([cfg.seed, len(CATEGORIES)])

    clean, heldout, pool_articles, heldout_articles = split_articles(cfg, counts["clean"], cfg.heldout_passages)
    seen = set(clean) | set(heldout)
    records = {"clean": [(f"clean-{i:06d}", t) for i, t in enumerate(clean)]}

    unigram = Counter(w for t in clean for w in t.split())
    vocab = sorted(unigram)
    probs = np.array([unigram[w] for w in vocab], dtype=np.float64)
    probs /= probs.sum()

    dups, sources, copies = [], {}, multiplicities(counts["near_duplicate"], cfg.near_duplicate, rng["near_duplicate"])
    if len(copies) > len(clean):
        raise ValueError(f"near_duplicate: {len(copies)} passages to copy but only {len(clean)} clean ones")
    originals = rng["near_duplicate"].choice(len(clean), size=len(copies), replace=False)
    width = max(2, len(str(cfg.near_duplicate.max_copies - 1)))
    for orig, m in zip(originals.tolist(), copies):
        for k in range(m):
            text = _unique(
                lambda: near_duplicate(clean[orig], cfg.near_duplicate, vocab, rng["near_duplicate"]),  # noqa: B023
                seen,
                "near_duplicate",
            )
            dups.append((f"dup-{orig:06d}-{k:0{width}d}", text))
            sources[dups[-1][0]] = records["clean"][orig][0]  # for the analysis only: selection never reads it
    records["near_duplicate"] = dups

    def length(r: np.random.Generator) -> int:
        return int(r.integers(cfg.min_passage_words, cfg.passage_words + 1))

    makers: dict[str, Callable[[], str]] = {
        "boilerplate": lambda: boilerplate(rng["boilerplate"], cfg.passage_words),
        "word_salad": lambda: word_salad(rng["word_salad"], vocab, probs, length(rng["word_salad"])),
        "garbage": lambda: garbage(rng["garbage"], length(rng["garbage"])),
    }
    for c, make in makers.items():
        records[c] = [(f"{ID_PREFIX[c]}-{i:06d}", _unique(make, seen, c)) for i in range(counts[c])]

    records["off_domain"] = off_domain(cfg, counts["off_domain"], rng["off_domain"], seen)

    pool = [{"id": i, "text": t, "category": c} | _source(sources, i) for c in CATEGORIES for i, t in records[c]]
    pool = [pool[i] for i in shuffle_rng.permutation(len(pool))]
    held = [{"id": f"heldout-{i:06d}", "text": t} for i, t in enumerate(heldout)]
    facts = {
        "counts": {c: _count([t for _, t in records[c]]) for c in CATEGORIES},
        "heldout": _count(heldout),
        "near_duplicate_originals": len(copies),
        "near_duplicate_max_copies": max(copies, default=0),
        "articles": {"pool": pool_articles, "heldout": heldout_articles},
    }
    return pool, held, facts


def _source(sources: dict[str, str], doc_id: str) -> dict[str, str]:
    """A near-duplicate's `source` field (the id of the clean passage it copies); nothing for the others."""
    return {"source": sources[doc_id]} if doc_id in sources else {}


def _count(texts: list[str]) -> dict[str, int]:
    return {"documents": len(texts), "words": sum(len(t.split()) for t in texts)}


def off_domain(cfg: WebPoolConfig, n: int, rng: np.random.Generator, seen: set[str]) -> list[tuple[str, str]]:
    """`n` passages drawn without replacement from the passages of the off-domain documents."""
    if n == 0:
        return []
    found: list[str] = []
    for path in cfg.off_domain_sources:
        for doc in read_documents(path, line_documents=True):
            found += [p for p in passages([doc.text], cfg.passage_words, cfg.min_passage_words) if p not in seen]
    found = list(dict.fromkeys(found))
    if len(found) < n:
        raise ValueError(f"off_domain_sources: {len(found)} passages, {n} needed")
    picked = [found[i] for i in sorted(rng.choice(len(found), size=n, replace=False).tolist())]
    seen.update(picked)
    return [(f"offdomain-{i:06d}", t) for i, t in enumerate(picked)]


def _jsonl(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def write_pool(cfg: WebPoolConfig, out: str) -> dict:
    """Build the pool and write its three files into `out` (each atomically); returns the manifest."""
    pool, held, facts = build(cfg)
    files = {
        POOL_FILE: gzip.compress(_jsonl(pool), compresslevel=6, mtime=0),  # mtime 0: same bytes each run
        HELDOUT_FILE: _jsonl(held),
    }
    for name, data in files.items():
        U.write_bytes(U.join(out, name), data)
    manifest = {
        "config": section_dict(cfg),
        "seed": cfg.seed,
        **facts,
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        # evaluate.external reads heldout_clean.jsonl as the set "heldout_clean"
        "heldout_format": "JSONL {id, text}: evaluate.external accepts it as is",
    }
    U.write_json(U.join(out, MANIFEST_FILE), manifest)
    return manifest


def categories(pool_path: str) -> dict[str, str]:
    """Document id -> category of a pool file, for the analysis (the selection never reads it)."""
    fs, path = U.resolve(pool_path)
    with fs.open_input_stream(path, compression="gzip" if pool_path.endswith(".gz") else None) as f:
        # split on "\n" only: str.splitlines would also cut at a U+2028 that JSON leaves unescaped in a text
        rows = [json.loads(line) for line in f.read().decode("utf-8").split("\n") if line]
    return {r["id"]: r["category"] for r in rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file of WebPoolConfig keys")
    parser.add_argument("--out", required=True, help="output folder (local path or URI)")
    args = parser.parse_args(argv)
    manifest = write_pool(load_config(args.config), args.out)
    for c, n in manifest["counts"].items():
        print(f"{c:>15}: {n['documents']:6d} documents, {n['words']:8d} words")
    held = manifest["heldout"]
    print(f"{'heldout':>15}: {held['documents']:6d} documents, {held['words']:8d} words (heldout_clean.jsonl)")


if __name__ == "__main__":
    main()
