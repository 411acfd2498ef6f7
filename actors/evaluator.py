"""Ray task: held-out LM quality of one checkpoint on one set of sequences."""
from __future__ import annotations

import numpy as np
import ray
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from training.evaluate import heldout_loss
from training.tokenizer import load_tokenizer, special_ids


@ray.remote
def evaluate_checkpoint(
    model_dir: str, sequences: list[np.ndarray], *, kind: str, seq_len: int, batch_size: int, seed: int
) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    auto = AutoModelForMaskedLM if kind == "bert" else AutoModelForCausalLM
    model = auto.from_pretrained(model_dir).to(device)
    tok = load_tokenizer(model_dir, kind=kind)
    return heldout_loss(model, sequences, kind=kind, pad_id=tok.pad_token_id, mask_id=tok.mask_token_id,
                        special_ids=special_ids(tok), vocab_size=len(tok), seq_len=seq_len, batch_size=batch_size, seed=seed)
