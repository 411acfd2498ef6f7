"""Sequence embeddings from a checkpoint or any local encoder.

BERT-style encoders: mean of hidden_states[layer] over the attention mask (the paper: layer 9 of
BERT-base). GPT-2: hidden_states[layer] at the last non-pad token. hidden_states[0] is the
embedding layer output, so hidden_states[i] is the output of block i; layer -1 is the last.
The encoder is a folder (a local path, or a URI on object storage fetched once per process) or a
hub name; the caller picks the device (training/device.py), never this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, PreTrainedModel

from dataio.uri import is_uri, local_dir


def local_model(location: str) -> str:
    """A local folder for a model or tokenizer folder given by path or URI (an error naming the node
    if it is not there); a hub name (relative, no scheme) as it is."""
    return str(local_dir(location)) if is_uri(location) or Path(location).is_absolute() else location


def load_encoder(location: str, device: torch.device) -> PreTrainedModel:
    model = AutoModel.from_pretrained(local_model(location))  # drops the LM head: only hidden states are needed
    return model.to(device).eval()


@torch.inference_mode()
def embed_batch(
    model: PreTrainedModel, input_ids: np.ndarray, attention_mask: np.ndarray, *, pooling: str, layer: int
) -> np.ndarray:
    n_layers = int(model.config.num_hidden_layers)
    if not -n_layers - 1 <= layer <= n_layers:
        raise ValueError(f"embedding layer {layer} out of range for a model with {n_layers} layers")
    device = next(model.parameters()).device
    ids = torch.as_tensor(input_ids, device=device)
    mask = torch.as_tensor(attention_mask, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
    hidden = hidden.float()
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    elif pooling == "last":
        last = mask.sum(1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=device), last]
    else:
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    return pooled.cpu().numpy().astype(np.float32)
