"""The lexical space (hashed n-gram TF-IDF, random sign projection) against a pure-Python reference."""

import math
import re
from collections import Counter

import numpy as np
import pytest
from sklearn.utils import murmurhash3_32

from selection.lexical import LexicalParams, document_frequencies, embed_texts, lexical_embeddings

PASSAGES = [
    "The Danube is the second-longest river in Europe. It rises in the Black Forest of Germany and flows "
    "southeast for some 2,850 kilometres, passing through ten countries and four capital cities before it "
    "empties into the Black Sea through a wide delta in Romania and Ukraine. Its basin drains a fifth of the "
    "continent, and since Roman times it has carried trade, armies and ideas between east and west.",
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light energy into "
    "chemical energy. In the chloroplasts, chlorophyll absorbs mostly red and blue light; water is split, "
    "oxygen is released as a by-product, and carbon dioxide from the air is fixed into sugars that feed "
    "almost every food chain on Earth.",
    "Johannes Gutenberg introduced printing with movable metal type to Europe around 1440. His press "
    "combined a hand mould for casting uniform letters, an oil-based ink and a screw press adapted from "
    "wine making. Within fifty years printers were at work in more than two hundred towns, and books "
    "became cheap enough for merchants and students to own.",
    "A football match is played by two teams of eleven players on a rectangular grass pitch with a goal "
    "at each end. Only the goalkeepers may handle the ball, and only inside their own penalty area. A "
    "game lasts ninety minutes in two halves, and the side that scores more goals wins; a draw is common.",
    "To make a simple bread, mix flour, water, salt and a little yeast into a soft dough and knead it "
    "for ten minutes until it is smooth. Let it rise in a warm place for an hour, shape it into a loaf, "
    "let it rise again and bake it in a hot oven until the crust is brown and the base sounds hollow.",
    "Jupiter is the largest planet of the Solar System, more than twice as massive as all the other "
    "planets together. It is a gas giant made mostly of hydrogen and helium, its bands of cloud are "
    "stretched by fast winds, and the Great Red Spot is a storm larger than the Earth that has raged "
    "for at least three centuries.",
]


def edited(text: str, rate: float, seed: int) -> str:
    """`text` with round(rate x words) words edited: a typo, a deletion, a swap or an inserted word."""
    rng = np.random.default_rng(seed)
    words = text.split()
    for i in sorted(rng.choice(len(words) - 1, size=max(1, round(rate * len(words))), replace=False))[::-1]:
        kind = int(rng.integers(4))
        if kind == 0 and len(words[i]) > 3:
            words[i] = words[i][:2] + words[i][3] + words[i][2] + words[i][4:]
        elif kind == 1:
            del words[i]
        elif kind == 2:
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words.insert(i + 1, "really")
    return " ".join(words)


# ---- the reference: dict-based n-gram counts, murmurhash3_32 indices, explicit idf and projection ----


def ref_ngrams(text: str, p: LexicalParams) -> list[tuple[int, str]]:
    """(block, n-gram) pairs: block 0 word n-grams, block 1 character n-grams padded by one space per word."""
    tokens = re.findall(r"(?u)\b\w\w+\b", text.lower())
    lo, hi = p.word_ngrams
    out = [(0, " ".join(tokens[i : i + n])) for n in range(lo, hi + 1) for i in range(len(tokens) - n + 1)]
    lo, hi = p.char_ngrams
    for word in text.lower().split():
        w = f" {word} "
        for n in range(lo, hi + 1):
            out += [(1, w[i : i + n]) for i in range(max(1, len(w) - n + 1))]  # a word shorter than n: once
            if n >= len(w):
                break
    return out


def ref_index(gram: str, n_features: int) -> int:
    h = murmurhash3_32(gram, seed=0)  # signed 32-bit, the UTF-8 bytes
    return (2**31 - 1 - (n_features - 1)) % n_features if h == -(2**31) else abs(h) % n_features


def ref_counts(text: str, p: LexicalParams) -> Counter:
    return Counter(block * p.n_features + ref_index(g, p.n_features) for block, g in ref_ngrams(text, p))


