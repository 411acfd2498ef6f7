"""One worker's side of LM pretraining: optimizer, schedule, and a step function.

Everything a step does is a function of (seed, step, rank): the batch rows (SubsetSchedule), the
MLM masks and dropout. So the state to checkpoint is just model, optimizer, LR scheduler and the
step number, and a resumed run reproduces the uninterrupted one exactly. A worker holds the tokens
of one window of steps at a time (its rows of the next `window_rows`), never the whole pool.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal, get_args

import numpy as np
import torch
import torch.distributed as dist
from transformers import get_linear_schedule_with_warmup

from dataio.sequences import InMemoryRows, RowSource
from training.flops import flops_per_token, peak_flops
from training.model import Objective, adamw_groups
from training.reselect import Plan, ReselectConfig
from training.subsets import SUBSET_MODES, SubsetMode, SubsetSchedule

Schedule = Literal["linear", "constant"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)


@dataclass(kw_only=True)
class TrainConfig:
    steps: int = 1000
    global_batch_size: int = 256  # sequences per optimizer step, whatever the worker count
    grad_accum: int = 1  # micro-batches per worker per step
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    # linear: warm-up, then a linear decay to 0 at the last step. constant: warm-up, the peak rate, then
    # a linear decay to 0 over the last `cooldown_steps`. A warm start run `constant` with no cool-down
    # ends at the peak, so runs continued from it (warmup_steps 0) go on at that rate instead of
    # warming up again from a model that has already converged at a rate of 0.
    schedule: Schedule = "linear"
    cooldown_steps: int = 0
    # Start from the AdamW moments saved beside `init_from`'s model (optimizer.pt, which the warm
    # start writes), not from zero moments whose first steps are each a full-size sign step.
    init_optimizer: bool = False
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    subset: SubsetMode = "ingenious"
    subset_file: str | None = None  # subset `file`: a Parquet file (path or URI) with a sequence_id column
    redraw_every: int | None = None  # R: steps between subset draws (None: one draw)
    checkpoint_every: int = 500
    num_workers: int = 1
    use_gpu: bool | Literal["auto"] = "auto"  # auto: when the cluster has GPUs
    cpus_per_worker: int = 1
    # Draws after the first re-selected from the model being trained, beside it (training/reselect.py).
    reselect: ReselectConfig | None = None

    # Where and how often it runs, not what it computes: a resumed run reproduces the uninterrupted
    # one exactly (tests/test_train_ray.py), so the checkpoint interval changes no result. The worker
    # count does (each rank seeds its own masks and dropout), so it is not here.
    RESOURCES: ClassVar[tuple[str, ...]] = ("checkpoint_every", "use_gpu", "cpus_per_worker")
    # Settings added after run directories existed: in the stage hash only when not at their default.
    ADDED: ClassVar[tuple[str, ...]] = ("reselect",)

    def __post_init__(self) -> None:
        if isinstance(self.reselect, dict):  # as launch arguments carry it (dataclasses.asdict)
            self.reselect = ReselectConfig(**self.reselect)
        if self.subset not in SUBSET_MODES:
            raise ValueError(f"subset must be one of {SUBSET_MODES}, got {self.subset!r}")
        if (self.subset == "file") != (self.subset_file is not None):
            raise ValueError(
                f"subset_file is for subset 'file' and it needs one: got subset {self.subset!r}, "
                f"subset_file {self.subset_file!r}"
            )
        if self.steps < 1 or self.num_workers < 1 or self.grad_accum < 1:
            raise ValueError("steps, num_workers and grad_accum must be >= 1")
        if self.global_batch_size % (self.num_workers * self.grad_accum):
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be divisible by "
                f"num_workers * grad_accum = {self.num_workers * self.grad_accum}"
            )
        if self.redraw_every is not None and self.redraw_every < 1:
            raise ValueError(f"redraw_every must be >= 1 or null, got {self.redraw_every}")
        if self.use_gpu not in (True, False, "auto"):
            raise ValueError(f"use_gpu must be true, false or auto, got {self.use_gpu!r}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        # Written as `not (x > 0)` so NaN fails too; infinities would make every step NaN.
        if not (0.0 < self.learning_rate < math.inf):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if not (0.0 <= self.weight_decay < math.inf) or not (0.0 < self.max_grad_norm < math.inf):
            raise ValueError(
                f"weight_decay must be finite and >= 0 (got {self.weight_decay}), "
                f"max_grad_norm finite and > 0 (got {self.max_grad_norm})"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.cooldown_steps < 0:
            raise ValueError(f"cooldown_steps must be >= 0, got {self.cooldown_steps}")
        if self.schedule == "linear" and self.cooldown_steps:  # linear decays over every step after warm-up
            raise ValueError(f"cooldown_steps ({self.cooldown_steps}) needs schedule: constant; schedule is linear")
        if self.schedule == "constant" and self.warmup_steps + self.cooldown_steps > self.steps:
            raise ValueError(
                f"warmup_steps + cooldown_steps must be <= steps, got {self.warmup_steps} + "
                f"{self.cooldown_steps} > {self.steps}"
            )
        if self.seed < 0:  # NumPy seeds are unsigned: a negative one fails deep inside a worker
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.cpus_per_worker < 1:
            raise ValueError(f"cpus_per_worker must be >= 1, got {self.cpus_per_worker}")
        if self.reselect is not None:
            Plan.of(self.reselect, redraw_every=self.redraw_every, steps=self.steps)  # every and lead fit

    def reselect_plan(self) -> Plan | None:
        return Plan.of(self.reselect, redraw_every=self.redraw_every, steps=self.steps) if self.reselect else None


def save_state(state: dict, path: Path) -> None:
    torch.save(state, path)


def load_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint written by save_state: tensors, numbers, strings and containers only. Loading a
    full pickle would run whatever code the file names, and whoever can write the checkpoint
    bucket is not thereby allowed to run code in the job."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"checkpoint {path} holds more than weights and training state; refused to load it "
            f"({str(e).splitlines()[0]})"
        ) from e


def constant_factor(step: int, *, warmup: int, cooldown: int, steps: int) -> float:
    """The `constant` schedule's LR multiplier at `step`: the warm-up of transformers' linear schedule
    (step / warmup), then 1, then (steps - step) / cooldown over the last `cooldown` steps, so the
    rate after the last step is 0 as in the linear schedule."""
    if step < warmup:
        return step / warmup
    return min(1.0, (steps - step) / cooldown) if cooldown else 1.0


def lr_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    if cfg.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    factor = partial(constant_factor, warmup=cfg.warmup_steps, cooldown=cfg.cooldown_steps, steps=cfg.steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


CPU = torch.device("cpu")
WINDOW_ROWS = 1 << 18  # rows a worker loads at once: 134 MB of 128-token sequences


class LMTrainer:
    def __init__(
        self,
        model: torch.nn.Module,
        sequences: RowSource | Sequence[np.ndarray],
        schedule: SubsetSchedule,
        cfg: TrainConfig,
        *,
        objective: Objective,
        rank: int = 0,
        world: int = 1,
        device: torch.device = CPU,
        window_rows: int = WINDOW_ROWS,
    ):
        if window_rows < 1:
            raise ValueError(f"LMTrainer: window_rows must be >= 1, got {window_rows}")
        self.sequences = sequences if isinstance(sequences, RowSource) else InMemoryRows(sequences)
        self.model, self.schedule, self.cfg = model, schedule, cfg
        self.objective, self.rank, self.world, self.device = objective, rank, world, device
        # Steps per window: as many as fill window_rows with this worker's share of each global batch.
        self.window_steps = max(1, window_rows // -(-schedule.global_batch // world))
        self._window, self._window_draw = range(0), 0  # the steps whose rows are loaded, and their draw
        self.optimizer = torch.optim.AdamW(
            adamw_groups(model, cfg.weight_decay), lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-6
        )
        self.scheduler = lr_scheduler(self.optimizer, cfg)
        # bf16 autocast on a GPU; fp16 with a loss scale on a card without bf16 (V100, T4); fp32 on the CPU.
        self.amp_dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
        self.autocast = device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast and self.amp_dtype == torch.float16)
        peak = peak_flops(device)
        # MFU = achieved FLOP/s over the peak of all workers' devices; None off GPU.
        self.mfu_per_token_s = flops_per_token(model, seq_len=objective.seq_len) / (peak * world) if peak else None

    def state_dict(self, step: int) -> dict:
        model = getattr(self.model, "module", self.model)
        return {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": step,
        }

    def load_state_dict(self, state: dict) -> int:
        getattr(self.model, "module", self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # a checkpoint from before the fp16 path has none; bf16 and fp32 keep none
            self.scaler.load_state_dict(state["scaler"])
        return int(state["step"])

    def load_moments(self, state: dict, source: str) -> None:
        """AdamW's moments and step counts from another run's optimizer state (`source` names its file);
        this run's own hyperparameters (its learning rate and schedule, weight decay) are kept."""
        settings = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(state)
        except (ValueError, KeyError) as e:
            raise ValueError(f"{source} does not fit this model's parameter groups: {e}") from e
        for group, own in zip(self.optimizer.param_groups, settings):
            group.update(own)
            for p in group["params"]:
                moment = self.optimizer.state.get(p, {}).get("exp_avg")
                if moment is not None and moment.shape != p.shape:
                    raise ValueError(
                        f"{source} does not fit this model's parameter groups: a moment of shape "
                        f"{tuple(moment.shape)} for a parameter of shape {tuple(p.shape)}"
                    )

    def step_sequences(self, step: int) -> list[list[np.ndarray]]:
        """This worker's micro-batches of `step`, as token arrays; the window's rows are loaded when
        the step is the first of a window (or of a resumed run)."""
        draw = self.schedule.draw_index(step)
        if step not in self._window or draw != self._window_draw:  # a re-selected draw may start mid-window
            self._window, self._window_draw = self.schedule.window(step, self.window_steps), draw
            steps = range(self._window.start, min(self._window.stop, self.cfg.steps))
            self.sequences.prefetch(
                np.concatenate([self.schedule.worker_rows(s, self.rank, self.world) for s in steps])
            )
        rows = self.schedule.worker_rows(step, self.rank, self.world)
        return [[self.sequences.get(r) for r in micro] for micro in np.array_split(rows, self.cfg.grad_accum)]

    def _sync_gradients(self, last: bool) -> AbstractContextManager:
        """DDP all-reduces the gradients on the last micro-batch of a step only (`no_sync` on the others)."""
        return nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()

    def train_step(self, step: int) -> dict[str, float]:
        start = time.perf_counter()
        self.model.train()
        torch.manual_seed(step_seed(self.cfg.seed, step, self.rank))  # dropout
        mask_rng = torch.Generator().manual_seed(step_seed(self.cfg.seed, step, self.rank, 1))
        self.schedule.before_step(step)  # may wait for a re-selected draw
        micro_batches = self.step_sequences(step)
        self.optimizer.zero_grad(set_to_none=True)
        # Summed on the device in float64 (what float() per micro-batch summed on the host): no sync per micro-batch.
        total_loss, tokens = torch.zeros((), dtype=torch.float64, device=self.device), 0
        for i, micro in enumerate(micro_batches):
            batch = self.objective.batch(micro, mask_rng)
            tokens += int(batch["attention_mask"].sum())  # on the host: the batch is not on the device yet
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self._sync_gradients(i == len(micro_batches) - 1):
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.autocast):
                    loss = self.model(**batch).loss / self.cfg.grad_accum
                self.scaler.scale(loss).backward()
            total_loss += loss.detach()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients (no-op without fp16)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(self.optimizer)  # skips a step whose fp16 gradients overflowed
        self.scaler.update()
        self.scheduler.step()
        stats = torch.stack([total_loss, torch.tensor(float(tokens), dtype=torch.float64, device=self.device)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
            stats[0] /= self.world
        stats = stats.cpu()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        tokens_per_s = float(stats[1]) / (time.perf_counter() - start)
        metrics = {
            "step": step + 1,
            "loss": float(stats[0]),
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens": int(stats[1]),
            "tokens_per_s": tokens_per_s,
            "draw": self.schedule.draw_index(step),
        }
        if self.mfu_per_token_s:
            metrics["mfu"] = tokens_per_s * self.mfu_per_token_s
        return metrics
