"""warmstart and train: Ray Train pretraining on all sequences, then on the selected subsets."""

from __future__ import annotations

import dataclasses
import json
from contextlib import nullcontext

from actors.trainer import OPTIMIZER_FILE, launch_args, launch_training
from dataio.configfile import result_settings
from dataio.contracts import TrainOutputs
from dataio.uri import FOLDER_COMPLETE, exists, folder_complete, join, read_text
from jobs.config import PipelineConfig
from jobs.reselect import Reselector
from jobs.resources import Resources
from jobs.stages.base import Context, Stage
from training.loop import TrainConfig
from training.reselect import draw_uri, switch_uri


def _train(
    ctx: Context,
    out: str,
    cfg: TrainConfig,
    *,
    name: str,
    workers: Resources,
    init_from: str | None,
    select_dir: str | None,
    save_optimizer: bool = False,
) -> dict:
    args = launch_args(
        train=cfg,
        model=ctx.cfg.model,
        data=ctx.stage("prepare"),
        out_dir=out,
        select_dir=select_dir,
        fraction=ctx.cfg.select.fraction,
        init_from=init_from,
        save_optimizer=save_optimizer,
    )
    plan = cfg.reselect_plan()
    with Reselector(ctx, out, plan) if plan else nullcontext():  # beside the trainers, on its own resources
        metrics = launch_training(
            args,
            name=f"{ctx.cfg.name}-{name}",
            storage=join(out, "ray"),
            num_workers=workers.actors,
            use_gpu=ctx.executor.use_gpu(workers.gpus),
            cpus_per_worker=workers.cpus,
        )
    return {
        "final_loss": metrics.get("loss"),
        "steps": cfg.steps,
        "subset": cfg.subset,
        "written": f"{TrainOutputs.MODEL}/, {TrainOutputs.METRICS}, ray/ (checkpoints)",
    }


def train_resources(cfg: TrainConfig) -> Resources:
    """Each Ray Train worker's share (the section's RESOURCES): its CPUs, a GPU by `use_gpu`, how many workers."""
    return Resources(cpus=cfg.cpus_per_worker, gpus=cfg.use_gpu, actors=cfg.num_workers)


def verify_training(out: str, steps: int) -> None:
    """The model was uploaded whole and every step was logged once, in order."""
    if not folder_complete(join(out, TrainOutputs.MODEL)):
        raise ValueError(f"{join(out, 'model')} is missing or incomplete (no {FOLDER_COMPLETE})")
    logged = [json.loads(line)["step"] for line in read_text(join(out, TrainOutputs.METRICS)).splitlines() if line]
    if logged != list(range(1, steps + 1)):
        raise ValueError(
            f"{join(out, TrainOutputs.METRICS)} logs steps {logged[:3]}...{logged[-3:]} "
            f"({len(logged)} lines), not 1..{steps}"
        )


class TrainingStage(Stage):
    def resources(self, cfg: PipelineConfig) -> Resources:
        return train_resources(cfg.warmstart if self.name == "warmstart" else cfg.train)

    def verify(self, ctx: Context, out: str, summary: dict) -> None:
        verify_training(out, summary["steps"])


class WarmStart(TrainingStage):
    name = "warmstart"
    needs = ("prepare",)

    def settings(self, cfg: PipelineConfig) -> dict:
        return {"model": dataclasses.asdict(cfg.model), "warmstart": result_settings(cfg.warmstart)}

    def run(self, ctx: Context, out: str) -> dict:
        # Its AdamW state is published beside the model, for runs continued with train.init_optimizer.
        return _train(
            ctx,
            out,
            ctx.cfg.warmstart,
            name="warmstart",
            workers=self.resources(ctx.cfg),
            init_from=ctx.cfg.model.init_from,
            select_dir=None,
            save_optimizer=True,
        )

    def verify(self, ctx: Context, out: str, summary: dict) -> None:
        super().verify(ctx, out, summary)
        if not exists(join(out, TrainOutputs.MODEL, OPTIMIZER_FILE)):
            raise ValueError(f"{join(out, 'model', OPTIMIZER_FILE)} is missing: the warm start's optimizer state")


class Train(TrainingStage):
    name = "train"
    needs = ("warmstart", "select")

    def settings(self, cfg: PipelineConfig) -> dict:
        return {"train": result_settings(cfg.train)}

    def verify(self, ctx: Context, out: str, summary: dict) -> None:
        super().verify(ctx, out, summary)
        plan = ctx.cfg.train.reselect_plan()
        waited = (
            plan is not None and ctx.cfg.train.reselect.when_late == "wait"
        )  # `continue` may end before a draw lands
        for k in plan.draws if waited else ():
            if not (exists(draw_uri(out, k)) and exists(switch_uri(out, k))):
                raise ValueError(f"{draw_uri(out, k)} or {switch_uri(out, k)} is missing: draw {k} was not trained on")

    def run(self, ctx: Context, out: str) -> dict:
        return _train(
            ctx,
            out,
            ctx.cfg.train,
            name="train",
            workers=self.resources(ctx.cfg),
            init_from=join(ctx.stage("warmstart"), TrainOutputs.MODEL),
            select_dir=ctx.stage("select"),
        )
