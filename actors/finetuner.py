"""Ray task: fine-tune one checkpoint on one downstream task with one seed."""

from __future__ import annotations

import ray
import torch

from actors.device import granted_device
from dataio.tasks import load_task
from training.finetune import FinetuneConfig, finetune


@ray.remote
def finetune_task(model_uri: str, task: str, cfg: FinetuneConfig, *, seed: int, kind: str) -> dict:
    """Submit with `.options(num_gpus=1)` to run on a GPU; without a reserved GPU it runs on the CPU.
    The model and the task files (cfg.data_dir) are read by URI on whichever node runs this."""
    device = granted_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_task)
    return finetune(model_uri, load_task(task, cfg.data_dir), cfg, seed=seed, kind=kind, device=device)
