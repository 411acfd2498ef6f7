"""What every stage shares: the context it runs in and how it declares its inputs."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import ray

from dataio.rundir import RunDir
from jobs.config import PipelineConfig


@dataclass
class Context:
    cfg: PipelineConfig
    run: RunDir

    def stage(self, name: str) -> Path:
        return self.run.stage(name)

    def use_gpu(self, setting: str) -> bool:
        if setting == "auto":
            return ray.cluster_resources().get("GPU", 0) > 0
        return setting == "true"


class Stage(ABC):
    name: str = ""
    needs: tuple[str, ...] = ()

    @abstractmethod
    def settings(self, cfg: PipelineConfig) -> dict:
        """The config this stage's output depends on; it (with upstream hashes) makes the stage hash."""

    @abstractmethod
    def run(self, ctx: Context, out: Path) -> dict:
        """Do the work, writing into `out`; return a summary (counts, what was written)."""
