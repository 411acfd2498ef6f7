"""Helpers shared by the benchmarks: synthetic embeddings, timing, peak memory, and the one writer of
their results (bench/results/<bench>/: JSON plus a short Markdown table, with the date and the machine)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from actors.monitor import PeakRss


def clustered_embeddings(n: int, *, d: int = 384, clusters: int = 100, seed: int = 0) -> np.ndarray:
    """Unit vectors around `clusters` centres with cluster-specific spread (like sentence embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    spread = rng.uniform(0.5, 1.5, size=clusters).astype(np.float32)
    labels = rng.integers(clusters, size=n)
    x = centres[labels] + spread[labels, None] * rng.normal(size=(n, d)).astype(np.float32) * 1.2
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure(fn: Callable[[], Any], repeats: int = 3, budget_s: float = 60.0) -> tuple[Any, float, float]:
    """(result of the last run, median seconds, peak extra memory in MB over the runs).

    Stops repeating once `budget_s` is spent, so a baseline that takes minutes runs once."""
    times, peak, result = [], 0, None
    for _ in range(repeats):
        if sum(times) > budget_s:
            break
        with PeakRss() as mem:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        peak = max(peak, mem.peak)
    return result, statistics.median(times), peak / 2**20


RESULTS = Path(__file__).resolve().parent / "results"


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """When and where a benchmark ran: UTC date, host name, CPU model, cores, library versions."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "faiss": _version("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss"),
        "numpy": np.__version__,
        "command": _command(),
    }


def _command() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name if spec else Path(sys.argv[0]).stem
    return " ".join([f"python -m {module}", *sys.argv[1:]])


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def write_result(
    name: str,
    payload: dict,
    table_md: str,
    *,
    form: str | None = None,
    out: Path | None = None,
    stem: str | None = None,
) -> dict:
    """Write one benchmark's numbers: `<out>/<stem>.json` (machine_info() and `payload`) and `<stem>.md`
    (a header line with the command, date and machine, then `table_md`). `out` defaults to
    bench/results/<name>/, `stem` to `<name>` or `<name>-<form>`. Returns the record written."""
    record = {"bench": name, **machine_info(), **({"form": form} if form else {}), **payload}
    folder = out or RESULTS / name
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or (f"{name}-{form}" if form else name)
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    head = (
        f"# bench.{name}{f' ({form})' if form else ''}, {record['date']} on {record['machine']}\n\n"
        f"`{record['command']}` on {record['cpu']}, {record['cores']} cores; Python {record['python']}, "
        f"torch {record['torch']}, faiss {record['faiss']}, numpy {record['numpy']}.\n\n"
    )
    md_path.write_text(head + table_md.rstrip() + "\n")
    for path in (json_path, md_path):
        print(f"wrote {path}", flush=True)
    return record
