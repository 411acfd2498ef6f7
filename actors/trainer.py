"""Ray Train launcher: TorchTrainer workers run training.loop.LMTrainer over a subset schedule.

Nodes share no disk: workers are handed URIs (local path, s3://, gs://) and read the tokenizer,
`init_from`, the sequences and the selection themselves, each loading only the rows it trains on
(dataio.sequences). Checkpoints (model, optimizer, scheduler, step) go through ray.train.report
into the stage's folder, which Ray Train uploads to; a restarted worker or a re-run of the same
stage resumes from the latest one (Ray Train V2 resumes a run with the same name and storage path).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from transformers import PreTrainedTokenizerBase

from actors.device import granted_device
from dataio import uri as U
from dataio.contracts import PrepareOutputs, TrainOutputs
from dataio.log import get_logger
from dataio.redact import errors_redacted
from dataio.rundir import write_shard_log
from dataio.sequences import ParquetRows
from training.loop import WINDOW_ROWS, LMTrainer, TrainConfig, load_state, save_state
from training.model import ModelConfig, Objective, build_model
from training.reselect import snapshot_uri
from training.selection_io import subset_schedule
from training.tokenizer import load_tokenizer

STATE_FILE = "state.pt"
OPTIMIZER_FILE = "optimizer.pt"  # beside a published model: its AdamW state, for train.init_optimizer

log = get_logger(__name__)


class MetricsLog:
    """A run's metrics.jsonl at a URI. Object stores cannot append, so the lines go to a local file
    and publish() writes the whole file to the URI (atomically). A resumed run starts from the
    published lines up to its checkpoint's step: later ones will be written again."""

    def __init__(self, target: str, *, resume_at: int | None = None):
        self.target = target
        self.local = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives with the log; deleted when collected)
        if resume_at is not None and U.exists(target):
            self.local.write("".join(line + "\n" for line in self._lines_until(resume_at)))

    def _lines_until(self, step: int) -> list[str]:
        """The published lines of steps 1..step. A torn line (the writer died mid-line: disk full,
        power loss) is dropped, and so is everything after it."""
        keep = []
        for line in U.read_text(self.target).splitlines():
            try:
                line_step = json.loads(line)["step"]
            except (ValueError, TypeError, KeyError):
                break
            if line_step > step:
                break
            keep.append(line)
        if len(keep) < step:  # only if the file was damaged behind a checkpoint: lines are published before one
            log.info(
                f"{self.target}: steps {len(keep) + 1}..{step} were lost before the checkpoint at step "
                f"{step}; they are not recomputed (the run resumes from the checkpoint)"
            )
        return keep

    def append(self, metrics: dict) -> None:
        self.local.write(json.dumps({**metrics, "time": time.time()}) + "\n")

    def publish(self) -> None:
        self.local.seek(0)
        U.write_text(self.target, self.local.read())  # reading leaves the position at the end, for append


