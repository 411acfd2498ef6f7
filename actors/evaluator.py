"""Ray task: held-out LM quality of one checkpoint on one set of sequences."""
from __future__ import annotations

import numpy as np
import ray
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from training.evaluate import heldout_loss
from training.model import ModelConfig, Objective
from training.tokenizer import load_tokenizer


@ray.remote
def evaluate_checkpoint(
    model_dir: str, sequences: list[np.ndarray], *, model_cfg: ModelConfig, batch_size: int, seed: int
) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    auto = AutoModelForMaskedLM if model_cfg.kind == "bert" else AutoModelForCausalLM
    model = auto.from_pretrained(model_dir).to(device)
    tok = load_tokenizer(model_dir, kind=model_cfg.kind)
    objective = Objective.for_model(tok, model_cfg, training=False)
    return heldout_loss(model, sequences, objective=objective, batch_size=batch_size, seed=seed)
