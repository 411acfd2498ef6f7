"""Where a run directory's lease lives, with the three conditional writes a lease is built on.

A store holds one small object (`lease.json` at the run directory's root) and offers:
create it only if it does not exist, replace it only if it is still the version read, and delete it
only if it is still the version read. Each is one atomic step on the storage itself, so of two runs
racing for the same lease exactly one write lands and the other is told so (None), never both:

- local disk: create is a hard link of a written file (fails if the name exists; never torn);
  replace and delete hold an exclusive flock on the run directory while they compare and swap, and
  every replace or delete of the lease goes through that lock (the kernel drops it when a process dies);
- S3: `PutObject` with `If-None-Match: *`, `PutObject` / `DeleteObject` with `If-Match: <ETag>`;
- GCS: the JSON API with `ifGenerationMatch=0`, `ifGenerationMatch=<generation>`.

A version is an opaque string: a digest of the bytes locally, the ETag on S3, the generation on GCS.
Storage errors other than a failed condition (no bucket, no permission, a 5xx) raise OSError.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from dataio import uri as U
from dataio.redact import redact

LEASE = "lease.json"


class Store(Protocol):
    def read(self) -> tuple[bytes, str] | None:
        """(content, version) of the lease, or None if there is none."""

    def create(self, blob: bytes) -> str | None:
        """Write the lease if there is none; its new version, or None if one exists."""

    def replace(self, blob: bytes, version: str) -> str | None:
        """Overwrite the lease if it is still `version`; its new version, or None if it changed or is gone."""

    def delete(self, version: str) -> bool:
        """Remove the lease if it is still `version`; False if it changed or is gone."""


def store_for(root: str) -> Store:
    """The store of the lease at the root of run directory `root` (a local path or a URI)."""
    if U.is_local(root):
        return LocalStore(U.normalize(root))
    scheme = root.split("://", 1)[0]
    if scheme == "s3":
        return S3Store(root)
    if scheme in ("gs", "gcs"):
        return GcsStore(root)
    U.resolve(root)  # a scheme no filesystem knows: that error, naming the URI
    raise ValueError(f"{redact(root)!r}: no lease for {scheme}:// run directories (use a local path, s3:// or gs://)")


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


class LocalStore:
    """The lease file in local folder `root`."""

    def __init__(self, root: str):
        self.root, self.path = Path(root), Path(root) / LEASE

    def read(self) -> tuple[bytes, str] | None:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return blob, _digest(blob)

    def create(self, blob: bytes) -> str | None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._written(blob)
        try:
            os.link(tmp, self.path)  # atomic; fails if the name exists
        except FileExistsError:
            return None
        finally:
            tmp.unlink(missing_ok=True)
        return _digest(blob)

    def replace(self, blob: bytes, version: str) -> str | None:
        with self._locked():
            if (self.read() or (b"", None))[1] != version:
                return None
            tmp = self._written(blob)
            os.replace(tmp, self.path)
        return _digest(blob)

    def delete(self, version: str) -> bool:
        with self._locked():
            if (self.read() or (b"", None))[1] != version:
                return False
            self.path.unlink()
        return True

    def _written(self, blob: bytes) -> Path:
        """`blob` in a file of its own beside the lease, flushed to disk."""
        tmp = self.root / f".{LEASE}.{uuid.uuid4().hex}.tmp"
        with tmp.open("wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive flock on the run directory: replace and delete compare and swap under it."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock


def _parts(uri: str) -> tuple[str, str, dict[str, str], str | None, str | None]:
    """(bucket, key of the lease, query options, user, secret) of a run directory URI."""
    parts = urlsplit(uri)
    bucket = parts.netloc.rpartition("@")[2]
    key = "/".join(p for p in [parts.path.strip("/"), LEASE] if p)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    user = unquote(parts.username) if parts.username else None
    return bucket, key, options, user, unquote(parts.password) if parts.password else None


def _endpoint(options: dict[str, str]) -> str | None:
    """The `endpoint_override` query option as a URL (pyarrow's spelling), if given."""
    host = options.get("endpoint_override")
    if not host:
        return None
    return host if "://" in host else f"{options.get('scheme', 'https')}://{host}"


class S3Store:
    """The lease object of an `s3://bucket/prefix` run directory, through boto3 (pyarrow's S3 filesystem
    has no conditional writes). Endpoint, region and keys as pyarrow takes them: the URI's user-info and
    `region` / `endpoint_override` options, else the environment (AWS_ENDPOINT_URL, AWS_* keys)."""

    def __init__(self, root: str):
        self.bucket, self.key, options, user, secret = _parts(root)
        self.client = _s3_client(
            options.get("region"), _endpoint(options) or os.environ.get("AWS_ENDPOINT_URL"), user, secret
        )

    def read(self) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
            return got["Body"].read(), got["ETag"]
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404"):
                return None
            raise OSError(str(e)) from e
        except BotoCoreError as e:
            raise OSError(str(e)) from e

    def create(self, blob: bytes) -> str | None:
        return self._put(blob, IfNoneMatch="*")

    def replace(self, blob: bytes, version: str) -> str | None:
        return self._put(blob, IfMatch=version)

    def delete(self, version: str) -> bool:
        return (
            self._conditional(lambda: self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=version))
            is not None
        )

    def _put(self, blob: bytes, **condition: str) -> str | None:
        answer = self._conditional(
            lambda: self.client.put_object(Bucket=self.bucket, Key=self.key, Body=blob, **condition)
        )
        return answer["ETag"] if answer else None

    @staticmethod
    def _conditional(request):
        """The request's answer, or None when its condition failed; any other failure is an OSError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return request() or True
        except ClientError as e:
            if _code(e) in _CONFLICT:
                return None
            raise OSError(str(e)) from e
        except BotoCoreError as e:
            raise OSError(str(e)) from e


# A failed condition: 412; 409 when S3 sees two conditional writes of one key at once; 404 for If-Match
# on an object that is gone.
_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404")


def _code(error: Exception) -> str:
    response = getattr(error, "response", {}) or {}
    return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


@lru_cache(maxsize=16)
def _s3_client(region: str | None, endpoint: str | None, user: str | None, secret: str | None):
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        raise ValueError("a lease on s3:// needs boto3 (pip install 'boto3>=1.36')") from e
    keys = {"aws_access_key_id": user, "aws_secret_access_key": secret} if user else {}
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=30)
    return boto3.client("s3", region_name=region, endpoint_url=endpoint, config=config, **keys)


class GcsStore:
    """The lease object of a `gs://bucket/prefix` run directory, through the JSON API with generation
    preconditions (credentials: Application Default Credentials; STORAGE_EMULATOR_HOST or the
    `endpoint_override` option for another endpoint, without credentials)."""

    def __init__(self, root: str, session=None):
        self.bucket, self.key, options, _, _ = _parts(root)
        emulator = _endpoint(options) or os.environ.get("STORAGE_EMULATOR_HOST")
        self.base = (emulator or "https://storage.googleapis.com").rstrip("/")
        self.session = session or _gcs_session(anonymous=emulator is not None)
        self.object = f"{self.base}/storage/v1/b/{self.bucket}/o/{quote(self.key, safe='')}"

    def read(self) -> tuple[bytes, str] | None:
        got = self._call("GET", self.object, params={"alt": "media"})
        if got.status_code == 404:
            return None
        return got.content, got.headers["x-goog-generation"]

    def create(self, blob: bytes) -> str | None:
        return self._upload(blob, "0")

    def replace(self, blob: bytes, version: str) -> str | None:
        return self._upload(blob, version)

    def delete(self, version: str) -> bool:
        return self._call("DELETE", self.object, params={"ifGenerationMatch": version}).status_code < 300

    def _upload(self, blob: bytes, generation: str) -> str | None:
        url = f"{self.base}/upload/storage/v1/b/{self.bucket}/o"
        params = {"uploadType": "media", "name": self.key, "ifGenerationMatch": generation}
        got = self._call("POST", url, params=params, data=blob, headers={"Content-Type": "application/json"})
        return str(got.json()["generation"]) if got.status_code < 300 else None

    def _call(self, method: str, url: str, **kw):
        """The response; a failed precondition (412) or a missing object (404) is left to the caller."""
        try:
            got = self.session.request(method, url, timeout=30, **kw)
        except Exception as e:  # requests' ConnectionError, a credential refresh that failed
            raise OSError(f"gs://{self.bucket}/{self.key}: {e}") from e
        if got.status_code >= 300 and got.status_code not in (404, 412):
            raise OSError(f"gs://{self.bucket}/{self.key}: HTTP {got.status_code} {got.text[:200]}")
        return got


def _gcs_session(*, anonymous: bool):
    try:
        import requests

        if anonymous:
            return requests.Session()
        import google.auth
        from google.auth.transport.requests import AuthorizedSession
    except ImportError as e:
        raise ValueError("a lease on gs:// needs google-auth and requests (pip install -e '.[gcs]')") from e
    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
    return AuthorizedSession(credentials)
