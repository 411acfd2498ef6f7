"""What an experiment is and where its files live: one definition for the runner, the command and the report.

<root>/pipelines/<variant>/            the variant's pipeline run directory (prepare ... select)
<root>/runs/<variant>/<arm>/seed<s>/   one trained model: train.json, eval.json, downstream.json, and
                                       the trainer's model/, model-step<N>/ snapshots and metrics.jsonl
<root>/runs/main/warmstart/            the warm start's own scores (eval.json, downstream.json)
<root>/pool/                           the built pool (experiments/webpool.py), when the experiment names a
                                       pool config
<root>/oracles/<category>-seed<s>.parquet   an oracle arm's subset (sequence ids of one category)
<root>/gate.json                       the gate's verdict, when the experiment has a gate
<root>/best_of.json                    which arm the `best_of` rule gave more seeds
<root>/baselines.json                  each evaluation set's loss under a unigram model of the pool
<root>/diagnostics.json, .md          the main variant's space judged before training (experiments/diagnostics.py)
<root>/results.md, loss_curves.png     the report (reporting/experiment_report.py)
<root>/summary.json                    the report's numbers as data (reporting/summary.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dataio.contracts import STAGE_NAMES
from jobs.config import PipelineConfig
from training.loop import TrainConfig

MAIN = "main"  # the base pipeline variant and the arms x seeds group
WARMSTART = "warmstart"  # runs/main/warmstart: the warm start's own scores
SELECTION_STAGES = tuple(STAGE_NAMES[: STAGE_NAMES.index("select") + 1])  # shared by every run of a variant


@dataclass(kw_only=True)
class Run:
    """One trained model: an arm (or ablation) of a pipeline variant with one seed."""

    variant: str  # the pipeline it trains from: MAIN or an ablation's name
    arm: str
    seed: int
    train: TrainConfig
    snapshots: tuple[int, ...] = ()
    group: str = ""  # MAIN (the arms x seeds table) or "ablation"
    oracle: str | None = None  # trains on a random budget-sized subset of this pool category

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
    pool: Path | None = None  # a pool builder config (experiments/webpool.py): the corpus of every variant
    primary: str = "heldout"  # the evaluation set the gate and steps-to-target are judged on
    gate: Gate | None = None
    best_of: BestOf | None = None


@dataclass(kw_only=True)
class BestOf:
    """After every run of `arms` is scored, the one with the lowest mean primary loss gets `seeds` too."""

    arms: list[str]
    seeds: list[int]


@dataclass(kw_only=True)
class Gate:
    """Before the other arms run: `arm` must beat `against` on the primary loss, paired by seed, with the
    t 95% interval of the difference below zero, or the pool cannot tell arms apart."""

    arm: str
    against: str


def pipeline_dir(root: Path, variant: str) -> Path:
    return root / "pipelines" / variant


def run_dir(root: Path, run: Run) -> Path:
    return root / "runs" / run.variant / run.key


def warmstart_dir(root: Path) -> Path:
    return root / "runs" / MAIN / WARMSTART


def pool_dir(root: Path) -> Path:
    return root / "pool"


def oracle_file(root: Path, category: str, seed: int) -> Path:
    return root / "oracles" / f"{category}-seed{seed}.parquet"


def gate_file(root: Path) -> Path:
    return root / "gate.json"


def baselines_file(root: Path) -> Path:
    return root / "baselines.json"


def best_of_file(root: Path) -> Path:
    return root / "best_of.json"


def train_file(folder: Path) -> Path:
    """In a run's folder: the trainer's summary and the run's settings, written once the model is trained."""
    return folder / "train.json"


def eval_file(folder: Path) -> Path:
    """In a run's folder: held-out losses, "<model>/<set>" -> loss, ... (model: final or step<N>)."""
    return folder / "eval.json"


def downstream_file(folder: Path) -> Path:
    """In a run's folder: the final model's fine-tuning scores, {"rows": one per task and seed}."""
    return folder / "downstream.json"


def results_file(root: Path) -> Path:
    return root / "results.md"


def curves_file(root: Path) -> Path:
    """The loss curves, next to results.md (which shows them by this name)."""
    return root / "loss_curves.png"


def diagnostics_file(root: Path) -> Path:
    return root / "diagnostics.json"


def summary_file(root: Path) -> Path:
    return root / "summary.json"
