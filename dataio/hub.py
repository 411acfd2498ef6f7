"""Hugging Face hub corpora: `hf:NAME[?config=C&split=S&revision=R&column=COL]`.

NAME is `dataset` or `owner/dataset`; every key is optional: `config` (the dataset's configuration,
C4's `en`), `split` (default `train`; a slice such as `train[:10%]` too), `revision` (a branch, tag
or commit; default the hub's `main`) and `column` (the text column; default corpus.text_field).

A hub dataset is fingerprinted by (name, config, revision, split) for prepare's hash, with the
revision resolved to the commit it points to: a dataset updated on the hub under the same branch is
prepared again. A revision given as a full commit hash is used as it is (no network needed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

HUB_PREFIX = "hf:"
HUB_KEYS = ("config", "split", "revision", "column")
NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, kw_only=True)
class HubSource:
    name: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    column: str | None = None


def is_hub(source: str) -> bool:
    return source.startswith(HUB_PREFIX)


def parse_hub(source: str) -> HubSource:
    """The parts of an `hf:` source; a ValueError naming the source and what is wrong with it."""
    body = source.removeprefix(HUB_PREFIX)
    name, _, query = body.partition("?")
    if not NAME.fullmatch(name):
        raise ValueError(f"corpus {source!r}: {name!r} is not a hub dataset name (expected NAME or OWNER/NAME)")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as e:
        raise ValueError(f"corpus {source!r}: cannot read its options {query!r} (expected key=value&...)") from e
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in HUB_KEYS:
            raise ValueError(f"corpus {source!r}: unknown option {key!r} (options are {', '.join(HUB_KEYS)})")
        if key in options:
            raise ValueError(f"corpus {source!r}: option {key!r} is given twice")
        if not value.strip():
            raise ValueError(f"corpus {source!r}: option {key!r} is empty")
        options[key] = value
    return HubSource(name=name, **options)


def resolve_revision(spec: HubSource) -> str:
    """The commit `spec.revision` (default `main`) points to now; a full commit hash as it is."""
    if spec.revision and COMMIT.fullmatch(spec.revision):
        return spec.revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(spec.name, revision=spec.revision).sha
    except Exception as e:  # offline, no such dataset or revision, no permission: the hub's errors vary
        raise ValueError(
            f"corpus hf:{spec.name}: cannot find which commit revision {spec.revision or 'main'!r} is on the hub "
            f"({type(e).__name__}: {e}); give revision=<40-hex commit> to pin it"
        ) from e


def hub_fingerprint(source: str) -> dict[str, str | None]:
    """What prepare's hash covers of a hub dataset: name, config, revision (a commit) and split."""
    spec = parse_hub(source)
    return {"hub": spec.name, "config": spec.config, "revision": resolve_revision(spec), "split": spec.split}