def _progress(metrics: dict, *, name: str, steps: int) -> None:
    """A progress line per 5% of the run."""
    if metrics["step"] % max(1, steps // 20) == 0 or metrics["step"] == steps:
        # Not print(): Ray Train patches it to tee into its root logger too, so every line came out
        # twice. The `ingenious` logger writes to stdout itself and does not propagate to that root.
        log.info(
            f"{name}: step {metrics['step']}/{steps} loss {metrics['loss']:.3f} "
            f"lr {metrics['lr']:.2e} {metrics['tokens_per_s']:.0f} tokens/s"
        )


def _is_location(name: str) -> bool:
    """A folder (local or URI) rather than a model hub name, as load_tokenizer tells them apart."""
    return U.is_uri(name) or name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def launch_args(
    *,
    train: TrainConfig,
    model: ModelConfig,
    data: str | Path,
    out_dir: str | Path,
    select_dir: str | Path | None = None,
    fraction: float = 1.0,
    init_from: str | None = None,
    save_optimizer: bool = False,
) -> dict:
    """What train_worker needs, as plain data Ray can ship: URIs only (`data` is the prepare stage's
    folder, with tokenizer/ and sequences/; `init_from` a model folder or a hub name). `save_optimizer`:
    the final AdamW state is published beside the model (model/optimizer.pt), as a warm start does."""
    data, out_dir = U.normalize(data), U.normalize(out_dir)
    if init_from and _is_location(init_from):
        init_from = U.normalize(init_from)
    return {
        "train": dataclasses.asdict(train),
        "model": dataclasses.asdict(model),
        "tokenizer": U.join(data, PrepareOutputs.TOKENIZER),
        "sequences": U.join(data, PrepareOutputs.SEQUENCES),
        "select_dir": U.normalize(select_dir) if select_dir else None,
        "fraction": fraction,
        "init_from": init_from,
        "out_dir": out_dir,
        "model_out": U.join(out_dir, TrainOutputs.MODEL),
        "save_optimizer": save_optimizer,
    }


def build_trainer(
    args: dict,
    *,
    rank: int,
    world: int,
    device: torch.device,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
    window_rows: int = WINDOW_ROWS,
) -> tuple[LMTrainer, PreTrainedTokenizerBase]:
    """Everything a worker trains with, from the launch arguments alone (no Ray: the test's
    in-process reference and the benchmarks build the very same trainer). The model is on `device`;
    of the pool the worker keeps the ids and loads the tokens of `window_rows` rows at a time."""
    cfg, model_cfg = TrainConfig(**args["train"]), ModelConfig(**args["model"])
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_worker)
    tok = load_tokenizer(str(U.local_dir(args["tokenizer"])), kind=model_cfg.kind)
    pool = ParquetRows(args["sequences"])
    schedule = subset_schedule(
        cfg,
        pool.ids,
        fraction=args.get("fraction", 1.0),
        select_dir=args.get("select_dir"),
        out_dir=args["out_dir"],
        rank=rank,
    )
    init_from = args.get("init_from") or model_cfg.init_from
    if init_from:  # a folder is fetched to this node (once per process); a hub name is left to transformers
        model_cfg = dataclasses.replace(
            model_cfg, init_from=str(U.local_dir(init_from)) if _is_location(init_from) else init_from
        )
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    model = build_model(model_cfg, vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
    trainer = LMTrainer(
        wrap(model.to(device)),
        pool,
        schedule,
        cfg,
        objective=Objective.for_model(tok, model_cfg),
        rank=rank,
        world=world,
        device=device,
        window_rows=window_rows,
    )
    if cfg.init_optimizer:
        if not init_from or not _is_location(init_from):
            raise ValueError(
                f"train.init_optimizer needs init_from to be a model folder with {OPTIMIZER_FILE}, got {init_from!r}"
            )
        source = U.join(init_from, OPTIMIZER_FILE)
        local = Path(model_cfg.init_from) / OPTIMIZER_FILE  # the folder was fetched whole above
        if not local.exists():
            raise ValueError(
                f"train.init_optimizer: {source} does not exist (a warm start from before optimizer states "
                "were published has none: rerun the warm start)"
            )
        trainer.load_moments(load_state(local, device), source)
    return trainer, tok


def _save_model(
    model: torch.nn.Module, tok: PreTrainedTokenizerBase, target: str, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """save_pretrained (and the optimizer's state, if given) into a local folder, then to `target` (a
    URI), whole."""
    with tempfile.TemporaryDirectory() as tmp:
        getattr(model, "module", model).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if optimizer is not None:
            save_state(optimizer.state_dict(), Path(tmp) / OPTIMIZER_FILE)
        U.upload_dir(tmp, target)


def save_snapshot(trainer: LMTrainer, tok: PreTrainedTokenizerBase, out_dir: str, done: int) -> None:
    """After `done` steps, the model a re-selection waits for (train.reselect), by rank 0 and before the
    checkpoint that vouches for the step; one already whole (a resumed run's) is not written again."""
    plan = trainer.cfg.reselect_plan()
    k = plan.snapshot_due(done) if plan else None
    if k is not None and trainer.rank == 0 and not U.folder_complete(snapshot_uri(out_dir, k)):
        _save_model(trainer.model, tok, snapshot_uri(out_dir, k))


@errors_redacted()  # Ray Train logs a worker's error itself: a URI in it is logged without its credentials
def train_worker(args: dict) -> None:
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    trainer, tok = build_trainer(
        args,
        rank=rank,
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        wrap=ray.train.torch.prepare_model,
    )
    cfg, device = trainer.cfg, trainer.device
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            start = trainer.load_state_dict(load_state(Path(folder) / STATE_FILE, device))
    log = MetricsLog(U.join(args["out_dir"], TrainOutputs.METRICS), resume_at=start) if rank == 0 else None
    if log:
        log.publish()  # the published file never shows steps beyond the checkpoint the run goes on from
        # Each (re)start of the worker group, where and from which step: a restart after a lost worker shows.
        node = ray.get_runtime_context().get_node_id()
        write_shard_log(U.join(args["out_dir"], f"attempt-from-step{start:06d}"), {"start_step": start, "node": node})

    save_snapshot(trainer, tok, args["out_dir"], start)  # a lead of R: draw 1's snapshot is the initial model
    for step in range(start, cfg.steps):
        metrics = trainer.train_step(step)
        if log:
            log.append(metrics)
            _progress(metrics, name=U.name(args["out_dir"]), steps=cfg.steps)
        done = step + 1
        save_snapshot(trainer, tok, args["out_dir"], done)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:  # so the last step always publishes
            with tempfile.TemporaryDirectory() as tmp:
                if log:
                    log.publish()  # before the checkpoint vouches for these steps
                    save_state(trainer.state_dict(done), Path(tmp) / STATE_FILE)
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp) if log else None)
    if rank == 0:
        _save_model(trainer.model, tok, args["model_out"], trainer.optimizer if args.get("save_optimizer") else None)


