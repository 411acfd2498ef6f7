"""Downstream scores of pretrained checkpoints: each fine-tuned on each task with several seeds.

    python -m jobs.downstream --model runs/default/train/model [--model NAME=DIR ...] \
        --data-dir ../shared/data [--tasks sst2,cola,mrpc,stsb,rte] [--seeds 0,1,2] [--kind bert] [--out DIR]

Models, data folder and output folder are local paths or `s3://`/`gs://` URIs: each fine-tuning task
reads its model and task files itself on whichever node runs it, and asks for a GPU when the cluster
has one (--use-gpu). Every (checkpoint, task, seed) is one Ray task; the table gives each task's headline score (GLUE's
convention: accuracy, Matthews correlation for CoLA, mean of F1 and accuracy for MRPC, mean of
Pearson and Spearman for STS-B) as the mean and t-based 95% interval over seeds, and their average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from actors.finetuner import finetune_task
from dataio import uri as U
from dataio.contracts import EvaluateOutputs
from dataio.log import configure, get_logger
from dataio.redact import redact, report_failure
from dataio.tasks import GLUE, TASKS, load_task
from jobs.executor import Executor, Task, connect
from jobs.resources import Resources
from training.finetune import FinetuneConfig
from training.stats import INTERVAL_HEADER, format_interval

log = get_logger(__name__)


def downstream_tasks(
    models: dict[str, str], cfg: FinetuneConfig, *, kind: str, gpus_per_task: float = 0.0
) -> list[tuple[str, Task]]:
    """One fine-tuning task per (model, task, seed), with the model's name. `models` maps names to model
    folders (paths or URIs) that the nodes running the tasks can read. With `gpus_per_task` (GPUs are
    used), each task takes cfg.gpu_fraction of it, so small tasks share a card."""
    if cfg.data_dir:  # a relative path means the driver's folder, not the one a task starts in
        cfg = dataclasses.replace(cfg, data_dir=U.normalize(cfg.data_dir))
    for task in cfg.tasks:
        load_task(task, cfg.data_dir)  # fail here, naming the missing file, before any task is launched
    resources = Resources(cpus=cfg.cpus_per_task, gpus=gpus_per_task * cfg.gpu_fraction)
    return [
        (name, Task(finetune_task, (models[name], task, cfg), {"seed": seed, "kind": kind}, resources))
        for name in models
        for task in cfg.tasks
        for seed in cfg.seeds
    ]


def run_downstream(
    models: dict[str, str],
    cfg: FinetuneConfig,
    *,
    kind: str,
    gpus_per_task: float = 0.0,
    executor: Executor | None = None,
) -> list[dict]:
    """One row per (model, task, seed) with every metric of the task and its `score`."""
    named = downstream_tasks(models, cfg, kind=kind, gpus_per_task=gpus_per_task)
    rows = (executor or Executor()).run([t for _, t in named], "downstream fine-tuning", "runs")
    return [{"model": name, **row} for (name, _), row in zip(named, rows)]


def score_table(rows: list[dict]) -> str:
    """Markdown: one line per model, the mean and t-based 95% interval over seeds per task and of the
    average over tasks (training/stats.py), as the header says."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = [f"| model ({INTERVAL_HEADER}) | " + " | ".join(tasks) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    for model in models:
        per_task = {t: [100 * r["score"] for r in rows if r["model"] == model and r["task"] == t] for t in tasks}
        seeds = min(len(v) for v in per_task.values())
        averages = [np.mean([per_task[t][s] for t in tasks]) for s in range(seeds)]  # the average per seed
        cells = [format_interval(v, 1) for v in [*per_task.values(), averages]]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(rows: list[dict], out: str) -> str:
    """downstream.jsonl (every row) and downstream.md (the table) into the folder `out` (path or URI)."""
    U.write_text(U.join(out, EvaluateOutputs.DOWNSTREAM_ROWS), "".join(json.dumps(r) + "\n" for r in rows))
    table = score_table(rows)
    U.write_text(U.join(out, EvaluateOutputs.DOWNSTREAM_TABLE), table + "\n")
    return table


def gpus_wanted(use_gpu: str) -> float:
    """One GPU per fine-tuning task with `true`, or with `auto` when the cluster has any; else none."""
    if use_gpu not in ("auto", "true", "false"):
        raise ValueError(f"--use-gpu must be auto, true or false, got {use_gpu!r}")
    return Executor().gpus("auto" if use_gpu == "auto" else use_gpu == "true")


def model_names(specs: list[str]) -> dict[str, str]:
    """NAME=FOLDER, or FOLDER named after its parent (runs/x/train/model -> train); folders normalised."""
    pairs = [spec.split("=", 1) if "=" in spec else (U.name(U.parent(spec)), spec) for spec in specs]
    return {name: U.normalize(folder) for name, folder in pairs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.downstream", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", required=True, help="a checkpoint folder (path or URI), or NAME=FOLDER (repeatable)"
    )
    parser.add_argument(
        "--data-dir", required=True, help="folder (path or URI) holding the task files (e.g. ../shared/data)"
    )
    parser.add_argument("--tasks", default=",".join(GLUE), help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--kind", default="bert", choices=["bert", "gpt2"])
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="1e-3 for small models; 2e-5 for bert-base")
    parser.add_argument(
        "--use-gpu",
        default="auto",
        choices=["auto", "true", "false"],
        help="one GPU per fine-tuning task (auto: when the cluster has GPUs)",
    )
    parser.add_argument(
        "--out", default="downstream", help="folder (path or URI) for downstream.jsonl and downstream.md"
    )
    args = parser.parse_args(argv)
    configure()
    models = model_names(args.model)
    try:
        cfg = FinetuneConfig(
            tasks=args.tasks.split(","),
            data_dir=args.data_dir,
            seeds=[int(s) for s in args.seeds.split(",")],
            max_train_examples=args.max_train_examples,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
        )
        connect()
        rows = run_downstream(models, cfg, kind=args.kind, gpus_per_task=gpus_wanted(args.use_gpu))
        table = write_results(rows, U.normalize(args.out))
    except ValueError as e:
        log.debug("downstream evaluation failed", exc_info=True)
        raise SystemExit(f"error: {redact(str(e))}") from None
    except Exception as e:  # a failure inside Ray or a bug: its traceback and last line, redacted
        raise SystemExit(report_failure(e)) from None
    print(table)


if __name__ == "__main__":
    main()
