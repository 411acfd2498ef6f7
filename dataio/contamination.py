"""A target sample must not hold the evaluation sets: selection toward it would then choose the
evaluation's own text and the gain would measure the leak.

Documents are compared by content hash (sha256 of the lowercased text with whitespace collapsed), so a
copy differing only in case or spacing is the same document. A target document that is no copy but
shares a long word span (`span_words` words, 13 as in GPT-3's decontamination) with an evaluation
document is dropped from the target and counted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

WORDS = re.compile(r"\w+")


def content_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def spans(text: str, span_words: int) -> set[int]:
    """Hashes of every run of `span_words` consecutive lowercased words."""
    words = WORDS.findall(text.lower())
    return {hash(" ".join(words[i : i + span_words])) for i in range(len(words) - span_words + 1)}


def decontaminate(
    target: list[str], eval_sets: dict[str, Iterable[str]], *, where: str, span_words: int = 13
) -> tuple[list[str], int]:
    """(the target without documents sharing a span with an evaluation set, how many were dropped).
    A target document equal to an evaluation document is an error naming both."""
    if span_words < 1:
        raise ValueError(f"select.target_span_words must be >= 1, got {span_words}")
    seen: dict[str, str] = {}
    eval_spans: set[int] = set()
    for name, texts in eval_sets.items():
        for i, text in enumerate(texts):
            seen.setdefault(content_hash(text), f"document {i} of evaluation set {name!r}")
            eval_spans |= spans(text, span_words)
    kept = []
    for i, text in enumerate(target):
        if content_hash(text) in seen:
            raise ValueError(
                f"{where}: document {i} of the target is {seen[content_hash(text)]}: selecting toward it would "
                "select the evaluation's own text; take it out of the target (or the evaluation set)"
            )
        if spans(text, span_words).isdisjoint(eval_spans):
            kept.append(text)
    return kept, len(target) - len(kept)