@ray.remote
def train_in_task(args: dict, *, snapshots: tuple[int, ...] = ()) -> dict:
    """One small run as a single Ray task: the very trainer a one-worker Ray Train run builds, without
    Ray Train's controller, so an experiment's many short arms run side by side, one per CPU. No
    checkpoints: an interrupted arm reruns whole. `snapshots` are steps whose model is also saved
    (out_dir/model-step<N>), for held-out curves. With train.reselect it saves the re-selection's
    snapshots as train_worker does; a Reselector beside the task (jobs/reselect.py) turns them into
    draws. On CUDA only if the task was given a GPU. Returns the loop's seconds, final loss and steps."""
    device = granted_device()
    trainer, tok = build_trainer(args, rank=0, world=1, device=device)
    out, steps = args["out_dir"], trainer.cfg.steps
    log = MetricsLog(U.join(out, TrainOutputs.METRICS))
    U.delete(log.target)  # an interrupted attempt's lines
    start = time.perf_counter()
    save_snapshot(trainer, tok, out, 0)
    for step in range(steps):
        metrics = trainer.train_step(step)
        log.append(metrics)
        _progress(metrics, name=f"{U.name(U.parent(out))}/{U.name(out)}", steps=steps)
        save_snapshot(trainer, tok, out, step + 1)
        if metrics["step"] in snapshots and metrics["step"] != steps:
            log.publish()
            _save_model(trainer.model, tok, U.join(out, f"model-step{metrics['step']}"))
    seconds = time.perf_counter() - start
    log.publish()
    _save_model(trainer.model, tok, args["model_out"], trainer.optimizer if args.get("save_optimizer") else None)
    return {"seconds": seconds, "final_loss": metrics["loss"], "steps": steps}


def launch_training(
    args: dict, *, name: str, storage: str | Path, num_workers: int, use_gpu: bool, cpus_per_worker: int
) -> dict:
    """Run train_worker on `num_workers` Ray Train workers; checkpoints go to `storage` (a URI: Ray
    Train's workers upload to object storage themselves)."""
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=args,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=U.normalize(storage),
            failure_config=FailureConfig(max_failures=2),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    return dict(result.metrics or {})
