"""Tokenizers: train WordPiece (BERT) or byte-level BPE (GPT-2) on the corpus, or load a local one.

`load_tokenizer` accepts a saved tokenizer folder, a bare WordPiece `vocab.txt`, a folder holding a
GPT-2 `vocab.json` + `merges.txt`, or a hub name (for users with network access).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer, Tokenizer
from tokenizers.implementations.base_tokenizer import BaseTokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from training.packing import pack_document

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GPT2_EOS = "<|endoftext|>"
WORDPIECE_ALPHABET = 1000  # the most frequent characters kept as the base alphabet (the trainer's default)


def train_tokenizer(
    texts: Iterable[str], *, kind: str, vocab_size: int, out_dir: str | Path
) -> PreTrainedTokenizerBase:
    """Train a tokenizer of the model's family on `texts` and save it (save_pretrained) to out_dir."""
    if kind == "bert":
        raw = _train_wordpiece(list(texts), vocab_size)
    elif kind == "gpt2":
        raw = ByteLevelBPETokenizer()
        raw.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=[GPT2_EOS], show_progress=False)
    else:
        raise ValueError(f"unknown model kind {kind!r} (expected 'bert' or 'gpt2')")
    _wrap(raw, kind).save_pretrained(str(out_dir))
    return load_tokenizer(str(out_dir), kind=kind)


def _train_wordpiece(texts: list[str], vocab_size: int) -> BertWordPieceTokenizer:
    """WordPiece training that gives the same vocabulary and ids in every process.

    The trainer numbers each '##' continuation character when it first meets it while walking a hash
    map of the corpus' words, so those ids, and with them the order of merges of equal count (ties
    go to the smaller ids), differed from process to process: different vocabularies, sequence ids
    and subsets for the same corpus. Here the continuation alphabet is registered up front, in
    code-point order, as special tokens (the trainer numbers those first, in the order given) and
    demoted to ordinary vocabulary afterwards; the kept alphabet is chosen here too, by count and
    then code point, because the trainer's own cut at `limit_alphabet` breaks ties in hash order."""
    raw = BertWordPieceTokenizer(lowercase=True)
    normalizer, pre_tokenizer = raw._tokenizer.normalizer, raw._tokenizer.pre_tokenizer
    counts: Counter[str] = Counter()
    continuing: set[str] = set()
    for text in texts:
        words = [w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
        counts.update("".join(words))
        continuing.update("".join(w[1:] for w in words))
    alphabet = sorted(sorted(counts), key=lambda c: -counts[c])[:WORDPIECE_ALPHABET]
    pinned = [f"##{c}" for c in sorted(continuing & set(alphabet))]
    raw.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        special_tokens=BERT_SPECIALS + pinned,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    state = json.loads(raw._tokenizer.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] in BERT_SPECIALS]
    raw._tokenizer = Tokenizer.from_str(json.dumps(state))
    return raw


def _wrap(raw: BaseTokenizer, kind: str) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around a `tokenizers` one, with the family's special tokens named."""
    if kind == "bert":
        return PreTrainedTokenizerFast(
            tokenizer_object=raw._tokenizer,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
    # GPT-2 has no pad token; padded positions are masked out, so the end-of-text token serves.
    return PreTrainedTokenizerFast(
        tokenizer_object=raw._tokenizer, bos_token=GPT2_EOS, eos_token=GPT2_EOS, unk_token=GPT2_EOS, pad_token=GPT2_EOS
    )


def load_tokenizer(name_or_path: str, *, kind: str) -> PreTrainedTokenizerBase:
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".txt":
        tok = _wrap(BertWordPieceTokenizer(str(path), lowercase=True), "bert")
    elif path.is_dir() and (path / "merges.txt").exists() and not (path / "tokenizer_config.json").exists():
        tok = _wrap(ByteLevelBPETokenizer(str(path / "vocab.json"), str(path / "merges.txt")), "gpt2")
    elif path.is_dir():
        tok = AutoTokenizer.from_pretrained(str(path))
    elif name_or_path.startswith((".", "/", "~")) or path.suffix:
        raise ValueError(f"tokenizer path {name_or_path!r} does not exist")
    else:  # a hub name: needs network access
        tok = AutoTokenizer.from_pretrained(name_or_path)
    if kind == "gpt2" and tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if kind == "bert" and (tok.cls_token_id is None or tok.sep_token_id is None or tok.mask_token_id is None):
        raise ValueError(f"tokenizer {name_or_path!r} lacks [CLS]/[SEP]/[MASK]: not a BERT tokenizer")
    return tok


def pack_tokens(
    tok: PreTrainedTokenizerBase, token_ids: list[int], *, kind: str, seq_len: int, min_tokens: int
) -> list:
    """pack_document with this tokenizer's [CLS]/[SEP]/<|endoftext|> ids."""
    return pack_document(
        token_ids,
        kind=kind,
        seq_len=seq_len,
        min_tokens=min_tokens,
        cls_id=tok.cls_token_id,
        sep_id=tok.sep_token_id,
        eos_id=tok.eos_token_id,
    )
