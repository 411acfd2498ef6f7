"""Files by URI: a local path, `file://`, `s3://` or `gs://`, through pyarrow's filesystems.

Every process of a run (driver, Ray tasks, actors, Ray Train workers) names files by these strings
and opens them here, so nothing depends on a disk the processes share. Writes are atomic: locally
a file is written beside and renamed into place (and flushed to disk); object stores make an object
visible only whole, when its upload completes. A reader therefore never sees half a file, and a
file that exists is a finished one.

Credentials and endpoints come from the environment of each process (AWS_*, GOOGLE_*: an instance
profile on a cluster, AWS_ENDPOINT_URL for an S3-compatible server), never from the URI string.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dataio.contracts import MARKER


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def normalize(location: str | Path) -> str:
    """A local path -> its absolute form; a URI -> itself without a trailing slash."""
    text = str(location)
    if is_uri(text):
        if text.startswith("file://"):
            return str(Path(text[len("file://") :]).expanduser().resolve())
        body, query = _split_query(text)
        scheme, rest = body.split("://", 1)
        if not rest.strip("/"):
            raise ValueError(f"{text!r} names no bucket (expected {scheme}://bucket/prefix)")
        return f"{scheme}://{rest.rstrip('/')}{query}"
    return str(Path(text).expanduser().resolve())


def _split_query(uri: str) -> tuple[str, str]:
    """('s3://bucket/key', '?region=x') from a URI with filesystem options; local paths have none."""
    if not is_uri(uri):
        return uri, ""
    body, sep, query = uri.partition("?")
    return body, sep + query


def join(base: str | Path, *parts: str) -> str:
    body, query = _split_query(str(base))
    return "/".join([body.rstrip("/"), *(str(p).strip("/") for p in parts if p)]) + query


def relative(uri: str, folder: str) -> str:
    """`uri`'s path below `folder` ('a/b.parquet')."""
    body, base = _split_query(str(uri))[0], _split_query(str(folder))[0].rstrip("/")
    if not body.startswith(base + "/"):
        raise ValueError(f"{uri} is not under {folder}")
    return body[len(base) + 1 :]


def name(uri: str) -> str:
    return _split_query(str(uri))[0].rstrip("/").rsplit("/", 1)[-1]


def parent(uri: str) -> str:
    body, query = _split_query(str(uri))
    return body.rstrip("/").rsplit("/", 1)[0] + query


def is_local(uri: str) -> bool:
    return not is_uri(uri) or uri.startswith("file://")


@lru_cache(maxsize=64)
def _filesystem(root: str, endpoint: str | None) -> pafs.FileSystem:
    # For S3 this may ask the server for the bucket's region; `endpoint` (AWS_ENDPOINT_URL, read by
    # pyarrow) keys the cache so a process that changes it does not reuse the old connection.
    return pafs.FileSystem.from_uri(root)[0]


def resolve(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it). Filesystems are cached per process and bucket."""
    uri = str(uri)
    if not is_uri(uri) or uri.startswith("file://"):
        return pafs.LocalFileSystem(), normalize(uri)
    body, query = _split_query(uri)
    scheme, rest = body.split("://", 1)
    authority, _, key = rest.partition("/")  # authority: [user:secret@]bucket
    try:
        fs, bucket = (
            _filesystem(f"{scheme}://{authority}{query}", os.environ.get("AWS_ENDPOINT_URL")),
            authority.rpartition("@")[2],
        )
    except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
        raise ValueError(f"{uri!r}: cannot open its filesystem ({e})") from e
    return fs, f"{bucket}/{key}".rstrip("/")


def info(uri: str) -> pafs.FileInfo:
    fs, path = resolve(uri)
    return fs.get_file_info(path)


def exists(uri: str) -> bool:
    return info(uri).type != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    return info(uri).type == pafs.FileType.File


def size(uri: str) -> int:
    return info(uri).size


def list_files(folder: str, pattern: str = "*", *, recursive: bool = False) -> list[str]:
    """Files under `folder` whose name matches `pattern`, as URIs in the folder's own spelling, sorted.
    Names starting with '.' (temporary files of a write in progress) are left out."""
    fs, path = resolve(folder)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    out = []
    for f in fs.get_file_info(pafs.FileSelector(path, recursive=recursive)):
        rel = f.path[len(path) :].lstrip("/")
        if (
            f.type == pafs.FileType.File
            and not any(p.startswith(".") for p in rel.split("/"))
            and fnmatch.fnmatch(f.base_name, pattern)
        ):
            out.append(join(folder, rel))
    return sorted(out)


def shard_files(folder: str) -> list[str]:
    return list_files(folder, "part-*.parquet")


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"{uri}: cannot be read ({e})") from e


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic (and durable, locally): a reader sees the old file or the whole new one."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        with _local_atomic(path) as tmp:
            tmp.write_bytes(data)
        return
    try:
        with fs.open_output_stream(path) as f:  # the object appears when the upload completes
            f.write(data)
    except OSError as e:  # a missing bucket, no permission
        raise ValueError(f"{uri}: cannot be written ({e})") from e


@contextmanager
def _local_atomic(path: str) -> Iterator[Path]:
    """A temporary name beside local `path` to write to; when the block ends without an error it is
    flushed to disk and renamed into place, so `path` holds the old file or the whole new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    yield tmp
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, payload: dict) -> None:
    write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str))


