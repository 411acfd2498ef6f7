"""Credentials out of everything the project prints or stores.

A URI may carry them (`s3://KEY:SECRET@bucket/run`, `...?access_key=K&secret_key=S`, as PyArrow's
filesystems accept). Run summaries, manifests, config.yaml, reports and error messages are read by
people and systems the credentials were not meant for, so every URI goes through `redact` (or
`redact_tree` for a whole config) before it is printed or written.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MASK = "***"
# scheme://user[:password]@ -> scheme://***@. An AWS secret often holds '/' or '+', pasted without
# percent-encoding: after `user:` everything up to the '@' is the password.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?:[^/?#@\s'\"]+|[^/?#@:\s'\"]*:[^@\s'\"]*)@")
# ?access_key=...&secret_key=...&session_token=... (and the usual other names for a secret)
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:access_key|secret_key|session_token|access_key_id|secret_access_key|password|token|sig|"
    r"signature|credentials?|X-Amz-Credential|X-Amz-Signature|X-Amz-Security-Token)=)[^&;#\s'\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every URI's user-info and secret query parameters replaced by ***."""
    return _SECRET_PARAM.sub(rf"\g<key>{MASK}", _USERINFO.sub(rf"\g<scheme>{MASK}@", text))


def redact_tree(value: Any) -> Any:
    """A copy of a config, manifest or summary (nested dicts, lists, tuples, strings) with every
    string redacted; other values are returned as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_tree(v) for v in value)
    return value


def redact_error(error: BaseException) -> None:
    """Mask the credentials in `error`'s message and in those of the exceptions chained to it, in place:
    its type and traceback stay, so whatever catches or prints it later does as before."""
    pending, seen = [error], set()
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.args = tuple(redact(a) if isinstance(a, str) else a for a in e.args)
        if isinstance(e, OSError):  # its message is built from these, not from args
            for name in ("strerror", "filename", "filename2"):
                if isinstance(getattr(e, name), str):
                    setattr(e, name, redact(getattr(e, name)))
        pending += [e.__cause__, e.__context__]


@contextmanager
def errors_redacted() -> Iterator[None]:
    """An exception leaving the block leaves it with its credentials masked (redact_error). For code whose
    errors are printed by others before ours see them: Ray Train logs a failed worker's error and
    traceback to its log files and, through Ray, to the driver's terminal."""
    try:
        yield
    except BaseException as e:
        redact_error(e)
        raise


def user_message(error: BaseException) -> str:
    """The message of the error a user must act on: for a failure inside a Ray task, the task's own
    exception (`s3://corpus/x.jsonl:51: invalid JSON`), not Ray's wrapper with its colours and pids."""
    cause = getattr(error, "cause", None)
    return str(cause) if isinstance(cause, Exception) else str(error)


def report_failure(error: BaseException) -> str:
    """For an unexpected failure (a Ray Train worker's error, out of memory, a bug): print its traceback
    to stderr and return its last line, both redacted (its message may hold a URI with credentials);
    running out of memory says what to lower."""
    sys.stderr.write(redact("".join(traceback.format_exception(error))))
    names = {type(error).__name__, type(getattr(error, "cause", None)).__name__}
    hint = ""
    if any("OutOfMemory" in n for n in names) or "out of memory" in str(error).lower():
        hint = (
            " (a worker ran out of memory: lower the stage's batch size, e.g. embed.batch_size, or a larger "
            "train.grad_accum, or give it more memory per task)"
        )
    return f"error: {type(error).__name__}: {redact(user_message(error))}{hint}"
