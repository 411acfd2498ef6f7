"""Which Ray nodes can see a local folder: a local run directory works on a cluster only if every
node that runs work mounts it (shared storage); otherwise each stage would write shards that the
others, and the driver, never see. Checked once at the start, so the run stops before any work."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
def _sees(probe: str) -> tuple[str, bool]:
    return socket.gethostname(), os.path.exists(probe)


def nodes_without(folder: str) -> list[str]:
    """'ip (hostname)' of every alive node with CPUs or GPUs that cannot see `folder` (a local path)."""
    probe = Path(folder) / f".ingenious-probe-{uuid.uuid4().hex}"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("a run directory visibility probe; safe to delete\n")
    try:
        nodes = [
            n for n in ray.nodes() if n["Alive"] and (n["Resources"].get("CPU", 0) or n["Resources"].get("GPU", 0))
        ]
        answers = ray.get(
            [
                _sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    str(probe)
                )
                for n in nodes
            ]
        )
    finally:
        probe.unlink(missing_ok=True)
    return [f"{n['NodeManagerAddress']} ({host})" for n, (host, seen) in zip(nodes, answers) if not seen]


def require_visible(folder: str) -> None:
    blind = nodes_without(folder)
    if blind:
        raise ValueError(
            f"run directory {folder} is on this machine's disk, which node(s) {', '.join(blind)} cannot "
            "see: on a cluster without shared storage, give --run-dir on object storage (s3://bucket/"
            "prefix, gs://...), or a path on storage every node mounts at the same place"
        )
