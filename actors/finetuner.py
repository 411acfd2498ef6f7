"""Ray task: fine-tune one checkpoint on one downstream task with one seed."""
from __future__ import annotations

import ray
import torch

from dataio.tasks import load_task
from training.finetune import FinetuneConfig, finetune


@ray.remote
def finetune_task(model_dir: str, task: str, cfg: FinetuneConfig, *, seed: int, kind: str) -> dict:
    torch.set_num_threads(cfg.cpus_per_task)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return finetune(model_dir, load_task(task, cfg.data_dir), cfg, seed=seed, kind=kind, device=device)
