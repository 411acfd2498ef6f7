"""Ray Train launcher: TorchTrainer workers run training.loop.LMTrainer over a subset schedule.

Checkpoints (model, optimizer, scheduler, step) go through ray.train.report; a restarted worker or
a re-run of the same stage resumes from the latest one (Ray Train V2 resumes a run with the same
name and storage path).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from transformers import PreTrainedTokenizerBase

from dataio.rundir import read_sequences
from training.loop import LMTrainer, TrainConfig, load_state, save_state
from training.model import ModelConfig, Objective, build_model
from training.subsets import SubsetSchedule, draw_function
from training.tokenizer import load_tokenizer

STATE_FILE = "state.pt"


def load_selection(select_dir: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray | None]:
    """(per-partition (ids, probabilities) in partition then rank order, greedi subset ids or None
    where the select stage ran no merge)."""
    probs = pq.read_table(select_dir / "probabilities.parquet").sort_by([("shard", "ascending"), ("rank", "ascending")])
    shard = probs.column("shard").to_numpy()
    ids, p = probs.column("sequence_id").to_numpy(), probs.column("probability").to_numpy()
    bounds = np.flatnonzero(np.diff(shard)) + 1
    partitions = list(zip(np.split(ids, bounds), np.split(p, bounds)))
    greedi_file = select_dir / "subset_greedi.parquet"
    greedi = pq.read_table(greedi_file).column("sequence_id").to_numpy() if greedi_file.exists() else None
    return partitions, greedi


def _truncate_metrics(path: Path, after_step: int) -> None:
    """Drop metric lines beyond the checkpoint we resume from: they will be written again. A torn
    line (the writer died mid-line: disk full, power loss) is dropped too, and so is everything after
    it; the file is replaced atomically, so a crash here leaves the old one."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            step = json.loads(line)["step"]
        except (ValueError, TypeError, KeyError):
            break
        if step > after_step:
            break
        keep.append(line)
    if len(keep) < after_step:  # only if the file was damaged behind a checkpoint: lines are synced before one
        print(f"[ingenious] {path}: steps {len(keep) + 1}..{after_step} were lost before the checkpoint at step "
              f"{after_step}; they are not recomputed (the run resumes from the checkpoint)", flush=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def _sync(path: Path) -> None:
    """Make the metrics lines durable before a checkpoint vouches for their steps."""
    with path.open("a") as f:
        f.flush()
        os.fsync(f.fileno())


def launch_args(
    *, train: TrainConfig, model: ModelConfig, data: Path, out_dir: Path, select_dir: Path | None = None,
    fraction: float = 1.0, init_from: str | None = None,
) -> dict:
    """What train_worker needs, as plain data Ray can ship: `data` holds tokenizer/ and sequences/."""
    return {"train": dataclasses.asdict(train), "model": dataclasses.asdict(model), "tokenizer": str(data / "tokenizer"),
            "sequences": str(data / "sequences"), "select_dir": str(select_dir) if select_dir else None,
            "fraction": fraction, "init_from": init_from, "out_dir": str(out_dir), "model_out": str(out_dir / "model")}


def build_trainer(args: dict, *, rank: int, world: int, device: torch.device,
                  wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m) -> tuple[LMTrainer, PreTrainedTokenizerBase]:
    """Everything a worker trains with, from the launch arguments alone (no Ray: the test's
    in-process reference and the GPU benchmark build the very same trainer)."""
    cfg, model_cfg = TrainConfig(**args["train"]), ModelConfig(**args["model"])
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_worker)
    tok = load_tokenizer(args["tokenizer"], kind=model_cfg.kind)
    pool_ids, sequences = read_sequences(args["sequences"])
    budget = max(1, round(args.get("fraction", 1.0) * len(pool_ids)))
    partitions, greedi = load_selection(Path(args["select_dir"])) if args.get("select_dir") else (None, None)
    draws = draw_function(cfg.subset, pool_ids, budget=budget, seed=cfg.seed, partitions=partitions, fixed_ids=greedi)
    schedule = SubsetSchedule(draws, global_batch=cfg.global_batch_size, redraw_every=cfg.redraw_every, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    if args.get("init_from"):
        model_cfg = dataclasses.replace(model_cfg, init_from=args["init_from"])
    model = wrap(build_model(model_cfg, vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id))
    trainer = LMTrainer(model, sequences, schedule, cfg, objective=Objective.for_model(tok, model_cfg),
                        rank=rank, world=world, device=device)
    return trainer, tok


def _log_step(metrics: dict, metrics_path: Path, *, name: str, steps: int) -> None:
    """One metrics.jsonl line per step and a progress line per 5% of the run."""
    with metrics_path.open("a") as f:
        f.write(json.dumps({**metrics, "time": time.time()}) + "\n")
    if metrics["step"] % max(1, steps // 20) == 0 or metrics["step"] == steps:
        # Not print(): Ray Train patches it to tee into its logger too, so every line came out twice.
        sys.stdout.write(f"[ingenious] {name}: step {metrics['step']}/{steps} loss {metrics['loss']:.3f} "
                         f"lr {metrics['lr']:.2e} {metrics['tokens_per_s']:.0f} tokens/s\n")
        sys.stdout.flush()


def _save_model(model: torch.nn.Module, tok: PreTrainedTokenizerBase, folder: str | Path) -> None:
    getattr(model, "module", model).save_pretrained(folder)
    tok.save_pretrained(folder)


def train_worker(args: dict) -> None:
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    trainer, tok = build_trainer(args, rank=rank, world=ctx.get_world_size(), device=ray.train.torch.get_device(),
                                 wrap=ray.train.torch.prepare_model)
    cfg, model, device = trainer.cfg, trainer.model, trainer.device
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            start = trainer.load_state_dict(load_state(Path(folder) / STATE_FILE, device))
    metrics_path = Path(args["out_dir"]) / "metrics.jsonl"
    if rank == 0:
        _truncate_metrics(metrics_path, start)

    for step in range(start, cfg.steps):
        metrics = trainer.train_step(step)
        if rank == 0:
            _log_step(metrics, metrics_path, name=Path(args["out_dir"]).name, steps=cfg.steps)
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            with tempfile.TemporaryDirectory() as tmp:
                if rank == 0:
                    _sync(metrics_path)
                    save_state(trainer.state_dict(done), Path(tmp) / STATE_FILE)
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp) if rank == 0 else None)
    if rank == 0:
        _save_model(model, tok, args["model_out"])