def read_json(uri: str) -> dict | None:
    """A JSON object, or None if the file is missing, empty, torn or not an object. A file that cannot
    be read (a storage error, no permission) is an error, never taken for a missing one: the caller
    would redo (and first delete) finished work."""
    try:
        data = read_bytes(uri)
    except FileNotFoundError:
        return None
    try:
        payload = json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return payload if isinstance(payload, dict) else None


def fsync_dir(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def delete(uri: str) -> None:
    fs, path = resolve(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def delete_tree(uri: str) -> None:
    """Remove a folder and everything under it (its marker first, so it is never seen as done)."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return
    if isinstance(fs, pafs.LocalFileSystem):
        shutil.rmtree(path)
        return
    files = [f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.type == pafs.FileType.File]
    for f in sorted(files, key=lambda p: not p.endswith(f"/{MARKER}")):
        fs.delete_file(f)
    fs.delete_dir_contents(path, missing_dir_ok=True)


def make_dirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def fingerprint(uri: str, sample_bytes: int = 1 << 20) -> dict:
    """Size and sha256 of a file: all of it up to 2 x sample_bytes, else its first and last
    sample_bytes. Cheap on large shards, and a truncated or rewritten Parquet file changes its size
    or its footer at the end."""
    fs, path = resolve(uri)
    with fs.open_input_file(path) as f:
        total = f.size()
        if total <= 2 * sample_bytes:
            digest = hashlib.sha256(f.read())
        else:
            digest = hashlib.sha256(b"")
            digest.update(f.read(sample_bytes))
            f.seek(total - sample_bytes)
            digest.update(f.read(sample_bytes))
    return {"size": total, "sha256": digest.hexdigest()}


def write_parquet(table: pa.Table, uri: str) -> None:
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        with _local_atomic(path) as tmp:
            pq.write_table(table, tmp)
        return
    try:
        pq.write_table(table, path, filesystem=fs)
    except OSError as e:
        raise ValueError(f"{uri}: cannot be written ({e})") from e


@contextmanager
def parquet_writer(uri: str, schema: pa.Schema, **options) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter whose file appears at `uri` whole, when the block ends without an error."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        with _local_atomic(path) as tmp, pq.ParquetWriter(tmp, schema, **options) as writer:
            yield writer
        return
    buffer = pa.BufferOutputStream()  # uploaded in one put: an exception leaves no object behind
    with pq.ParquetWriter(buffer, schema, **options) as writer:
        yield writer
    write_bytes(uri, buffer.getvalue().to_pybytes())


def read_parquet(uri: str, columns: list[str] | None = None, filters: list | None = None) -> pa.Table:
    fs, path = resolve(uri)
    try:
        return pq.read_table(path, columns=columns, filters=filters, filesystem=fs)
    except FileNotFoundError as e:
        raise ValueError(f"{uri}: no such file") from e
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise ValueError(f"{uri}: not a readable Parquet file ({e})") from e


def parquet_file(uri: str) -> pq.ParquetFile:
    fs, path = resolve(uri)
    try:
        return pq.ParquetFile(fs.open_input_file(path))
    except Exception as e:
        raise ValueError(f"{uri}: not a readable Parquet file ({e})") from e


def parquet_rows(uri: str) -> int:
    return parquet_file(uri).metadata.num_rows


FOLDER_COMPLETE = "_COMPLETE"  # written last into an uploaded folder: the folder is whole


def upload_dir(local: str | Path, uri: str) -> None:
    """Copy a local folder's files to `uri`, each atomically, and `_COMPLETE` last: a folder without it
    is an interrupted upload (see folder_complete). Locally the folder is copied beside and renamed
    into place, so it appears whole."""
    local = Path(local)
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(local, tmp)
        (tmp / FOLDER_COMPLETE).write_bytes(b"")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        return
    delete_tree(uri)
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        write_bytes(join(uri, file.relative_to(local).as_posix()), file.read_bytes())
    write_bytes(join(uri, FOLDER_COMPLETE), b"")


def folder_complete(uri: str) -> bool:
    return is_file(join(uri, FOLDER_COMPLETE))


def download_dir(uri: str, local: str | Path) -> Path:
    local = Path(local)
    files = list_files(uri, recursive=True)
    if not files:
        raise ValueError(f"{uri}: no such folder, or it is empty")
    for file in files:
        target = local / relative(file, uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(file))
    return local


_LOCAL_COPIES: dict[str, Path] = {}


def local_dir(uri: str) -> Path:
    """A local folder holding the files of `uri` (a tokenizer, a model): the folder itself when it is
    local, else a copy downloaded once per process into a temporary folder. For libraries that load
    only from local paths (transformers' from_pretrained)."""
    if is_local(uri):
        path = Path(normalize(uri))
        if not path.exists():
            raise ValueError(f"{uri} does not exist on this node ({os.uname().nodename})")
        return path
    fs, path = resolve(uri)
    listing = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    key = uri + json.dumps(sorted((f.path, f.size, str(f.mtime)) for f in listing))  # rewritten -> fetched again
    if key not in _LOCAL_COPIES:
        _LOCAL_COPIES[key] = download_dir(uri, tempfile.mkdtemp(prefix="ingenious-"))
    return _LOCAL_COPIES[key]
