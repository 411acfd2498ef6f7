"""Run directories on object storage (s3://, gs://, file:// ...) through pyarrow's filesystems.

The stages work in a local folder, a cache of the run directory; the URI holds the copy of record.
At start the run directory is fetched into the cache (finished stages, and a stage's partial shards
from an interrupted run). When a stage starts afresh (its hash changed, or it was forced) its
remote folder is emptied and its new manifest uploaded, so every shard found remotely belongs to
the config that manifest names; after the stage its files are pushed, then its final manifest,
then the completion marker, so a stage is done remotely only once everything it wrote is there.
Object stores write each object whole, so every shard found remotely is complete, and a rerun
after an interrupted push (on this machine or another) resumes from the shards that made it.
The run's lease (dataio/lease.py) lives at the URI, and the cache is only touched under it.

The cache must be visible to every Ray worker that writes into it: one node, or a shared file
system. Tasks on other nodes writing straight to the URI is not built yet.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from dataio.lease import LEASE, Lease

MARKER = "_SUCCESS"
MANIFEST = "manifest.json"


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

    def lease(self) -> Lease:
        return Lease(self.fs, self.root, self.uri)

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
            if f.path == f"{self.root}/{LEASE}":
                continue
            target = self.cache / os.path.relpath(f.path, self.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(f.path, str(target), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return self.cache

    def open_stage(self, name: str, *, resumed: bool) -> None:
        """A stage starts: unless it resumes the partial work already there (same config and inputs),
        empty its remote folder (marker first); then upload its new manifest, so the shards pushed
        under it are known to be this config's."""
        prefix = f"{self.root}/{name}"
        if not resumed:
            files = sorted(self._remote_files(prefix), key=lambda f: not f.path.endswith(f"/{MARKER}"))
            for f in files:
                self.fs.delete_file(f.path)
        self._upload(self.cache / name / MANIFEST)

    def push(self, relative: str, *, complete: bool = True) -> None:
        """Make the remote cache/<relative> (a file or a stage folder) equal to the local one: the old
        marker goes first, then the files, stale files after the upload, the manifest next and the
        new marker (if `complete`) last."""
        local = self.cache / relative
        if local.is_file():
            self._upload(local)
            return
        prefix = f"{self.root}/{relative}"
        remote_marker = f"{prefix}/{MARKER}"
        if self.fs.get_file_info(remote_marker).type == pafs.FileType.File:
            self.fs.delete_file(remote_marker)
        manifest, marker = local / MANIFEST, local / MARKER
        files = [p for p in sorted(local.rglob("*")) if p.is_file() and p not in (manifest, marker)]
        wanted = {self._remote(p) for p in files} | {self._remote(manifest)}
        for path in files:
            self._upload(path)
        for f in self._remote_files(prefix):
            if f.path not in wanted and f.path != remote_marker:
                self.fs.delete_file(f.path)
        if manifest.exists():
            self._upload(manifest)
        if complete and marker.exists():
            self._upload(marker)

    def _remote(self, path: Path) -> str:
        return f"{self.root}/{path.relative_to(self.cache).as_posix()}"

    def _upload(self, path: Path) -> None:
        remote = self._remote(path)
        self.fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(path), remote, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
