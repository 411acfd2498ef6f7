"""One run per run directory: a lease that names its holder, taken by a conditional create.

Two runs on one run directory would mark stages done under each other's configs and delete each
other's shards. A run takes the lease `lease.json` at the run directory's root before it reads
anything, renews it while it runs and drops it at the end; a second run stops at once with an
error that names the holder.

Every write of the lease is conditional (dataio/leasestore.py): it is created only if absent (S3
`If-None-Match: *`, GCS `ifGenerationMatch=0`, a hard link locally), and replaced (renewed, or taken
over) or deleted only if it is still the version this run read (S3 `If-Match: <ETag>`, GCS
`ifGenerationMatch=<generation>`, a compare-and-swap under a flock locally). Of two runs racing for a
free or a stale lease exactly one write lands; the other stops with the lease message.

A lease is stale when its own expiry has passed (it was not renewed for `ttl_s`): whether its holder
is alive is judged by nothing else (a PID means nothing across hosts or PID namespaces). The holder
renews every `renew_s`, retrying a failed renewal with backoff; if the lease expires before a renewal
lands, or another run has taken it, the lease is lost. `check()` fences the run's writes: the run
directory calls it before each stage's manifest and marker, and a run that lost its lease stops there.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from dataio import uri as U
from dataio.leasestore import LEASE, Store, store_for
from dataio.log import get_logger
from dataio.redact import redact

log = get_logger(__name__)

TTL_S = 120.0  # a lease not renewed for this long is taken over
RENEW_S = 30.0
ATTEMPTS = 3  # tries at the create / takeover of a lease released in between


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def describe(holder: dict, where: str) -> str:
    """The lease message: the run directory is in use, by whom, until when."""
    return (
        f"run directory {where} is in use by another run: host {holder.get('host')}, pid {holder.get('pid')}, "
        f"started {holder.get('started')} (lease {where}/{LEASE}, renewed until "
        f"{_when(float(holder.get('expires', 0)))}); wait for it to finish (a run that died leaves its lease "
        f"until then), or use another run directory"
    )


def parse(blob: bytes) -> dict:
    """A lease's record; {} for a torn or foreign one (it has no expiry, so it counts as stale)."""
    try:
        holder = json.loads(blob.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


class Lease:
    """The lease on run directory `root` (a local path or a URI); `where` names it in messages
    (default: `root` without credentials)."""

    def __init__(
        self,
        root: str | Path,
        where: str | None = None,
        *,
        ttl_s: float = TTL_S,
        renew_s: float = RENEW_S,
        store: Store | None = None,
    ):
        self.root = U.normalize(root)
        self.where = where or redact(self.root)
        self.ttl_s, self.renew_s = ttl_s, renew_s
        self.store = store if store is not None else store_for(self.root)
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.version: str | None = None  # of the lease as this run last wrote it
        self.expires = 0.0
        self.lost: str | None = None  # why this run no longer holds the lease
        self._lock = threading.Lock()  # one write of the lease at a time (renewal thread, check, release)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        return self.record["token"]

    def holder(self) -> tuple[dict, str] | None:
        """(record, version) of the lease as stored now; None if free."""
        try:
            found = self.store.read()
        except OSError as e:
            raise ValueError(f"cannot read the lease {self.where}/{LEASE}: {e}") from e
        return None if found is None else (parse(found[0]), found[1])

    def acquire(self) -> Lease:
        """Take the lease (a free one, or a stale one over its version); a held one is a ValueError
        naming its holder, as is losing a race for it."""
        for _ in range(ATTEMPTS):
            if self._write(self._blob()):
                break
            found = self.holder()
            if found is None:  # released in between: try again
                continue
            holder, version = found
            if holder.get("token") == self.token:  # our own write landed, its answer was lost (a retried request)
                self.version, self.expires = version, float(holder["expires"])
                break
            if float(holder.get("expires", 0)) >= time.time():
                raise ValueError(describe(holder, self.where))
            log.info(f"taking over the expired lease of {holder.get('host')} pid {holder.get('pid')} on {self.where}")
            if self._write(self._blob(), over=version):
                break
            found = self.holder()  # another run took it over first
            if found is not None:
                raise ValueError(describe(found[0], self.where))
        else:
            raise ValueError(f"could not take the lease {self.where}/{LEASE}: it changed {ATTEMPTS} times meanwhile")
        self._thread = threading.Thread(target=self._renewing, name="ingenious-lease", daemon=True)
        self._thread.start()
        return self

    def _blob(self) -> bytes:
        return json.dumps({**self.record, "expires": time.time() + self.ttl_s}).encode()

    def _write(self, blob: bytes, *, over: str | None = None) -> bool:
        """Create the lease as `blob` (or replace version `over` of it); True, the new version noted,
        if the write landed."""
        try:
            version = self.store.create(blob) if over is None else self.store.replace(blob, over)
        except OSError as e:  # a missing bucket, no permission
            raise ValueError(f"cannot write the lease {self.where}/{LEASE}: {e}") from e
        if version is None:
            return False
        self.version, self.expires = version, float(json.loads(blob)["expires"])
        return True

    def renew(self) -> None:
        """Extend the lease by `ttl_s`, if this run still holds it (else note it lost). Storage errors
        raise OSError for the caller to retry."""
        with self._lock:
            if self.lost:
                return
            blob = self._blob()
            version = self.store.replace(blob, self.version)
            if version is None:  # changed: taken over, or our own last write landed unseen
                found = self.store.read()
                if found is None or parse(found[0]).get("token") != self.token:
                    self._lose(parse(found[0]) if found else None)
                    return
                self.version = found[1]
                version = self.store.replace(blob, self.version)
                if version is None:
                    return  # changed again: the next renewal or check decides
            self.version, self.expires = version, float(json.loads(blob)["expires"])

    def _lose(self, holder: dict | None) -> None:
        by = f"taken over by host {holder.get('host')}, pid {holder.get('pid')}" if holder else "removed"
        self.lost = f"run directory {self.where}: this run lost its lease ({self.where}/{LEASE} was {by})"
        log.warning(self.lost)

    def _renewing(self) -> None:
        """Renew every `renew_s`; a failed renewal is retried with backoff (1 s, 2 s, 4 s ... within
        what is left of the lease) until it expires, and then the lease is lost (the next check stops
        the run)."""
        wait, backoff = self.renew_s, 1.0
        while not self._stop.wait(wait) and self.lost is None:
            try:
                self.renew()
                wait, backoff = self.renew_s, 1.0
            except Exception as e:  # a storage error: retry before the lease runs out
                left = self.expires - time.time()
                if left <= 0:
                    self.lost = f"run directory {self.where}: this run lost its lease: it expired unrenewed ({e})"
                    log.warning(self.lost)
                    return
                wait, backoff = min(backoff, self.renew_s, left / 2), 2 * backoff
                log.warning(f"could not renew the lease on {self.where} ({e}); retrying in {wait:.1f} s")

    def check(self) -> None:
        """Stop (ValueError naming the run directory) if this run no longer holds its lease: lost on
        renewal, expired, or another run's token in the lease now. Called before each manifest and marker."""
        if self.lost is None:
            try:
                found = self.store.read()
            except OSError:  # cannot look now: our own record of the expiry decides
                pass
            else:
                if found is None or parse(found[0]).get("token") != self.token:
                    with self._lock:
                        self._lose(parse(found[0]) if found else None)
            if self.lost is None and self.expires <= time.time():
                self.lost = f"run directory {self.where}: this run lost its lease: it expired unrenewed"
        if self.lost:
            raise ValueError(f"{self.lost}; this run stops here so that two runs never write one run directory")

    def release(self) -> None:
        """Stop renewing and remove the lease if it is still this run's."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        with self._lock:
            if self.lost is None and self.version is not None:
                try:
                    self.store.delete(self.version)
                except OSError as e:
                    log.warning(f"could not remove the lease {self.where}/{LEASE} ({e}); it expires unrenewed")

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
