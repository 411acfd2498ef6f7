"""The run directory: one folder per stage, Parquet shards, a manifest, a completion marker.

The run directory is a URI (a local path, `s3://`, `gs://`): every process opens it through
dataio/uri.py, so no stage needs a disk the nodes share. A stage is done when its `_SUCCESS`
marker exists, its manifest carries the same config hash as the current run, every upstream output
it was made from is still what it was (the manifest records their digests), and its own outputs are
still as it left them (size and a checksum of each file, recorded at the finish). The marker is
written last, after the outputs and the manifest, so a crashed stage is never mistaken for a
finished one. Every file is written atomically, so a reader never sees half a shard and a resumed
stage can trust every shard it finds; a torn or empty manifest is unfinished work.

A stage folder that starts afresh is emptied marker first, then its manifest is replaced by a
placeholder (a manifest with no config: never resumable, never done), then its data goes, and the new
manifest replaces the placeholder last: interrupted anywhere, the folder still has a manifest, so a
later run reclaims it. With the run's lease (dataio/lease.py) the run directory checks it before each
manifest and marker it writes: a run that lost its lease stops there.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from dataio import uri as U
from dataio.contracts import MANIFEST, MARKER
from dataio.lease import Lease
from dataio.uri import read_parquet as read_table
from dataio.uri import shard_files, write_parquet

__all__ = [
    "MANIFEST",
    "MARKER",
    "RunDir",
    "config_hash",
    "embedding_table",
    "read_embeddings",
    "read_ids",
    "read_sequence_file",
    "read_sequences",
    "read_table",
    "shard_files",
    "write_parquet",
    "write_shard_log",
]


def config_hash(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class RunDir:
    """The run directory `root`; with `lease` (held by this run) every manifest and marker write is fenced."""

    def __init__(self, root: str | Path, lease: Lease | None = None):
        self.root = U.normalize(root)
        self.lease = lease
        self._digests: dict[str, str | None] = {}  # verified output digests, per stage, this invocation

    def fence(self) -> None:
        """Stop (ValueError naming the run directory) if this run holds a lease and has lost it."""
        if self.lease is not None:
            self.lease.check()

    def stage(self, name: str) -> str:
        return U.join(self.root, name)

    def path(self, *parts: str) -> str:
        return U.join(self.root, *parts)

    def read_manifest(self, name: str) -> dict | None:
        """The stage's manifest; None if it has none, or a torn or empty one (unfinished work)."""
        return U.read_json(U.join(self.stage(name), MANIFEST))

    def has_marker(self, name: str) -> bool:
        return U.is_file(U.join(self.stage(name), MARKER))

    def why_not_done(self, name: str, digest: str) -> str | None:
        """None if the stage is finished under `digest` with its inputs and outputs intact, else why not."""
        folder, manifest = self.stage(name), self.read_manifest(name)
        if not self.has_marker(name):
            return "not finished"
        if manifest is None:
            return f"{U.join(folder, MANIFEST)} is missing, empty or torn"
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
            return f"{U.join(self.stage(name), MANIFEST)} records no outputs"
        for rel, recorded in manifest["outputs"].items():
            path = U.join(self.stage(name), rel)
            if not U.is_file(path):
                return f"{path} is missing"
            now = U.fingerprint(path)
            if now != recorded:
                return f"{path} changed since the stage finished (size {now['size']}, recorded {recorded['size']})"
        return None

    def output_digest(self, name: str) -> str | None:
        """A digest of a finished stage's outputs (None if unfinished or an output changed): what a
        downstream stage records as its input, so it reruns when this stage's outputs change."""
        if name not in self._digests:
            manifest = self.read_manifest(name)
            ok = manifest is not None and self.has_marker(name) and self._changed_output(name, manifest) is None
            self._digests[name] = config_hash(manifest["outputs"]) if ok else None
        return self._digests[name]

    def resumable(self, name: str, digest: str, inputs: dict[str, str | None]) -> bool:
        """An unfinished stage's partial work (finished shards) made with this config and these inputs."""
        manifest = self.read_manifest(name)
        return (
            manifest is not None
            and not self.has_marker(name)
            and manifest.get("config_hash") == digest
            and (manifest.get("inputs") or {}) == inputs
        )

    def begin(
        self,
        name: str,
        digest: str,
        config: dict,
        inputs: dict[str, str | None] | None = None,
        *,
        keep: bool | None = None,
    ) -> str:
        """Open a stage for (re)running. Partial work is kept if `keep` (default: if it was made with
        the same config and inputs). A folder the pipeline did not write (no manifest) is never
        deleted: that is an error."""
        folder, inputs = self.stage(name), inputs or {}
        if keep is None:
            keep = self.resumable(name, digest, inputs)
        self.fence()
        if not keep:
            if U.list_files(folder, recursive=True) and not U.exists(U.join(folder, MANIFEST)):
                raise ValueError(
                    f"{folder} was not written by a pipeline run (it has no {MANIFEST}); "
                    f"move it out of the run directory: the stage {name!r} writes there"
                )
            clear_stage(folder, name)  # stale, torn or forced: its files belong to another config or attempt
        elif U.exists(U.join(folder, MARKER)):
            U.delete(U.join(folder, MARKER))
        U.make_dirs(folder)
        self._digests.pop(name, None)
        self.fence()
        U.write_json(
            U.join(folder, MANIFEST),
            {
                "stage": name,
                "config_hash": digest,
                "config": config,
                "inputs": inputs,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        return folder

    def finish(self, name: str, summary: dict) -> None:
        """Record every output's size and checksum, then the marker, last."""
        folder = self.stage(name)
        manifest = self.read_manifest(name) or {}
        outputs = {
            U.relative(f, folder): U.fingerprint(f)
            for f in U.list_files(folder, recursive=True)
            if U.name(f) not in (MANIFEST, MARKER)
        }
        manifest.update(summary, outputs=outputs, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.fence()
        U.write_json(U.join(folder, MANIFEST), manifest)
        self.fence()
        U.write_bytes(U.join(folder, MARKER), b"")
        self._digests.pop(name, None)

    @staticmethod
    def write_json(path: str | Path, payload: dict) -> None:
        U.write_json(str(path), payload)


def clear_stage(folder: str, name: str) -> None:
    """Empty a stage folder so that an interruption anywhere leaves it reclaimable: the marker first
    (never seen as done), the manifest replaced by a placeholder with no config (never resumed, still
    the pipeline's), then every other file, the placeholder last of all (begin writes the new manifest
    over it)."""
    manifest = U.join(folder, MANIFEST)
    if U.is_local(folder) and Path(folder).is_symlink():  # a stage another pipeline shares: never its files
        Path(folder).unlink()
        return
    if not U.exists(folder):
        return
    U.delete(U.join(folder, MARKER))
    if U.exists(manifest):
        U.write_json(manifest, {"stage": name, "clearing": time.strftime("%Y-%m-%dT%H:%M:%S")})
    fs, path = U.resolve(folder)
    entries = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = [e.path for e in entries if e.type == pafs.FileType.File and e.path != f"{path}/{MANIFEST}"]
    for file in sorted(files):
        fs.delete_file(file)
    for sub in sorted((e.path for e in entries if e.type == pafs.FileType.Directory), key=len, reverse=True):
        fs.delete_dir(sub)


def write_shard_log(output: str, record: dict) -> None:
    """One log per shard: _logs/<shard>.json beside the shard's output, with where and how it ran (the
    leading underscore keeps Parquet dataset readers of the folder from taking it for data)."""
    record = {
        "shard": U.name(output),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **record,
    }
    stem = U.name(output).rsplit(".", 1)[0]
    U.write_json(U.join(U.parent(output), "_logs", f"{stem}.json"), record)


def read_ids(path: str | Path) -> np.ndarray:
    """The sequence_id column (int64) of one Parquet file: a shard of sequences or embeddings, a subset."""
    return read_table(path, ["sequence_id"]).column("sequence_id").to_numpy()


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
    return pa.table(
        {
            "sequence_id": pa.array(sequence_ids, pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1]),
        }
    )


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
