"""Run directories on object storage (s3://, gs://, file:// ...) through pyarrow's filesystems.

The stages work in a local folder, a cache of the run directory; the URI holds the copy of record.
At start the run directory is fetched into the cache (finished stages, and a stage's partial shards
from an interrupted run); after each stage its files are pushed, the completion marker last, so a
stage is done remotely only once everything it wrote is there. Object stores write each object
whole, so every shard found remotely is complete, and a rerun after an interrupted push (on this
machine or another) resumes from the shards that made it.

The cache must be visible to every Ray worker that writes into it: one node, or a shared file
system. Tasks on other nodes writing straight to the URI is not built yet.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs

MARKER = "_SUCCESS"


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


class Mirror:
    """A local cache of a run directory at `uri`, pulled once and pushed stage by stage."""

    def __init__(self, uri: str, cache: Path | None = None):
        self.uri = uri.rstrip("/")
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
            raise ValueError(f"run directory {uri!r}: cannot open its filesystem ({e})") from None
        default = Path(os.environ.get("INGENIOUS_CACHE_DIR", Path.home() / ".cache" / "ingenious"))
        self.cache = cache or default / hashlib.sha256(self.uri.encode()).hexdigest()[:16]

    def _remote_files(self, prefix: str) -> list[pafs.FileInfo]:
        info = self.fs.get_file_info(prefix)
        if info.type == pafs.FileType.NotFound:
            return []
        return [f for f in self.fs.get_file_info(pafs.FileSelector(prefix, recursive=True)) if f.type == pafs.FileType.File]

    def pull(self) -> Path:
        """Replace the cache with the remote run directory; returns the cache folder."""
        shutil.rmtree(self.cache, ignore_errors=True)
        self.cache.mkdir(parents=True)
        for f in self._remote_files(self.root):
            target = self.cache / os.path.relpath(f.path, self.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(f.path, str(target), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return self.cache

    def push(self, relative: str, *, complete: bool = True) -> None:
        """Make the remote cache/<relative> (a file or a stage folder) equal to the local one: the old
        marker goes first, stale files after the upload, and the new marker (if `complete`) last."""
        local = self.cache / relative
        prefix = f"{self.root}/{relative}"
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file() and p.name != MARKER)
        remote_marker = f"{prefix}/{MARKER}"
        if local.is_dir() and self.fs.get_file_info(remote_marker).type == pafs.FileType.File:
            self.fs.delete_file(remote_marker)
        wanted = set()
        for path in files:
            remote = f"{self.root}/{path.relative_to(self.cache).as_posix()}"
            wanted.add(remote)
            self.fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(str(path), remote, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        if local.is_dir():
            for f in self._remote_files(prefix):
                if f.path not in wanted and f.path != remote_marker:
                    self.fs.delete_file(f.path)
            if complete and (local / MARKER).exists():
                pafs.copy_files(str(local / MARKER), remote_marker, source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self.fs)
