"""The project's status lines: Python logging under one `ingenious` logger, printed as `[ingenious] ...`.

A job's log is a file, not a terminal, so lines go to stdout, the stream Ray forwards from every
worker to the driver. The handler looks sys.stdout up at each line rather than keeping the stream it
was created with: Ray and pytest swap it after import. The `ingenious` logger does not propagate:
Ray Train gives its workers' root logger a console handler, and each line would come out twice.

Entry points call `configure()`; `get_logger` calls it too, so a Ray worker, which runs no entry
point, sets its handler up on its first logger, once per process. INGENIOUS_LOG_LEVEL=DEBUG shows
the original exception behind an error a command reports in one line.
"""

from __future__ import annotations

import logging
import os
import sys

from dataio.redact import redact

ROOT = "ingenious"


class _Format(logging.Formatter):
    """`[ingenious] message`, `[ingenious] warning: message`; credentials redacted, tracebacks too."""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return redact(f"[{ROOT}] {level}{super().format(record)}")


class _Stdout(logging.StreamHandler):
    """A StreamHandler on whatever sys.stdout is when a line is written."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Format())

    @property
    def stream(self):  # noqa: ANN201 (a text stream)
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns one; sys.stdout is used instead
        pass


def configure(level: str | int | None = None) -> logging.Logger:
    """Give the `ingenious` logger its stdout handler (once per process) and a level: `level`, else
    INGENIOUS_LOG_LEVEL, else INFO."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _Stdout) for h in root.handlers):
        root.addHandler(_Stdout())
        root.propagate = False
    root.setLevel(level or os.environ.get("INGENIOUS_LOG_LEVEL", "INFO").upper())
    return root


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (pass __name__), under `ingenious`."""
    if not any(isinstance(h, _Stdout) for h in logging.getLogger(ROOT).handlers):
        configure()
    return logging.getLogger(f"{ROOT}.{name}")
