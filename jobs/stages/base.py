"""What every stage shares: the context it runs in and how it declares its inputs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from dataio.rundir import RunDir
from jobs.config import PipelineConfig
from jobs.executor import Executor
from jobs.resources import Resources


@dataclass
class Context:
    cfg: PipelineConfig
    run: RunDir
    plan: Any = None  # what the running stage's plan() found, for its run()
    executor: Executor = field(default_factory=Executor)  # runs the stage's tasks (the only door to Ray)

    def stage(self, name: str) -> str:
        """The stage's folder, a URI every node can open (dataio/uri.py)."""
        return self.run.stage(name)


class Stage(ABC):
    name: str = ""
    needs: tuple[str, ...] = ()
    # An earlier stage whose outputs already tell whether this one's settings fit (select's budget once
    # prepare has counted the sequences): precheck() runs as soon as that stage is done, so a config
    # that cannot work stops before the stages in between (a warm start, an embedding pass) are paid for.
    checked_after: str | None = None

    def precheck(self, ctx: Context) -> None:
        """Raise ValueError if this stage's settings cannot fit what `checked_after` wrote."""
        return None

    @abstractmethod
    def settings(self, cfg: PipelineConfig) -> dict:
        """The config this stage's output depends on; it (with upstream hashes) makes the stage hash.
        Resource fields (each section's RESOURCES) are left out: dataio.configfile.result_settings."""

    def plan(self, ctx: Context) -> Any:
        """Before the stage's folder is opened (and a stale one cleared): read and check the inputs
        that may be bad (a corpus), so bad input stops the run with nothing lost. Its result is
        ctx.plan in run()."""
        return None

    def resources(self, cfg: PipelineConfig) -> Resources:
        """What each of the stage's main tasks (or actors, or Ray Train workers) asks for, from its config
        section's RESOURCES; its run() hands it to the executor. Short bookkeeping tasks (a shard's moments,
        a sample) take the default, one CPU."""
        return Resources()

    @abstractmethod
    def run(self, ctx: Context, out: str) -> dict:
        """Do the work, writing into the folder URI `out`; return a summary (counts, what was written)."""

    def verify(self, ctx: Context, out: str, summary: dict) -> None:
        """Before the marker: raise ValueError unless every expected output is there and the counts add
        up (a stage must never be marked done with a partial or silently smaller result)."""
        return None  # a stage whose outputs need no check beyond their own atomic writes
