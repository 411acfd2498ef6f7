"""Ray task: held-out LM quality of one checkpoint on one set of sequences."""

from __future__ import annotations

import numpy as np
import ray
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from actors.device import granted_cpus, granted_device
from dataio.uri import local_dir
from training.evaluate import heldout_loss
from training.model import ModelConfig, Objective
from training.tokenizer import load_tokenizer


@ray.remote
def evaluate_checkpoint(
    model_uri: str, sequences: list[np.ndarray], *, model_cfg: ModelConfig, batch_size: int, seed: int
) -> dict:
    """Submit with `.options(num_gpus=1)` to run on a GPU; without a reserved GPU it runs on the CPU
    even where one is visible. The model folder is read by URI on whichever node runs this."""
    device = granted_device()
    if device.type == "cpu":
        torch.set_num_threads(granted_cpus())
    model_dir = str(local_dir(model_uri))
    auto = AutoModelForMaskedLM if model_cfg.kind == "bert" else AutoModelForCausalLM
    model = auto.from_pretrained(model_dir).to(device)
    tok = load_tokenizer(model_dir, kind=model_cfg.kind)
    objective = Objective.for_model(tok, model_cfg, training=False)
    return {
        **heldout_loss(model, sequences, objective=objective, batch_size=batch_size, seed=seed),
        "device": device.type,
    }
