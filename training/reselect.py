"""Re-selection beside training: draw k >= 1 is chosen from a snapshot of the model being trained.

Every `every` steps (R) the trainers switch to the next draw. Draw k is selected from the snapshot
rank 0 writes after step k*R - L (L: the lead), so the re-selection (jobs/reselect.py, on its own
resources) runs while the trainers go on with draw k-1. Everything passes through the run directory
by URI, so the re-selection may run on nodes that share no disk with the trainers:

    <train>/reselect/<k>/model/          the snapshot for draw k (whole once it has _COMPLETE)
    <train>/reselect/<k>/embed, select/  the re-selection's own stage folders
    <train>/reselect/draw-<k>.parquet    draw k (sequence_id), written last: the draw is done
    <train>/reselect/switch-<k>.json     the step the trainers switched to draw k
    <train>/reselect/failed.txt          why a re-selection failed (the waiting trainers stop with it)

When draw k is late at step k*R, `when_late: wait` (deterministic) holds the trainers until it lands;
`continue` keeps training on draw k-1 and switches at the first step boundary after it lands. Either
way the switch step is recorded before the step runs, so a resumed run switches where the first did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import numpy as np
import torch
import torch.distributed as dist

from dataio import uri as U
from dataio.contracts import SUBSET_NAMES, SubsetName
from dataio.rundir import read_ids
from selection.ids import rows_of
from training.subsets import SubsetSchedule

WhenLate = Literal["wait", "continue"]
FOLDER = "reselect"
FAILED = "failed.txt"
POLL_S = 0.2  # how often a waiting trainer looks for its draw


@dataclass(kw_only=True)
class ReselectConfig:
    every: int | None = None  # R; None: train.redraw_every
    lead: int | None = None  # L, steps between the snapshot and the switch; None: half of R
    # model: the run's model (its latest snapshot); lexical, or any encoder embed.encoder takes
    space: str = "model"
    strategy: SubsetName = "ingenious"  # any select strategy
    when_late: WhenLate = "wait"
    num_actors: int = 1  # the re-selection's Embedder actors, apart from the trainers
    cpus_per_actor: float = 1.0  # each actor's CPUs, and each of its selection tasks'
    use_gpu: bool | Literal["auto"] = False

    # Where it runs, not what it computes (in `wait` mode; `continue` depends on timing by design).
    RESOURCES: ClassVar[tuple[str, ...]] = ("num_actors", "cpus_per_actor", "use_gpu")

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValueError(f"reselect.every must be >= 1 or null, got {self.every}")
        if self.lead is not None and self.lead < 0:
            raise ValueError(f"reselect.lead must be >= 0 or null, got {self.lead}")
        if self.space == "warmstart":  # the stages' name for the warm start; here the model is the trained one
            raise ValueError("reselect.space 'warmstart': the run's model is space 'model' (its latest snapshot)")
        if self.strategy not in SUBSET_NAMES:
            raise ValueError(f"reselect.strategy must be one of {SUBSET_NAMES}, got {self.strategy!r}")
        if self.when_late not in get_args(WhenLate):
            raise ValueError(f"reselect.when_late must be one of {get_args(WhenLate)}, got {self.when_late!r}")
        if self.num_actors < 1 or not self.cpus_per_actor > 0:
            raise ValueError(
                f"reselect.num_actors must be >= 1 and cpus_per_actor > 0, got {self.num_actors}, {self.cpus_per_actor}"
            )
        if self.use_gpu not in (True, False, "auto"):
            raise ValueError(f"reselect.use_gpu must be true, false or auto, got {self.use_gpu!r}")


@dataclass(frozen=True)
class Plan:
    """When each re-selection's snapshot is taken and its draw used, for a run of `steps` steps."""

    every: int
    lead: int
    steps: int

    @classmethod
    def of(cls, rc: ReselectConfig, *, redraw_every: int | None, steps: int) -> Plan:
        every = rc.every or redraw_every
        if every is None:
            raise ValueError("train.reselect needs reselect.every or train.redraw_every (steps between draws)")
        lead = every // 2 if rc.lead is None else rc.lead
        if lead > every:  # the snapshot for draw k would fall before draw k-1 starts
            raise ValueError(f"train.reselect.lead ({lead}) must be <= every ({every})")
        return cls(every, lead, steps)

    @property
    def draws(self) -> range:
        """The re-selected draws: those whose switch step falls inside the run."""
        return range(1, -(-self.steps // self.every))

    def snapshot_step(self, k: int) -> int:
        return k * self.every - self.lead

    def snapshot_due(self, done: int) -> int | None:
        """The draw whose snapshot is the model after `done` steps, if any."""
        k, rest = divmod(done + self.lead, self.every)
        return k if rest == 0 and k in self.draws else None


def folder(out_dir: str) -> str:
    return U.join(out_dir, FOLDER)


def snapshot_uri(out_dir: str, k: int) -> str:
    return U.join(out_dir, FOLDER, str(k), "model")


def draw_uri(out_dir: str, k: int) -> str:
    return U.join(out_dir, FOLDER, f"draw-{k}.parquet")


def switch_uri(out_dir: str, k: int) -> str:
    return U.join(out_dir, FOLDER, f"switch-{k}.json")


def recorded_switches(out_dir: str, plan: Plan) -> dict[int, int]:
    """draw -> the step it was switched to, as an earlier attempt of the run recorded it."""
    found = {}
    for k in plan.draws:
        if U.exists(switch_uri(out_dir, k)):
            found[k] = int(json.loads(U.read_text(switch_uri(out_dir, k)))["step"])
    return found


class ReselectSchedule(SubsetSchedule):
    """Draw 0 from the select stage (`first`); draw k >= 1 from draw-<k>.parquet, walked from its
    switch step. The trainer calls before_step() before each step, which decides the switches."""

    def __init__(
        self,
        first: Callable[[int], np.ndarray],
        pool_ids: np.ndarray,
        plan: Plan,
        *,
        out_dir: str,
        when_late: WhenLate,
        global_batch: int,
        seed: int,
        rank: int = 0,
    ):
        super().__init__(self._rows, global_batch=global_batch, redraw_every=plan.every, seed=seed)
        self.first, self.pool_ids, self.plan = first, pool_ids, plan
        self.out_dir, self.when_late, self.rank = out_dir, when_late, rank
        self.switches = {0: 0, **recorded_switches(out_dir, plan)}

    def _rows(self, d: int) -> np.ndarray:
        if d == 0:
            return self.first(0)
        return rows_of(read_ids(draw_uri(self.out_dir, d)), self.pool_ids, where=draw_uri(self.out_dir, d))

    def draw_index(self, step: int) -> int:
        return max(d for d, start in self.switches.items() if start <= step)

    def draw_start(self, d: int) -> int:
        return self.switches[d]

    def before_step(self, step: int) -> None:
        """Switch to the next draw at `step` if it is due: in `wait` mode at its step, waiting for it;
        in `continue` mode at the first step at or after its own where it has landed (rank 0 decides
        for all ranks, so they switch together)."""
        k = self.draw_index(step) + 1
        if k not in self.plan.draws or step < k * self.plan.every or k in self.switches:
            return
        if self.when_late == "wait":
            wait_for(self.out_dir, k)
        elif not landed(self.out_dir, k):
            return
        if self.rank == 0:
            U.write_text(switch_uri(self.out_dir, k), json.dumps({"draw": k, "step": step}))
        self.switches[k] = step


def landed(out_dir: str, k: int) -> bool:
    """Whether draw k is there, as rank 0 sees it (broadcast to every rank of a distributed run)."""
    ready = torch.tensor([int(U.exists(draw_uri(out_dir, k)))])
    if dist.is_available() and dist.is_initialized():
        ready = ready.to("cuda" if dist.get_backend() == "nccl" else "cpu")  # NCCL moves CUDA tensors only
        dist.broadcast(ready, src=0)
    return bool(ready.item())


def wait_for(out_dir: str, k: int) -> None:
    """Block until draw k is written; a failed re-selection stops the trainer with its reason."""
    while not U.exists(draw_uri(out_dir, k)):
        failed = U.join(folder(out_dir), FAILED)
        if U.exists(failed):
            raise ValueError(f"re-selection of draw {k} failed ({failed}): {U.read_text(failed)}")
        time.sleep(POLL_S)
