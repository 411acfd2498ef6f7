"""The pipeline's stages, in order. Each is a small class with `settings` (what its hash covers)
and `run` (do the work into its folder, return a summary)."""

from dataio.contracts import STAGE_NAMES
from jobs.stages.base import Context, Stage
from jobs.stages.embed import Embed
from jobs.stages.evaluate import Evaluate
from jobs.stages.prepare import Prepare
from jobs.stages.select import Select
from jobs.stages.train import Train, WarmStart

STAGES: list[Stage] = [Prepare(), WarmStart(), Embed(), Select(), Train(), Evaluate()]
assert [s.name for s in STAGES] == STAGE_NAMES, "dataio/contracts.py names the stages in this order"

__all__ = ["Context", "Stage", "STAGES"]