@ray.remote
def train_in_task(args: dict, *, snapshots: tuple[int, ...] = ()) -> dict:
    """One small run as a single Ray task: the very trainer a one-worker Ray Train run builds, without
    Ray Train's controller, so an experiment's many short arms run side by side, one per CPU. No
    checkpoints: an interrupted arm reruns whole. `snapshots` are steps whose model is also saved
    (out_dir/model-step<N>), for held-out curves. Returns the loop's seconds, final loss and steps."""
    trainer, tok = build_trainer(args, rank=0, world=1, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    out, steps = Path(args["out_dir"]), trainer.cfg.steps
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    start = time.perf_counter()
    for step in range(steps):
        metrics = trainer.train_step(step)
        _log_step(metrics, metrics_path, name=f"{out.parent.name}/{out.name}", steps=steps)
        if metrics["step"] in snapshots and metrics["step"] != steps:
            _save_model(trainer.model, tok, out / f"model-step{metrics['step']}")
    seconds = time.perf_counter() - start
    _save_model(trainer.model, tok, args["model_out"])
    return {"seconds": seconds, "final_loss": metrics["loss"], "steps": steps}


def launch_training(args: dict, *, name: str, storage: Path, num_workers: int, use_gpu: bool, cpus_per_worker: int) -> dict:
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=args,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures=2),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    return dict(result.metrics or {})
