"""The run directory: one folder per stage, Parquet shards, a manifest, a completion marker.

A stage is done when its `_SUCCESS` marker exists, its manifest carries the same config hash as the
current run, every upstream output it was made from is still what it was (the manifest records
their digests), and its own outputs are still as it left them (size and a checksum of each file,
recorded at the finish). The marker is written last, after the outputs and the manifest are
flushed to disk, so a crashed stage is never mistaken for a finished one. Files are written to a
temporary name and renamed into place, so a reader never sees half a shard and a resumed stage can
trust every shard it finds; a torn or empty manifest is unfinished work.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MARKER = "_SUCCESS"
MANIFEST = "manifest.json"
SAMPLE_BYTES = 1 << 20  # checksummed at each end of a file; smaller files are checksummed whole


def config_hash(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fingerprint(path: Path, *, sync: bool = False) -> dict:
    """Size and sha256 of a file: all of it up to 2 MiB, else its first and last MiB. Cheap on large
    shards, and a truncated or rewritten Parquet file changes its size or its footer at the end.
    `sync` also flushes the file to disk (what a marker vouches for must survive a power loss)."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.sha256(f.read(2 * SAMPLE_BYTES) if size <= 2 * SAMPLE_BYTES else b"")
        if size > 2 * SAMPLE_BYTES:
            digest.update(f.read(SAMPLE_BYTES))
            f.seek(size - SAMPLE_BYTES)
            digest.update(f.read(SAMPLE_BYTES))
        if sync:
            os.fsync(f.fileno())
    return {"size": size, "sha256": digest.hexdigest()}


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self._digests: dict[str, str | None] = {}  # verified output digests, per stage, this invocation

    def stage(self, name: str) -> Path:
        return self.root / name

    def read_manifest(self, name: str) -> dict | None:
        """The stage's manifest; None if it has none, or a torn or empty one (unfinished work)."""
        path = self.stage(name) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return None
        return manifest if isinstance(manifest, dict) else None

    def why_not_done(self, name: str, digest: str) -> str | None:
        """None if the stage is finished under `digest` with its inputs and outputs intact, else why not."""
        folder, manifest = self.stage(name), self.read_manifest(name)
        if not (folder / MARKER).exists():
            return "not finished"
        if manifest is None:
            return f"{folder / MANIFEST} is missing, empty or torn"
        if manifest.get("config_hash") != digest:
            return "its settings changed"
        for need, recorded in (manifest.get("inputs") or {}).items():
            if self.output_digest(need) != recorded:
                return f"its input {need!r} changed since it ran"
        return self._changed_output(name, manifest) if self.output_digest(name) is None else None

    def is_done(self, name: str, digest: str) -> bool:
        return self.why_not_done(name, digest) is None

    def _changed_output(self, name: str, manifest: dict) -> str | None:
        if "outputs" not in manifest:
            return f"{self.stage(name) / MANIFEST} records no outputs"
        for rel, recorded in manifest["outputs"].items():
            path = self.stage(name) / rel
            if not path.is_file():
                return f"{path} is missing"
            if fingerprint(path) != recorded:
                return f"{path} changed since the stage finished (size {path.stat().st_size}, recorded {recorded['size']})"
        return None

    def output_digest(self, name: str) -> str | None:
        """A digest of a finished stage's outputs (None if unfinished or an output changed): what a
        downstream stage records as its input, so it reruns when this stage's outputs change."""
        if name not in self._digests:
            manifest = self.read_manifest(name)
            ok = (manifest is not None and (self.stage(name) / MARKER).exists()
                  and self._changed_output(name, manifest) is None)
            self._digests[name] = config_hash(manifest["outputs"]) if ok else None
        return self._digests[name]

    def resumable(self, name: str, digest: str, inputs: dict[str, str | None]) -> bool:
        """An unfinished stage's partial work (finished shards) made with this config and these inputs."""
        manifest = self.read_manifest(name)
        return (manifest is not None and not (self.stage(name) / MARKER).exists()
                and manifest.get("config_hash") == digest and (manifest.get("inputs") or {}) == inputs)

    def begin(self, name: str, digest: str, config: dict, inputs: dict[str, str | None] | None = None,
              *, keep: bool | None = None) -> Path:
        """Open a stage for (re)running. Partial work is kept if `keep` (default: if it was made with
        the same config and inputs). A folder the pipeline did not write (no manifest) is never
        deleted: that is an error."""
        folder, inputs = self.stage(name), inputs or {}
        if keep is None:
            keep = self.resumable(name, digest, inputs)
        if folder.exists() and not keep:
            if not (folder / MANIFEST).exists() and any(folder.iterdir()):
                raise ValueError(f"{folder} was not written by a pipeline run (it has no {MANIFEST}); "
                                 f"move it out of the run directory: the stage {name!r} writes there")
            shutil.rmtree(folder)  # stale, torn or forced: its files belong to another config or attempt
        folder.mkdir(parents=True, exist_ok=True)
        self._digests.pop(name, None)
        self.write_json(folder / MANIFEST, {"stage": name, "config_hash": digest, "config": config, "inputs": inputs,
                                            "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return folder

    def finish(self, name: str, summary: dict) -> None:
        """Record every output's size and checksum (flushing each to disk), then the marker."""
        folder = self.stage(name)
        manifest = self.read_manifest(name) or {}
        outputs = {p.relative_to(folder).as_posix(): fingerprint(p, sync=True) for p in sorted(folder.rglob("*"))
                   if p.is_file() and p.name not in (MANIFEST, MARKER) and not p.name.startswith(".")}
        manifest.update(summary, outputs=outputs, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.write_json(folder / MANIFEST, manifest)
        with (folder / MARKER).open("w") as f:
            os.fsync(f.fileno())
        fsync_dir(folder)
        self._digests.pop(name, None)

    @staticmethod
    def write_json(path: Path, payload: dict) -> None:
        """Atomic and durable: write beside, flush to disk, rename into place."""
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(payload, indent=2, sort_keys=True, default=str))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Atomic: write beside, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_shard_log(output: str | Path, record: dict) -> None:
    """One log per shard: _logs/<shard>.json beside the shard's output, with where and how it ran (the
    leading underscore keeps Parquet dataset readers of the folder from taking it for data)."""
    output = Path(output)
    record = {"shard": output.name, "host": socket.gethostname(), "pid": os.getpid(),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    (output.parent / "_logs").mkdir(parents=True, exist_ok=True)
    RunDir.write_json(output.parent / "_logs" / f"{output.stem}.json", record)


def shard_files(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("part-*.parquet"))


def read_table(path: str | Path, columns: list[str] | None = None, filters: list | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except Exception as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None


def read_sequence_file(path: str | Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """One shard of sequences: (sequence_id int64, token arrays)."""
    t = read_table(path, ["sequence_id", "input_ids"])
    col = t.column("input_ids").combine_chunks()
    offsets, values = col.offsets.to_numpy(), col.values.to_numpy()
    return t.column("sequence_id").to_numpy(), [values[offsets[i] : offsets[i + 1]] for i in range(len(col))]


def read_sequences(folder: str | Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """All sequences of a folder of shards, in shard order."""
    ids, seqs = [np.empty(0, np.int64)], []
    for file in shard_files(folder):
        file_ids, file_seqs = read_sequence_file(file)
        ids.append(file_ids)
        seqs.extend(file_seqs)
    return np.concatenate(ids), seqs


def embedding_table(sequence_ids: np.ndarray, embeddings: np.ndarray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).ravel())
    return pa.table({
        "sequence_id": pa.array(sequence_ids, pa.int64()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1]),
    })


def read_embeddings(
    files: list[Path], keep: np.ndarray | None = None, filters: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(sequence_ids, embeddings float32) from embedding shards, optionally only the ids in `keep`
    (or the rows a Parquet `filters` expression selects: row groups it excludes are not read)."""
    ids, embs, dim = [], [], None
    for file in files:
        t = read_table(file, ["sequence_id", "embedding"], filters)
        col = t.column("embedding").combine_chunks()
        d = col.type.list_size
        if dim is not None and d != dim:
            raise ValueError(f"{file}: embedding dimension {d} differs from {dim} in earlier shards")
        dim = d
        sid = t.column("sequence_id").to_numpy()
        emb = col.values.to_numpy().reshape(-1, d)
        if keep is not None:
            sel = np.isin(sid, keep)
            sid, emb = sid[sel], emb[sel]
        ids.append(sid)
        embs.append(emb)
    if not ids:
        raise ValueError("no embedding shards found")
    return np.concatenate(ids), np.concatenate(embs)
