"""evaluate: held-out LM quality of the warm start and of the subset-trained model, and (with
`evaluate.downstream.tasks`) their fine-tuned scores on GLUE-style tasks.

Held-out sequences come from documents that prepare set aside (never trained on); `external` text
files (e.g. WikiText-2 validation) are tokenized with the run's tokenizer and packed the same way.
The driver reads the (small, capped) evaluation sets and hands them to the tasks; each task reads
its model from the run directory by URI on whichever node runs it, on a GPU it reserved when the
cluster has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actors.evaluator import evaluate_checkpoint
from dataio import uri as U
from dataio.configfile import result_settings
from dataio.contracts import EvaluateOutputs, PrepareOutputs, TrainOutputs
from dataio.corpus import read_documents
from dataio.log import get_logger
from dataio.rundir import read_sequences
from jobs.config import PipelineConfig
from jobs.downstream import run_downstream, write_results
from jobs.executor import Task
from jobs.resources import Resources
from jobs.stages.base import Context, Stage
from training.tokenizer import load_tokenizer, pack_tokens

log = get_logger(__name__)
EVALUATE_RESOURCES = Resources(gpus="auto")  # one CPU per (model, set), and a GPU where the cluster has any


class Evaluate(Stage):
    name = "evaluate"
    needs = ("train",)

    def settings(self, cfg: PipelineConfig) -> dict:
        return {"evaluate": result_settings(cfg.evaluate)}

    def resources(self, cfg: PipelineConfig) -> Resources:
        return EVALUATE_RESOURCES

    def run(self, ctx: Context, out: str) -> dict:
        cfg = ctx.cfg
        sets = evaluation_sets(ctx)
        models = {
            "warmstart": U.join(ctx.stage("warmstart"), TrainOutputs.MODEL),
            "train": U.join(ctx.stage("train"), TrainOutputs.MODEL),
        }
        tasks = evaluation_tasks(models, sets, cfg, self.resources(cfg))
        results = dict(zip(tasks, ctx.executor.run(list(tasks.values()))))
        U.write_json(U.join(out, EvaluateOutputs.METRICS), results)
        summary = {"results": results, "written": EvaluateOutputs.METRICS}
        empty = [s for s, seqs in sets.items() if not seqs]
        if empty:  # e.g. a corpus too small for prepare.heldout_fraction to set a document aside
            log.info(f"evaluate: no sequences in {', '.join(empty)}; skipped")
            summary["empty_sets"] = empty
        if cfg.evaluate.downstream.tasks:
            gpus = ctx.executor.gpus("auto")
            rows = run_downstream(
                models, cfg.evaluate.downstream, kind=cfg.model.kind, gpus_per_task=gpus, executor=ctx.executor
            )
            summary |= {
                "downstream": write_results(rows, out),
                "written": "metrics.json, downstream.jsonl, downstream.md",
            }
        return summary


def evaluation_tasks(
    models: dict[str, str], sets: dict[str, list], cfg: PipelineConfig, resources: Resources = EVALUATE_RESOURCES
) -> dict[str, Task]:
    """One task per (model, non-empty set), keyed "<model>/<set>": the held-out loss of the model folder
    (a path or URI) on those sequences, on a GPU when the cluster has one."""
    return {
        f"{m}/{s}": Task(
            evaluate_checkpoint,
            (uri, seqs),
            {"model_cfg": cfg.model, "batch_size": cfg.evaluate.batch_size, "seed": cfg.evaluate.seed},
            resources,
        )
        for m, uri in models.items()
        for s, seqs in sets.items()
        if seqs
    }


def evaluation_sets(ctx: Context) -> dict[str, list[np.ndarray]]:
    """`heldout` (a fixed, id-ordered sample of prepare's held-out sequences) and one set per
    `evaluate.external` file (named by its stem), each at most `evaluate.max_sequences` long."""
    cfg = ctx.cfg
    ids, seqs = read_sequences(U.join(ctx.stage("prepare"), PrepareOutputs.HELDOUT))
    order = np.argsort(ids, kind="stable")[: cfg.evaluate.max_sequences]
    sets = {"heldout": [seqs[i] for i in order]}
    if cfg.evaluate.external:
        tok = load_tokenizer(
            str(U.local_dir(U.join(ctx.stage("prepare"), PrepareOutputs.TOKENIZER))), kind=cfg.model.kind
        )
    for path in cfg.evaluate.external:
        packed: list[np.ndarray] = []
        for doc in read_documents(path):
            tokens = tok(doc.text, add_special_tokens=False)["input_ids"]
            packed += pack_tokens(
                tok, tokens, kind=cfg.model.kind, seq_len=cfg.model.seq_len, min_tokens=cfg.prepare.min_tokens
            )
        sets[Path(U.name(path)).stem] = packed[: cfg.evaluate.max_sequences]
    return sets
