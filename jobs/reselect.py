"""The driver's side of train.reselect (training/reselect.py): while the trainers train, each snapshot
they publish is embedded and selected from again, on the re-selection's own resources, into the next draw.

A re-selection is the embed and select stages run on a snapshot: their own folders under
<train>/reselect/<k>/, the pipeline config with the re-selection's space, strategy and resources, and
the snapshot as the warm-started model. Both stages resume per shard and per partition, and
draw-<k>.parquet is written last, so a draw that exists is never redone and a killed one is finished
by the next attempt, to the same bytes: the snapshot, the config and the seed are all it reads.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from dataclasses import dataclass, field

from dataio import uri as U
from dataio.contracts import SelectOutputs
from dataio.log import get_logger
from jobs.config import PipelineConfig
from jobs.stages.base import Context
from jobs.stages.embed import Embed
from jobs.stages.select import Select
from training.reselect import FAILED, POLL_S, Plan, draw_uri, folder, snapshot_uri

log = get_logger(__name__)


@dataclass
class SnapshotContext(Context):
    """The run's context with some stages' folders moved: warmstart to a snapshot, embed and select to the
    re-selection's own."""

    moved: dict[str, str] = field(default_factory=dict)

    def stage(self, name: str) -> str:
        return self.moved.get(name) or super().stage(name)


def reselect_config(cfg: PipelineConfig) -> PipelineConfig:
    """The pipeline config a re-selection runs its embed and select stages with."""
    rc = cfg.train.reselect
    embed = dataclasses.replace(
        cfg.embed,
        encoder="warmstart" if rc.space == "model" else rc.space,
        num_actors=rc.num_actors,
        cpus_per_actor=rc.cpus_per_actor,
        use_gpu=rc.use_gpu,
    )
    select = dataclasses.replace(
        cfg.select,
        strategy=rc.strategy,
        also=[],
        greedi_merge=False,
        cpus_per_task=rc.cpus_per_actor,
        gpus_per_task=1.0 if rc.use_gpu is True else 0.0,
    )
    return dataclasses.replace(cfg, embed=embed, select=select)


def reselect_draw(ctx: Context, out: str, k: int) -> None:
    """Draw k from snapshot k (which must be whole): embed, select, then draw-<k>.parquet."""
    if U.exists(draw_uri(out, k)):
        return
    start = time.perf_counter()
    base = U.parent(snapshot_uri(out, k))
    moved = {"warmstart": base, "embed": U.join(base, "embed"), "select": U.join(base, "select")}
    sub = SnapshotContext(reselect_config(ctx.cfg), ctx.run, executor=ctx.executor, moved=moved)
    Embed().run(sub, moved["embed"])
    Embed().verify(sub, moved["embed"], {})
    Select().run(sub, moved["select"])
    U.write_bytes(draw_uri(out, k), U.read_bytes(U.join(moved["select"], SelectOutputs.SUBSET)))
    log.info(f"reselect: draw {k} selected in {time.perf_counter() - start:.1f} s")


class Reselector:
    """A driver thread that turns each snapshot into its draw as soon as it is whole, until stopped. An
    error is kept for join() and written to reselect/failed.txt, where the waiting trainers read it."""

    def __init__(self, ctx: Context, out: str, plan: Plan):
        self.ctx, self.out, self.plan = ctx, out, plan
        self.stopped, self.error = threading.Event(), None
        U.delete(U.join(folder(out), FAILED))  # an earlier attempt's: this one tries again
        self.thread = threading.Thread(target=self._run, name="reselect", daemon=True)

    def start(self) -> Reselector:
        self.thread.start()
        return self

    def stop(self, *, raise_error: bool = True) -> None:
        """End the thread (training is over, or failed); raise the re-selection's error, if it had one."""
        self.stopped.set()
        self.thread.join()
        if self.error is not None and raise_error:
            raise self.error

    def __enter__(self) -> Reselector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(raise_error=exc[0] is None)  # after a training error, that error is the one to raise

    def _run(self) -> None:
        try:
            for k in self.plan.draws:
                while not U.folder_complete(snapshot_uri(self.out, k)):
                    if self.stopped.wait(POLL_S):  # training ended (or failed) before this snapshot
                        return
                reselect_draw(self.ctx, self.out, k)
        except Exception as e:  # noqa: BLE001 (handed to the trainers and to join())
            self.error = e
            U.write_text(U.join(folder(self.out), FAILED), "".join(traceback.format_exception_only(e)))
