"""The run directory: one folder per stage, Parquet shards, a manifest, a completion marker.

A stage is done when its `_SUCCESS` marker exists and its manifest carries the same config hash as
the current run; the marker is written last, so a crashed stage is never mistaken for a finished
one. Files are written to a temporary name and renamed into place, so a reader never sees half a
shard and a resumed stage can trust every shard it finds.
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


def config_hash(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def stage(self, name: str) -> Path:
        return self.root / name

    def is_done(self, name: str, digest: str) -> bool:
        manifest = self.read_manifest(name)
        return (self.stage(name) / MARKER).exists() and manifest is not None and manifest.get("config_hash") == digest

    def read_manifest(self, name: str) -> dict | None:
        path = self.stage(name) / MANIFEST
        return json.loads(path.read_text()) if path.exists() else None

    def begin(self, name: str, digest: str, config: dict) -> Path:
        """Open a stage for (re)running. Partial work is kept only if it was made with the same config."""
        folder = self.stage(name)
        old = self.read_manifest(name)
        if folder.exists() and (old is None or old.get("config_hash") != digest or (folder / MARKER).exists()):
            shutil.rmtree(folder)  # stale or forced: its shards belong to another config
        folder.mkdir(parents=True, exist_ok=True)
        self.write_json(folder / MANIFEST, {"stage": name, "config_hash": digest, "config": config,
                                            "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return folder

    def finish(self, name: str, summary: dict) -> None:
        folder = self.stage(name)
        manifest = self.read_manifest(name) or {}
        manifest.update(summary, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.write_json(folder / MANIFEST, manifest)
        (folder / MARKER).write_text("")

    @staticmethod
    def write_json(path: Path, payload: dict) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)


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


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
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


def read_embeddings(files: list[Path], keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sequence_ids, embeddings float32) from embedding shards, optionally only the ids in `keep`."""
    ids, embs, dim = [], [], None
    for file in files:
        t = read_table(file)
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
