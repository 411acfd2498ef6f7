"""What one task or actor of a stage asks the cluster for, declared from its config section's RESOURCES
fields (jobs/config.py) and turned into Ray options only by the executor (jobs/executor.py).

Resource fields never enter a stage hash (jobs.config.result_settings): the same work on more CPUs
gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GpuSetting = bool | Literal["auto"]


@dataclass(frozen=True, kw_only=True)
class Resources:
    cpus: float = 1.0
    # A number of GPUs, or a `use_gpu` setting: true (one), false (none), "auto" (one when the cluster has any).
    gpus: float | GpuSetting = 0.0
    memory_gb: float | None = None  # declared to Ray so big tasks are not packed onto one node
    actors: int = 1  # for a pool of actors: how many at most

    def __post_init__(self) -> None:
        if not self.cpus > 0 or self.actors < 1:
            raise ValueError(f"resources need cpus > 0 and actors >= 1, got {self}")
        if self.gpus not in ("auto", True, False) and not self.gpus >= 0:
            raise ValueError(f"resources.gpus must be >= 0, true, false or auto, got {self.gpus!r}")
