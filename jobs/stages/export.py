"""export: a run's selected data written for other trainers (`ingenious export`).

One folder per draw of the train section's subset schedule (one for a fixed subset or `full`; for
`ingenious` and `random` with train.redraw_every, each draw the train stage walks; with train.reselect,
the re-selected draws the trainers switched to, read from the train stage's folder), each holding one
file per prepare shard with any of the draw's sequences: sequence_id, doc_id, chunk, draw, text and
input_ids (training/export.py). The rows of a draw are training/selection_io.subset_schedule's, the
trainer's own reader, so the exported token ids are the ones the trainer's batches hold.

Not a pipeline stage (`ingenious run` never exports), but kept like one: a manifest and marker in its
folder, a hash over its settings and the outputs of prepare and select it was made from, and one Ray
task per file, so an interrupted export redoes only the files it lacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from actors.export import export_shard
from dataio import uri as U
from dataio.contracts import ExportOutputs, PrepareOutputs
from dataio.sequences import ParquetRows
from jobs.config import PipelineConfig
from jobs.executor import Task
from jobs.stages.base import Context, Stage
from training.export import export_rows
from training.reselect import recorded_switches
from training.selection_io import subset_schedule
from training.subsets import FIXED_SUBSETS


@dataclass(kw_only=True)
class ExportConfig:
    format: str = "parquet"  # ExportOutputs.FORMATS
    out: str | None = None  # a folder (path or URI); None: <run directory>/export/<format>

    def __post_init__(self) -> None:
        if self.format not in ExportOutputs.FORMATS:
            raise ValueError(f"export --format {self.format!r}: expected one of {', '.join(ExportOutputs.FORMATS)}")


def draw_indices(cfg: PipelineConfig, train_dir: str) -> list[int]:
    """The draws the train stage walked: one per train.redraw_every steps for the drawn subsets
    (ingenious, random), else one (every draw of a fixed subset or `full` is the same rows); with
    train.reselect, the first and each re-selected draw the trainers switched to (its switch-<k>.json)."""
    train, plan = cfg.train, cfg.train.reselect_plan()
    if plan is not None:
        return [0, *sorted(recorded_switches(train_dir, plan))]
    if train.subset in ("ingenious", "random") and train.redraw_every:
        return list(range(math.ceil(train.steps / train.redraw_every)))
    return [0]


def uses_select(cfg: PipelineConfig) -> bool:
    """Whether the subset mode reads the select stage's outputs."""
    return cfg.train.subset == "ingenious" or cfg.train.subset in FIXED_SUBSETS


class Export(Stage):
    name = "export"

    def __init__(self, ecfg: ExportConfig, cfg: PipelineConfig):
        self.ecfg = ecfg
        self.needs = ("prepare", "select") if uses_select(cfg) else ("prepare",)
        if cfg.train.reselect is not None:  # the draws after the first are the train stage's own
            self.needs += ("train",)

    def settings(self, cfg: PipelineConfig) -> dict:
        """What decides the rows: the train section's schedule settings and the budget."""
        t = cfg.train
        return {
            "format": self.ecfg.format,
            "subset": t.subset,
            # The user's own subset file by content: one rewritten under the same name is exported again.
            "subset_file": {"path": t.subset_file, **U.fingerprint(t.subset_file)} if t.subset_file else None,
            "seed": t.seed,
            "steps": t.steps,
            "redraw_every": t.redraw_every,
            "fraction": cfg.select.fraction,
            "kind": cfg.model.kind,
        }

    def plan(self, ctx: Context) -> tuple[ParquetRows, list[np.ndarray]]:
        """The pool as the trainer reads it, and each draw's rows of it as the trainer computes them."""
        pool = ParquetRows(U.join(ctx.stage("prepare"), PrepareOutputs.SEQUENCES))
        schedule = subset_schedule(
            ctx.cfg.train,
            pool.ids,
            fraction=ctx.cfg.select.fraction,
            select_dir=ctx.stage("select") if uses_select(ctx.cfg) else None,
            out_dir=ctx.stage("train"),
        )
        return pool, [np.asarray(schedule.draw_rows(d), np.int64) for d in draw_indices(ctx.cfg, ctx.stage("train"))]

    def tasks(self, ctx: Context, out: str, pool: ParquetRows, draws: list[np.ndarray]) -> list[Task]:
        """One task per (draw, prepare shard holding any of its rows), in draw then shard order."""
        files, starts = pool.files, pool.starts
        tokenizer, fmt, tasks = U.join(ctx.stage("prepare"), PrepareOutputs.TOKENIZER), self.ecfg.format, []
        for d, rows in enumerate(draws):
            for i, f in enumerate(files):
                local = np.sort(rows[(rows >= starts[i]) & (rows < starts[i + 1])]) - starts[i]
                if not len(local):
                    continue
                target = U.join(out, ExportOutputs.draw(d), ExportOutputs.shard(i, fmt))
                kwargs = {"draw": d, "tokenizer": tokenizer, "kind": ctx.cfg.model.kind, "out": target, "fmt": fmt}
                tasks.append(Task(export_shard, (f, local), kwargs, outputs=(target,)))
        return tasks

    def run(self, ctx: Context, out: str) -> dict:
        pool, draws = ctx.plan if ctx.plan is not None else self.plan(ctx)
        tasks = self.tasks(ctx, out, pool, draws)
        written = ctx.executor.run(tasks, "export", "files")
        return {
            "format": self.ecfg.format,
            "subset": ctx.cfg.train.subset,
            "draws": len(draws),
            "rows_per_draw": [len(rows) for rows in draws],
            "files": len(tasks),
            "files_written_now": sum(r is not None for r in written),
            "written": f"{ExportOutputs.draw(0)}/ .. {ExportOutputs.draw(len(draws) - 1)}/ "
            f"part-*.{self.ecfg.format} ({', '.join(ExportOutputs.SCHEMA.names)})",
        }

    def verify(self, ctx: Context, out: str, summary: dict) -> None:
        """Each draw's folder holds exactly the draw's rows."""
        for d, want in enumerate(summary["rows_per_draw"]):
            folder = U.join(out, ExportOutputs.draw(d))
            got = sum(export_rows(f) for f in U.list_files(folder, f"part-*.{self.ecfg.format}"))
            if got != want:
                raise ValueError(f"{folder} holds {got} rows; draw {d} has {want}")