def ref_splitmix64(z: int) -> int:
    m = (1 << 64) - 1
    z = (z + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def ref_sign(feature: int, d: int, p: LexicalParams) -> int:
    words = -(-p.dim // 64)
    h = ref_splitmix64((feature * words + d // 64) ^ ref_splitmix64(p.seed))
    return -1 if (h >> (d % 64)) & 1 else 1


def ref_embed(texts: list[str], pool: list[str], p: LexicalParams) -> np.ndarray:
    df = Counter(f for t in pool for f in set(ref_counts(t, p)))
    out = []
    for text in texts:
        idf = {f: math.log((1 + len(pool)) / (1 + df[f])) + 1 for f in df}
        w = {f: (1 + math.log(c)) * idf[f] for f, c in ref_counts(text, p).items()}
        for block in (0, 1):
            norm = math.sqrt(sum(v * v for f, v in w.items() if f // p.n_features == block))
            w.update({f: v * math.sqrt(0.5) / norm for f, v in w.items() if f // p.n_features == block})
        y = [sum(v * ref_sign(f, d, p) for f, v in w.items()) / math.sqrt(p.dim) for d in range(p.dim)]
        norm = math.sqrt(sum(v * v for v in y))
        out.append([v / norm for v in y])
    return np.array(out)


@pytest.mark.parametrize("params", [LexicalParams(dim=64, n_features=1 << 12), LexicalParams(dim=100, seed=7)])
def test_embeddings_equal_the_reference(params):
    texts = PASSAGES[:3] + ["Naïve café — déjà vu at 3 a.m.!", "x", edited(PASSAGES[0], 0.05, 1)]
    ours = lexical_embeddings(texts, params)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), params.dim)
    np.testing.assert_allclose(ours, ref_embed(texts, texts, params), atol=1e-5)
    np.testing.assert_array_equal(
        document_frequencies(texts, params)[sorted(ref_counts(texts[0], params))],
        [sum(f in ref_counts(t, params) for t in texts) for f in sorted(ref_counts(texts[0], params))],
    )


def test_shards_give_the_same_bytes_as_one_pass():
    params = LexicalParams()
    texts = PASSAGES + [edited(p, 0.05, s) for s, p in enumerate(PASSAGES)] + ["", "Share this: Read more"]
    whole = lexical_embeddings(texts, params)
    for cuts in ([1, 4, 9], [7], [2, 3, 4, 5, 13]):
        shards = np.split(np.array(texts, dtype=object), cuts)
        df = sum(document_frequencies(list(s), params) for s in shards)  # the map-reduce
        parts = [embed_texts(list(s), df, len(texts), params) for s in shards]
        assert np.concatenate(parts).tobytes() == whole.tobytes()
    assert not whole[-2].any()  # no n-gram: the zero vector


def test_near_duplicates_are_close_and_unrelated_passages_far():
    copies = [edited(p, 0.05, seed) for seed, p in enumerate(PASSAGES)]
    x = lexical_embeddings(PASSAGES + copies, LexicalParams())
    sims = x @ x.T
    n = len(PASSAGES)
    pairs = np.diag(sims[:n, n:])
    assert pairs.min() > 0.8, pairs
    unrelated = sims[:n, :n][~np.eye(n, dtype=bool)]
    assert unrelated.max() < 0.3, unrelated.max()
    chrome = "Share this: " + PASSAGES[0] + " Read more"
    prefixed = lexical_embeddings([PASSAGES[0], chrome] + PASSAGES[1:], LexicalParams())
    assert prefixed[0] @ prefixed[1] > 0.8  # page chrome around a copy


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="lexical space: dim must be >= 1"):
        LexicalParams(dim=0)
    with pytest.raises(ValueError, match="lexical space: char_ngrams"):
        LexicalParams(char_ngrams=(5, 3))
    p = LexicalParams(n_features=1 << 10)
    with pytest.raises(ValueError, match=r"lexical space: df must have shape \(2048,\)"):
        embed_texts(["a text"], np.zeros(1024, np.int64), 1, p)
    with pytest.raises(ValueError, match="n_documents .* must be >= 1 and >= every document frequency"):
        embed_texts(["a text"], np.full(2048, 3, np.int64), 2, p)
    with pytest.raises(ValueError, match="texts must be a list of strings"):
        document_frequencies("a text", p)
