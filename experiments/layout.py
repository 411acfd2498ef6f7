"""What an experiment is and where its files live: one definition for the runner and the report.

<root>/pipelines/<variant>/       the variant's pipeline run directory (prepare ... select)
<root>/runs/<variant>/<arm>/seed<s>/   one trained model: train.json, scores.json, its model
<root>/runs/main/warmstart/       the warm start's own scores
<root>/results.md, *.png          the report (reporting/experiment_report.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs.config import PipelineConfig
from training.loop import TrainConfig

MAIN = "main"  # the base pipeline variant and the arms x seeds group
WARMSTART = "warmstart"  # runs/main/warmstart: the warm start's own scores
SELECTION_STAGES = ("prepare", "warmstart", "embed", "select")


@dataclass(kw_only=True)
class Run:
    """One trained model: an arm (or ablation) of a pipeline variant with one seed."""

    variant: str  # the pipeline it trains from: MAIN or an ablation's name
    arm: str
    seed: int
    train: TrainConfig
    snapshots: tuple[int, ...] = ()
    group: str = ""  # MAIN (the arms x seeds table) or "ablation"

    @property
    def key(self) -> str:
        return f"{self.arm}/seed{self.seed}"


@dataclass(kw_only=True)
class Experiment:
    name: str
    pipelines: dict[str, PipelineConfig]  # variant -> its pipeline config
    runs: list[Run]
    notes: dict[str, str]  # ablation -> what it changes, for the report
    compare_to: list[str]  # arms every other arm is compared with, paired by seed


def pipeline_dir(root: Path, variant: str) -> Path:
    return root / "pipelines" / variant


def run_dir(root: Path, run: Run) -> Path:
    return root / "runs" / run.variant / run.key


def warmstart_dir(root: Path) -> Path:
    return root / "runs" / MAIN / WARMSTART
