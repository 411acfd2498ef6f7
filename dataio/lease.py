"""One run per run directory: a lease that names its holder.

Two pipelines on one run directory would mark stages done under each other's configs and, on object
storage, share a local cache and delete each other's shards. A run takes the lease `lease.json` at
the run directory's root before it reads anything, renews it while it runs and drops it at the end;
a second run stops at once with an error that names the holder. A lease whose holder died (same host,
process gone) or stopped renewing (its expiry passed: another host, or a hung process) is taken over.

Locally the lease file is created exclusively (a hard link of a written file: atomic, never torn).
Object stores offer no such create through
pyarrow, so there the lease is written and read back: of two runs starting within the same instant,
the one whose write lands last holds it, and the other stops on the read-back.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from dataio.log import get_logger

log = get_logger(__name__)

LEASE = "lease.json"
TTL_S = 300.0  # a lease not renewed for this long is taken over
RENEW_S = 60.0


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # not a process (and kill(-1, 0) would ask about every process)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_stale(holder: dict, now: float) -> bool:
    if float(holder.get("expires", 0)) < now:
        return True
    return holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid", -1)))


def describe(holder: dict, where: str) -> str:
    return (
        f"run directory {where} is in use by another run: host {holder.get('host')}, pid {holder.get('pid')}, "
        f"started {holder.get('started')} (lease {where}/{LEASE}, renewed until "
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(float(holder.get('expires', 0))))}); "
        f"wait for it to finish, or use another run directory"
    )


class Lease:
    """The lease on the run directory `root` of filesystem `fs` (local or any pyarrow filesystem)."""

    def __init__(self, fs: pafs.FileSystem, root: str, where: str, *, ttl_s: float = TTL_S, renew_s: float = RENEW_S):
        self.fs, self.path, self.where = fs, f"{root.rstrip('/')}/{LEASE}", where
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self.ttl_s, self.renew_s = ttl_s, renew_s
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_path(cls, path: str | Path, **kw) -> Lease:
        root = str(Path(path).expanduser().resolve())
        return cls(pafs.LocalFileSystem(), root, root, **kw)

    def read(self) -> dict | None:
        """The current holder's record; {} for a torn one (a writer that died mid-write), None if free."""
        try:
            with self.fs.open_input_stream(self.path) as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        except OSError as e:
            if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
                return None
            raise ValueError(f"cannot read the lease {self.where}/{LEASE}: {e}") from e
        try:
            holder = json.loads(text)
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def acquire(self) -> Lease:
        holder = self.read()
        if holder is not None and not is_stale(holder, time.time()):
            raise ValueError(describe(holder, self.where))
        if holder is not None:  # a dead or expired holder's: take it over
            log.info(f"taking over the stale lease of {holder.get('host')} pid {holder.get('pid')} on {self.where}")
            self.fs.delete_file(self.path)
        self._write(exclusive=True)
        if (self.read() or {}).get("token") != self.record["token"]:  # another run's write landed last
            raise ValueError(describe(self.read() or {}, self.where))
        self._thread = threading.Thread(target=self._renew, name="ingenious-lease", daemon=True)
        self._thread.start()
        return self

    def _write(self, *, exclusive: bool = False) -> None:
        blob = json.dumps({**self.record, "expires": time.time() + self.ttl_s}).encode()
        if not self.local:
            try:
                self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
                with self.fs.open_output_stream(self.path) as f:
                    f.write(blob)
            except OSError as e:  # a missing bucket, no permission
                raise ValueError(f"cannot write the lease {self.where}/{LEASE}: {e}") from e
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        Path(tmp).write_bytes(blob)
        try:
            if exclusive:  # link: atomic, fails if the lease exists, and never shows a half-written one
                try:
                    os.link(tmp, self.path)
                except FileExistsError as e:  # another run took it between our read and our write
                    raise ValueError(describe(self.read() or {}, self.where)) from e
            else:
                os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            if (self.read() or {}).get("token") != self.record["token"]:
                log.warning(f"the lease on {self.where} was taken over by another run")
                return
            self._write()

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if (self.read() or {}).get("token") == self.record["token"]:
            self.fs.delete_file(self.path)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
