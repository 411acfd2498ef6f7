"""Downstream scores of pretrained checkpoints: each fine-tuned on each task with several seeds.

    python -m jobs.downstream --model runs/default/train/model [--model NAME=DIR ...] \
        --data-dir ../shared/data [--tasks sst2,cola,mrpc,stsb,rte] [--seeds 0,1,2] [--kind bert] [--out DIR]

Every (checkpoint, task, seed) is one Ray task; the table gives each task's headline score (GLUE's
convention: accuracy, Matthews correlation for CoLA, mean of F1 and accuracy for MRPC, mean of
Pearson and Spearman for STS-B) as mean +- standard deviation over seeds, and their average.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import ray

from actors.finetuner import finetune_task
from dataio.tasks import GLUE, TASKS, load_task
from jobs.monitor import gather
from training.finetune import FinetuneConfig


def submit_downstream(models: dict[str, str], cfg: FinetuneConfig, *, kind: str,
                      gpus_per_task: float = 0.0) -> tuple[list[str], list[ray.ObjectRef]]:
    """Launch one Ray task per (model, task, seed); returns each task's model name and its ref."""
    for task in cfg.tasks:
        load_task(task, cfg.data_dir)  # fail here, naming the missing file, before any task is launched
    remote = finetune_task.options(num_cpus=cfg.cpus_per_task, num_gpus=gpus_per_task)
    keys = [(name, task, seed) for name in models for task in cfg.tasks for seed in cfg.seeds]
    return [name for name, _, _ in keys], [remote.remote(models[name], task, cfg, seed=seed, kind=kind) for name, task, seed in keys]


def run_downstream(models: dict[str, str], cfg: FinetuneConfig, *, kind: str, gpus_per_task: float = 0.0) -> list[dict]:
    """One row per (model, task, seed) with every metric of the task and its `score`."""
    names, refs = submit_downstream(models, cfg, kind=kind, gpus_per_task=gpus_per_task)
    rows = gather(refs, "downstream fine-tuning", "runs")
    return [{"model": name, **row} for name, row in zip(names, rows)]


def score_table(rows: list[dict]) -> str:
    """Markdown: one line per model, mean +- std over seeds per task, and the average over tasks."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = ["| model | " + " | ".join(tasks) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    for model in models:
        per_task = {t: [100 * r["score"] for r in rows if r["model"] == model and r["task"] == t] for t in tasks}
        seeds = min(len(v) for v in per_task.values())
        averages = [np.mean([per_task[t][s] for t in tasks]) for s in range(seeds)]  # the average per seed
        cells = [f"{np.mean(v):.1f} ± {np.std(v):.1f}" for v in per_task.values()]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {np.mean(averages):.1f} ± {np.std(averages):.1f} |")
    return "\n".join(lines)


def write_results(rows: list[dict], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "downstream.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = score_table(rows)
    (out / "downstream.md").write_text(table + "\n")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.downstream", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a checkpoint folder, or NAME=FOLDER (repeatable)")
    parser.add_argument("--data-dir", required=True, help="folder holding the task files (e.g. ../shared/data)")
    parser.add_argument("--tasks", default=",".join(GLUE), help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--kind", default="bert", choices=["bert", "gpt2"])
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="1e-3 for small models; 2e-5 for bert-base")
    parser.add_argument("--out", default="downstream", help="folder for downstream.jsonl and downstream.md")
    args = parser.parse_args(argv)
    models = dict(m.split("=", 1) if "=" in m else (Path(m).parent.name or m, m) for m in args.model)
    try:
        cfg = FinetuneConfig(tasks=args.tasks.split(","), data_dir=args.data_dir, seeds=[int(s) for s in args.seeds.split(",")],
                             max_train_examples=args.max_train_examples, epochs=args.epochs, learning_rate=args.learning_rate)
        ray.init()
        table = write_results(run_downstream(models, cfg, kind=args.kind), Path(args.out))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(table)


if __name__ == "__main__":
    main()
